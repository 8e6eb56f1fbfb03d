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
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from blocks import sandbox
from blocks.artifact_stores import ArtifactStore, VolumeArtifactStore
from core.errors import GeneratorFailed
from core.models import ArtifactRef, GenerationSpec, GeneratorRun, RunLogger
from core.options import DEFAULT_GENERATOR_TIMEOUT, ProcessOptions
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


def generator_environment(spec: GenerationSpec, app_dir: str, timeout: float) -> dict[str, str]:
    """The variables ``python -m generator`` reads, wherever it runs. The timeout
    gives the generator a deadline of its own, kept even if no one is watching."""
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
    return env


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
        self, spec: GenerationSpec, exit_code: int, artifact: ArtifactRef, confinement: str
    ) -> GeneratorRun:
        """The generation, or GeneratorFailed for a timeout or a non-zero exit."""
        if self.timed_out:
            self._fail(spec, f"timed out after {self._timeout:g}s and was killed")
        if exit_code != 0:
            self._fail(spec, f"exited with code {exit_code}")
        return GeneratorRun(
            request_id=spec.request_id,
            artifact=artifact,
            duration_seconds=round(time.monotonic() - self.started, 3),
            log_tail=self.tail,
            confinement=confinement,
        )

    def _fail(self, spec: GenerationSpec, what: str) -> None:
        shown = "\n".join(f"  | {line}" for line in self.tail) or "  (no output)"
        raise GeneratorFailed(
            f"generator for request {spec.request_id} {what}; last output lines:\n{shown}"
        )


class GeneratorBlock(Block, abc.ABC):
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
        "(for example an agent's API key). Nothing else of its environment is passed.",
    )

    @abc.abstractmethod
    def run(self, spec: GenerationSpec, logger: RunLogger) -> GeneratorRun:
        """Run the generator to completion or raise ``GeneratorFailed``."""

    @abc.abstractmethod
    def artifact_store(self) -> ArtifactStore:
        """The store that reads what this generator leaves behind."""

    @abc.abstractmethod
    def output_location(self) -> str:
        """Where this generator leaves its output: part of a generation's cache key,
        so a cached generation is never looked for where it was not written."""


@contextlib.contextmanager
def generation_directory(workspace: Path, request_id: int) -> Iterator[Path]:
    """A new directory for one generation, ``{workspace}/{request_id}/{generation}``:
    a generator orphaned by an earlier, killed run can never write into what this
    one publishes. On failure it is removed (nothing will publish it, and a full disk
    gets its space back); on success the request's earlier generations are."""
    request_dir = workspace / str(request_id)
    generation = request_dir / f"{GENERATION_PREFIX}{uuid.uuid4().hex[:12]}"
    make_directory(generation / "app")
    try:
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

    def run(self, spec: GenerationSpec, logger: RunLogger) -> GeneratorRun:
        with generation_directory(self.workspace, spec.request_id) as generation:
            app_dir = generation / "app"
            launch = self._launch(spec, generation, logger)
            try:
                process = subprocess.Popen(
                    launch.command,
                    cwd=app_dir,
                    env=launch.env,
                    pass_fds=launch.pass_fds,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,  # its own process group, stopped as a whole
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                launch.close()
                raise GeneratorFailed(
                    f"could not start the generator ({launch.command[0]}): {exc}"
                ) from exc
            stop = functools.partial(_stop, process)
            with process, OutputFollower(logger, self.timeout_seconds, stop) as output:
                try:
                    launch.started()
                    output.follow_until_exit(process)
                except sandbox.SandboxError as exc:
                    raise GeneratorFailed(f"the sandbox could not start: {exc}") from exc
                finally:
                    if process.poll() is None:  # cancelled, crashed, or no sandbox
                        stop()
                    launch.close()
            artifact = ArtifactRef(kind="volume", location=str(app_dir))
            return output.result(spec, process.returncode, artifact, launch.confinement)

    def _launch(
        self, spec: GenerationSpec, generation: Path, logger: RunLogger
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
            return self._unconfined(spec, app_dir, "UNCONFINED (APPGEN_TRUST_AGENT=true)")
        network = self.agent_network == "on" and spec.agent != "template"  # the scaffold is offline
        unavailable = sandbox.unavailable_reason(network)
        if unavailable is None:
            env = dict(SANDBOX_ENV)
            env |= allowed_environment(self.env_allowlist)
            env |= generator_environment(spec, sandbox.APP_DIR, self.timeout_seconds)
            env["PYTHONPATH"] = sandbox.GENERATOR_ROOT
            return sandbox.SandboxLaunch(
                [sandbox.sandbox_python(), "-m", "generator", "--fresh"],
                app_dir=app_dir,
                generator_package=_generator_package(),
                env=env,
                network=network,
                scratch=generation,
            )
        if spec.agent == "template":  # appgen's own offline scaffold, not model-written
            return self._unconfined(spec, app_dir, f"unconfined (built-in template; {unavailable})")
        raise GeneratorFailed(
            f"the {spec.agent!r} agent runs model-written commands and the sandbox cannot "
            f"start: {unavailable}. Install bubblewrap and slirp4netns (Debian: apt-get "
            "install bubblewrap slirp4netns), set APPGEN_AGENT_NETWORK=none for an offline "
            "agent, use APPGEN_GENERATOR=docker, or set APPGEN_TRUST_AGENT=true to run it "
            "unconfined"
        )

    def _unconfined(
        self, spec: GenerationSpec, app_dir: Path, confinement: str
    ) -> _UnconfinedLaunch:
        env = allowed_environment((*PROCESS_ENV_ALLOWLIST, *self.env_allowlist))
        env |= generator_environment(spec, str(app_dir), self.timeout_seconds)
        env["PYTHONPATH"] = str(_generator_package().parent)
        command = [self.python_executable, "-m", "generator", "--fresh"]
        return _UnconfinedLaunch(command, env, confinement)


class _UnconfinedLaunch:
    """The generator started as a plain child process (a trusted agent)."""

    pass_fds: tuple[int, ...] = ()

    def __init__(self, command: list[str], env: dict[str, str], confinement: str) -> None:
        self.command = command
        self.env = env
        self.confinement = confinement

    def started(self) -> None:
        """Nothing to set up around a plain process."""

    def close(self) -> None:
        """Nothing to tear down."""


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the generator kills what the agent started; a sandbox dies whole),
    then SIGKILL for the whole group if it has not gone after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


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
