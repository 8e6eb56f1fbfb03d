"""Generator blocks: where ``python -m generator`` runs for a request.

Every generator streams the program's output into the run log as it comes, kills it
at its deadline, and turns a non-zero exit into ``GeneratorFailed`` carrying the last
output lines. Each knows the artifact store that reads what it leaves behind.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks import sandbox
from blocks.artifact_stores import ArtifactStore, VolumeArtifactStore
from blocks.egress import EgressGateway
from core.egress import EgressPolicy, GatewayConfig, ModelKeyHeader
from core.errors import GeneratorFailed
from core.models import ArtifactRef, GenerationReceipt, GenerationSpec, GeneratorRun, RunLogger
from core.options import DEFAULT_GENERATOR_TIMEOUT, EgressOptions, ProcessOptions
from core.processes import die_with_parent

LOG_TAIL_LINES = 20
# What an unconfined generator process may see of the orchestrator's environment
# besides its own variables: never a Git token, a database URL or cloud keys.
PROCESS_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
# The environment a sandboxed generator starts from (its HOME is the sandbox's /tmp).
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
GENERATION_PREFIX = "g-"
# How long a stopped generator has to stop what its agent started before SIGKILL.
STOP_GRACE_SECONDS = 5.0
# After the generator exits, how long its last output lines may take to arrive.
OUTPUT_DRAIN_SECONDS = 5.0
# Model keys, by the header the gateway sends them in. Never handed to a generator.
MODEL_KEYS: dict[str, ModelKeyHeader] = {
    "ANTHROPIC_API_KEY": "x-api-key",
    "CLAUDE_CODE_OAUTH_TOKEN": "authorization",
}
# Where a generator finds the egress gateway's sockets (sandbox and container).
GATEWAY_DIR = "/run/appgen-gateway"


def generator_environment(
    spec: GenerationSpec, app_dir: str, timeout: float, history_bytes: int | None = None
) -> dict[str, str]:
    """The variables ``python -m generator`` reads, wherever it runs. The timeout
    gives the generator a deadline of its own, kept even if no one is watching. A
    revision's earlier prompts are handed in full, or (``history_bytes``) the latest
    ones that fit."""
    env = {
        "APPGEN_REQUEST_ID": str(spec.request_id),
        "APPGEN_PROMPT": spec.prompt,
        "APPGEN_APP_DIR": app_dir,
        "APPGEN_AGENT": spec.agent,
        "APPGEN_TIMEOUT_SECONDS": f"{timeout:g}",
        "PYTHONUNBUFFERED": "1",
    }
    if spec.agent_command:
        env["APPGEN_AGENT_COMMAND"] = spec.agent_command
    if spec.base_commit:
        env["APPGEN_REVISION"] = str(spec.revision)
        env["APPGEN_BASE_COMMIT"] = spec.base_commit
        env["APPGEN_EARLIER_PROMPTS"] = _latest_prompts(spec.earlier_prompts, history_bytes)
    return env


def _latest_prompts(prompts: tuple[str, ...], limit: int | None) -> str:
    """The prompts as a JSON list, oldest first, without the oldest ones that do not
    fit in ``limit`` bytes."""
    kept = list(prompts)
    while limit is not None and kept and len(json.dumps(kept).encode()) > limit:
        kept.pop(0)
    return json.dumps(kept)


def allowed_environment(names: Iterable[str]) -> dict[str, str]:
    """The orchestrator's values of ``names``, for those that are set."""
    return {name: os.environ[name] for name in names if name in os.environ}


class OutputFollower:
    """Logs a running generator's output line by line, keeps the last lines for the
    error message, and calls ``kill`` if the deadline passes first."""

    def __init__(self, logger: RunLogger, timeout: float, kill: Callable[[], None]):
        self._logger = logger
        self._tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._timeout = timeout
        self._timer = threading.Timer(timeout, self._expire, args=(kill,))
        self._timer.daemon = True
        self.timed_out = False
        self.started = time.monotonic()

    def _expire(self, kill: Callable[[], None]) -> None:
        self.timed_out = True
        kill()

    def __enter__(self) -> OutputFollower:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def follow(self, lines: Iterable[str]) -> None:
        for line in lines:
            line = line.rstrip("\n")
            self._tail.append(line)
            self._logger.info(line)

    def follow_until_exit(self, process: subprocess.Popen[str]) -> None:
        """Log ``process``'s output until it exits. Its exit ends the wait, not the
        end of its output: a leftover process may hold the pipe open for ever."""
        reader = threading.Thread(
            target=self.follow, args=(process.stdout,), name="generator-output", daemon=True
        )
        reader.start()
        process.wait()
        reader.join(timeout=OUTPUT_DRAIN_SECONDS)

    @property
    def tail(self) -> list[str]:
        return list(self._tail)

    def result(
        self,
        spec: GenerationSpec,
        exit_code: int,
        artifact: ArtifactRef,
        confinement: str,
        receipt: GenerationReceipt | None = None,
        image: str | None = None,
    ) -> GeneratorRun:
        """The generation, or GeneratorFailed for a spent budget, a timeout or a
        non-zero exit."""
        duration = round(time.monotonic() - self.started, 3)
        if receipt is not None:
            receipt = receipt.model_copy(
                update={"confinement": confinement, "image": image, "duration_seconds": duration}
            )
            self._logger.info("receipt: %s", describe_receipt(receipt))
            if receipt.budget_exhausted:
                self._fail(
                    spec,
                    f"stopped: budget exhausted: {receipt.budget_exhausted}; spent "
                    f"{receipt.usage.tokens} tokens in {receipt.usage.requests} model calls "
                    f"(${receipt.cost_usd:.4f})",
                )
        if self.timed_out:
            self._fail(spec, f"timed out after {self._timeout:g}s and was killed")
        if exit_code != 0:
            self._fail(spec, f"exited with code {exit_code}")
        return GeneratorRun(
            request_id=spec.request_id,
            artifact=artifact,
            duration_seconds=duration,
            log_tail=self.tail,
            confinement=confinement,
            receipt=receipt,
        )

    def _fail(self, spec: GenerationSpec, what: str) -> None:
        shown = "\n".join(f"  | {line}" for line in self.tail) or "  (no output)"
        raise GeneratorFailed(
            f"generator for request {spec.request_id} {what}; last output lines:\n{shown}"
        )


def describe_receipt(receipt: GenerationReceipt) -> str:
    """One line: what a generation contacted, was refused and spent."""

    def counts(targets: dict[str, int]) -> str:
        return ", ".join(f"{target} ({n})" for target, n in sorted(targets.items())) or "none"

    usage = receipt.usage
    return (
        f"egress {receipt.egress!r}; contacted: {counts(receipt.contacted)}; refused: "
        f"{counts(receipt.refused)}; model: {usage.requests} calls, {usage.input_tokens} "
        f"input and {usage.output_tokens} output tokens, ${receipt.cost_usd:.4f}"
    )


class GeneratorBlock(Block, EgressOptions, abc.ABC):
    """A place to run the generator. ``run`` returns where the app was left."""

    timeout_seconds: float = Field(
        default=DEFAULT_GENERATOR_TIMEOUT,
        gt=0,
        description="Stop the generator after this many seconds; it also gets this "
        "deadline itself, kept even if the orchestrator dies.",
    )
    env_allowlist: list[str] = Field(
        default_factory=list,
        description="Names of orchestrator environment variables passed to the generator "
        "(settings an agent reads). Nothing else of its environment is passed, and never "
        "a model key: the egress gateway attaches that.",
    )
    model_api_key: SecretStr | None = Field(
        default=None,
        description="The key the egress gateway attaches to the agent's model calls; "
        "default: the orchestrator's ANTHROPIC_API_KEY (or CLAUDE_CODE_OAUTH_TOKEN).",
    )

    def handed_environment(self, logger: RunLogger) -> dict[str, str]:
        """The orchestrator's values of ``env_allowlist``, without any model key."""
        if withheld := [name for name in self.env_allowlist if name in MODEL_KEYS]:
            logger.info(
                "not handing %s to the generator: the egress gateway attaches the model key",
                ", ".join(withheld),
            )
        return allowed_environment(n for n in self.env_allowlist if n not in MODEL_KEYS)

    def egress_gateway(
        self, spec: GenerationSpec, logger: RunLogger
    ) -> AbstractContextManager[EgressGateway | None]:
        """The generation's gateway; none for the built-in template, which is offline."""
        if spec.agent == "template":
            return contextlib.nullcontext()
        key, header = self._model_key()
        policy = EgressPolicy.from_setting(self.agent_egress, self.agent_egress_methods)
        config = GatewayConfig(
            socket_dir="",
            events_file="",
            policy=policy,
            model_api_url=self.model_api_url,
            key_header=header,
            max_tokens=self.agent_max_tokens,
            max_cost_usd=self.agent_max_cost_usd,
            prices=self.model_prices,
        )
        return EgressGateway(config, key, logger)

    def _model_key(self) -> tuple[SecretStr | None, ModelKeyHeader]:
        if self.model_api_key is not None:
            return self.model_api_key, "x-api-key"
        for name, header in MODEL_KEYS.items():
            if value := os.environ.get(name):
                return SecretStr(value), header
        return None, "x-api-key"

    @abc.abstractmethod
    def run(
        self, spec: GenerationSpec, logger: RunLogger, base: Path | None = None
    ) -> GeneratorRun:
        """Run the generator to completion or raise ``GeneratorFailed``. A revision's
        agent starts from ``base``, a checkout of ``spec.base_commit``."""

    @abc.abstractmethod
    def artifact_store(self) -> ArtifactStore:
        """The store that reads what this generator leaves behind."""

    @abc.abstractmethod
    def output_location(self) -> str:
        """Where this generator leaves its output: part of a generation's cache key,
        so a cached generation is never looked for where it was not written."""


@contextlib.contextmanager
def generation_directory(
    workspace: Path, request_id: int, base: Path | None = None
) -> Iterator[Path]:
    """A new directory for one generation, ``{workspace}/{request_id}/{generation}``:
    a generator orphaned by an earlier, killed run can never write into what this
    one publishes. Its ``app`` starts as a copy of ``base`` (links copied as links)
    when there is one. On failure it is removed (nothing will publish it, and a full
    disk gets its space back); on success the request's earlier generations are."""
    request_dir = workspace / str(request_id)
    generation = request_dir / f"{GENERATION_PREFIX}{uuid.uuid4().hex[:12]}"
    make_directory(generation)
    try:
        if base is None:
            make_directory(generation / "app")
        else:
            _copy_base(base, generation / "app")
        yield generation
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    for earlier in request_dir.iterdir():
        if earlier != generation and earlier.name.startswith(GENERATION_PREFIX):
            shutil.rmtree(earlier, ignore_errors=True)


class ProcessGenerator(GeneratorBlock, ProcessOptions):
    """Runs the generator as a child process of the orchestrator, writing into the
    shared workspace (``{workspace}/{request_id}/{generation}/app``). The embedded
    default: no container engine or cloud account needed.

    The agent runs in a bubblewrap sandbox (``blocks/sandbox.py``) that shows it only
    its app directory. Where the sandbox cannot start, only the built-in ``template``
    agent runs; ``trust_agent`` runs any agent unconfined, and is the only way to.

    Example:
        ```python
        from blocks.generators import ProcessGenerator

        generator = ProcessGenerator.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Appgen Process Generator"
    _block_type_slug = "appgen-process-generator"
    _description = "Runs the app generator as a local child process on a shared workspace."

    workspace: Path = Field(
        description="Directory the generator writes into, as {workspace}/{request_id}/...",
        examples=["/home/me/.appgen/workspace"],
    )
    python_executable: str = Field(
        default_factory=lambda: sys.executable,
        description="Python interpreter that runs `python -m generator` (unconfined runs).",
    )

    def artifact_store(self) -> ArtifactStore:
        return VolumeArtifactStore(workspace=self.workspace)

    def output_location(self) -> str:
        return str(self.workspace)

    def run(
        self, spec: GenerationSpec, logger: RunLogger, base: Path | None = None
    ) -> GeneratorRun:
        with generation_directory(self.workspace, spec.request_id, base) as generation:
            with self.egress_gateway(spec, logger) as gateway:
                launch = self._launch(spec, generation, logger, gateway)
                process, output = self._follow(launch, logger)
            artifact = ArtifactRef(kind="volume", location=str(generation / "app"))
            receipt = gateway.receipt if gateway is not None else None
            return output.result(spec, process.returncode, artifact, launch.confinement, receipt)

    def _follow(
        self, launch: sandbox.SandboxLaunch | _UnconfinedLaunch, logger: RunLogger
    ) -> tuple[subprocess.Popen[str], OutputFollower]:
        """Start the launch and log its output until it exits (or is stopped)."""
        try:
            process = subprocess.Popen(
                launch.command,
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group, stopped as a whole
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise GeneratorFailed(
                f"could not start the generator ({launch.command[0]}): {exc}"
            ) from exc
        stop = functools.partial(_stop, process)
        with process, OutputFollower(logger, self.timeout_seconds, stop) as output:
            try:
                output.follow_until_exit(process)
            finally:
                if process.poll() is None:  # cancelled, or crashed
                    stop()
        return process, output

    def _launch(
        self,
        spec: GenerationSpec,
        generation: Path,
        logger: RunLogger,
        gateway: EgressGateway | None,
    ) -> sandbox.SandboxLaunch | _UnconfinedLaunch:
        """``python -m generator``: in the sandbox, unless the agent is trusted (or is
        the built-in template agent and the sandbox cannot start)."""
        app_dir = generation / "app"
        if self.trust_agent:
            logger.warning(
                "running the %r agent UNCONFINED (APPGEN_TRUST_AGENT=true): it can read and "
                "write whatever this user can",
                spec.agent,
            )
            return self._unconfined(
                spec, app_dir, "UNCONFINED (APPGEN_TRUST_AGENT=true)", gateway, logger
            )
        unavailable = sandbox.unavailable_reason()
        if unavailable is None:
            env = dict(SANDBOX_ENV)
            env |= self.handed_environment(logger)
            env |= generator_environment(spec, sandbox.APP_DIR, self.timeout_seconds)
            env["PYTHONPATH"] = sandbox.GENERATOR_ROOT
            if gateway is not None:
                env["APPGEN_GATEWAY_DIR"] = GATEWAY_DIR
            return sandbox.SandboxLaunch(
                [sandbox.sandbox_python(), "-m", "generator", "--fresh"],
                app_dir=app_dir,
                generator_package=_generator_package(),
                env=env,
                gateway=(gateway.socket_dir, GATEWAY_DIR) if gateway is not None else None,
            )
        if spec.agent == "template":  # appgen's own offline scaffold, not model-written
            return self._unconfined(
                spec, app_dir, f"unconfined (built-in template; {unavailable})", gateway, logger
            )
        raise GeneratorFailed(
            f"the {spec.agent!r} agent runs model-written commands and the sandbox cannot "
            f"start: {unavailable}. Install bubblewrap (Debian: apt-get install "
            "bubblewrap), use APPGEN_GENERATOR=docker, or set APPGEN_TRUST_AGENT=true to "
            "run it unconfined"
        )

    def _unconfined(
        self,
        spec: GenerationSpec,
        app_dir: Path,
        confinement: str,
        gateway: EgressGateway | None,
        logger: RunLogger,
    ) -> _UnconfinedLaunch:
        env = allowed_environment(PROCESS_ENV_ALLOWLIST) | self.handed_environment(logger)
        env |= generator_environment(spec, str(app_dir), self.timeout_seconds)
        env["PYTHONPATH"] = str(_generator_package().parent)
        if gateway is not None:
            env["APPGEN_GATEWAY_DIR"] = str(gateway.socket_dir)
        command = [self.python_executable, "-m", "generator", "--fresh"]
        return _UnconfinedLaunch(command, env, confinement, cwd=app_dir)


class _UnconfinedLaunch:
    """The generator started as a plain child process (a trusted agent)."""

    def __init__(
        self, command: list[str], env: dict[str, str], confinement: str, *, cwd: Path
    ) -> None:
        self.command = command
        self.env = env
        self.confinement = confinement
        self.cwd = cwd


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the generator kills what the agent started; a sandbox dies whole),
    then SIGKILL for the whole group if it has not gone after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _copy_base(base: Path, app: Path) -> None:
    try:
        shutil.copytree(base, app, symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise GeneratorFailed(f"cannot copy the revision's base into {app}: {exc}") from exc


def make_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeneratorFailed(f"cannot create the workspace directory {path}: {exc}") from exc


def _generator_package() -> Path:
    spec = importlib.util.find_spec("generator")
    if spec is None or spec.origin is None:
        raise GeneratorFailed("the 'generator' package is not importable; reinstall appgen")
    return Path(spec.origin).parent
