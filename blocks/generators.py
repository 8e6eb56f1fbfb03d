"""Generator blocks: where ``python -m generator`` runs for a request.

Every generator streams the program's output into the run log as it comes, kills it
at its deadline, and turns a non-zero exit into ``GeneratorFailed`` carrying the last
output lines. Each knows the artifact store that reads what it leaves behind.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from blocks.artifact_stores import ArtifactStore, VolumeArtifactStore
from core.errors import GeneratorFailed
from core.models import ArtifactRef, GenerationSpec, GeneratorRun

LOG_TAIL_LINES = 20
# What a local generator process may see of the orchestrator's environment besides
# its own variables: never a Git token, a database URL or cloud keys.
PROCESS_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def generator_environment(spec: GenerationSpec, app_dir: str) -> dict[str, str]:
    """The variables ``python -m generator`` reads, wherever it runs."""
    env = {
        "APPGEN_REQUEST_ID": str(spec.request_id),
        "APPGEN_PROMPT": spec.prompt,
        "APPGEN_APP_DIR": app_dir,
        "APPGEN_AGENT": spec.agent,
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

    def __init__(self, logger: logging.LoggerAdapter, timeout: float, kill: Callable[[], None]):
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

    @property
    def tail(self) -> list[str]:
        return list(self._tail)

    def result(self, spec: GenerationSpec, exit_code: int, artifact: ArtifactRef) -> GeneratorRun:
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
        )

    def _fail(self, spec: GenerationSpec, what: str) -> None:
        shown = "\n".join(f"  | {line}" for line in self.tail) or "  (no output)"
        raise GeneratorFailed(
            f"generator for request {spec.request_id} {what}; last output lines:\n{shown}"
        )


class GeneratorBlock(Block, abc.ABC):
    """A place to run the generator. ``run`` returns where the app was left."""

    @abc.abstractmethod
    def run(self, spec: GenerationSpec, logger: logging.LoggerAdapter) -> GeneratorRun:
        """Run the generator to completion or raise ``GeneratorFailed``."""

    @abc.abstractmethod
    def artifact_store(self) -> ArtifactStore:
        """The store that reads what this generator leaves behind."""


class ProcessGenerator(GeneratorBlock):
    """Runs the generator as a child process of the orchestrator, writing into the
    shared workspace (``{workspace}/{request_id}/app``). The embedded default: no
    container engine or cloud account needed.

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
        description="Directory the generator writes into, as {workspace}/{request_id}/app.",
        examples=["/home/me/.appgen/workspace"],
    )
    timeout_seconds: float = Field(
        default=1800.0, gt=0, description="Kill the generator after this many seconds."
    )
    env_allowlist: list[str] = Field(
        default_factory=list,
        description="Names of orchestrator environment variables passed to the generator "
        "in addition to PATH, HOME and the locale (for example an agent's API key).",
    )
    python_executable: str = Field(
        default_factory=lambda: sys.executable,
        description="Python interpreter that runs `python -m generator`.",
    )

    def artifact_store(self) -> ArtifactStore:
        return VolumeArtifactStore(workspace=self.workspace)

    def run(self, spec: GenerationSpec, logger: logging.LoggerAdapter) -> GeneratorRun:
        app_dir = self.workspace / str(spec.request_id) / "app"
        make_directory(app_dir)
        env = allowed_environment((*PROCESS_ENV_ALLOWLIST, *self.env_allowlist))
        env |= generator_environment(spec, str(app_dir))
        env["PYTHONPATH"] = _generator_import_root()
        try:
            process = subprocess.Popen(
                [self.python_executable, "-m", "generator", "--fresh"],
                cwd=app_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            raise GeneratorFailed(
                f"could not start the generator with {self.python_executable!r}: {exc}"
            ) from exc
        with process, OutputFollower(logger, self.timeout_seconds, lambda: _kill(process)) as out:
            try:
                out.follow(process.stdout)
                process.wait()
            finally:
                if process.poll() is None:  # cancelled or crashed while streaming
                    _kill(process)
                    process.wait()
        artifact = ArtifactRef(kind="volume", location=str(app_dir))
        return out.result(spec, process.returncode, artifact)


def _kill(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def make_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeneratorFailed(f"cannot create the workspace directory {path}: {exc}") from exc


def _generator_import_root() -> str:
    spec = importlib.util.find_spec("generator")
    if spec is None or spec.origin is None:
        raise GeneratorFailed("the 'generator' package is not importable; reinstall appgen")
    return str(Path(spec.origin).parent.parent)
