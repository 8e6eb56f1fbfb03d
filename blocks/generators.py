"""Generator blocks: where ``python -m generator`` runs for a request."""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from core.errors import GeneratorFailed
from core.models import ArtifactRef, GenerationSpec, GeneratorRun

LOG_TAIL_LINES = 20
# What a generator may see of the orchestrator's environment besides its own
# variables: never a Git token, a database URL or cloud keys.
BASE_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def generator_environment(spec: GenerationSpec, app_dir: str) -> dict[str, str]:
    """The variables ``python -m generator`` reads, for any place it runs."""
    env = {
        "APPGEN_REQUEST_ID": str(spec.request_id),
        "APPGEN_PROMPT": spec.prompt,
        "APPGEN_APP_DIR": app_dir,
        "APPGEN_AGENT": spec.agent,
    }
    if spec.agent_command:
        env["APPGEN_AGENT_COMMAND"] = spec.agent_command
    return env


def failure_message(request_id: int, what: str, tail: list[str]) -> str:
    shown = "\n".join(f"  | {line}" for line in tail) or "  (no output)"
    return f"generator for request {request_id} {what}; last output lines:\n{shown}"


class GeneratorBlock(Block, abc.ABC):
    """A place to run the generator. ``run`` returns where the app was left."""

    @abc.abstractmethod
    def run(self, spec: GenerationSpec, logger: logging.LoggerAdapter) -> GeneratorRun:
        """Run the generator to completion or raise ``GeneratorFailed``."""


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

    def run(self, spec: GenerationSpec, logger: logging.LoggerAdapter) -> GeneratorRun:
        app_dir = self.workspace / str(spec.request_id) / "app"
        _reset_directory(app_dir)
        env = {
            name: os.environ[name]
            for name in (*BASE_ENV_ALLOWLIST, *self.env_allowlist)
            if name in os.environ
        }
        env |= generator_environment(spec, str(app_dir))
        env["PYTHONPATH"] = _generator_import_root()
        env["PYTHONUNBUFFERED"] = "1"
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [self.python_executable, "-m", "generator"],
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
        tail = _stream_until_exit(process, logger, self.timeout_seconds)
        duration = time.monotonic() - started
        if tail.timed_out:
            raise GeneratorFailed(
                failure_message(
                    spec.request_id,
                    f"timed out after {self.timeout_seconds:g}s and was killed",
                    tail.lines,
                )
            )
        if process.returncode != 0:
            raise GeneratorFailed(
                failure_message(
                    spec.request_id, f"exited with code {process.returncode}", tail.lines
                )
            )
        return GeneratorRun(
            request_id=spec.request_id,
            artifact=ArtifactRef(kind="volume", location=str(app_dir)),
            duration_seconds=round(duration, 3),
            log_tail=tail.lines,
        )


class _Tail:
    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.timed_out = False

    def add(self, line: str) -> None:
        self._lines.append(line)

    @property
    def lines(self) -> list[str]:
        return list(self._lines)


def _stream_until_exit(
    process: subprocess.Popen[str], logger: logging.LoggerAdapter, timeout: float
) -> _Tail:
    """Log each output line as it comes; kill the process group at the deadline."""
    tail = _Tail()

    def kill_on_deadline() -> None:
        tail.timed_out = True
        _kill_group(process)

    timer = threading.Timer(timeout, kill_on_deadline)
    timer.daemon = True
    timer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.add(line)
            logger.info(line)
        process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:  # cancelled or crashed while streaming
            _kill_group(process)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    return tail


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _reset_directory(path: Path) -> None:
    """A fresh, empty output directory: a re-generation never mixes in old files."""
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    except OSError as exc:
        raise GeneratorFailed(f"cannot prepare the workspace directory {path}: {exc}") from exc


def _generator_import_root() -> str:
    spec = importlib.util.find_spec("generator")
    if spec is None or spec.origin is None:
        raise GeneratorFailed("the 'generator' package is not importable; reinstall appgen")
    return str(Path(spec.origin).parent.parent)
