"""The managed local Prefect server: ``appgen server start|stop|status``.

Without ``PREFECT_API_URL``, Prefect starts a temporary API in every process that
needs one, which costs seconds on every ``appgen publish``. appgen instead keeps one
``prefect server start`` running in the background, started on first use:

    $APPGEN_HOME/server/
        server.json     the running server: its URL, pid and process (host:pid:start)
        server.log      its output, from its latest start
        server.lock     held while a server is started or stopped
        looked-up       touched by every command that chose this server
        prefect/        its PREFECT_HOME: the SQLite database and the UI's files

It listens on a free port of 127.0.0.1 only, runs in a session of its own (so it
outlives the command that started it and Ctrl-C in that terminal does not reach it)
and sends no telemetry. Its keeper (``appgen.server_watch``, the recorded pid) stops
it after ``APPGEN_SERVER_IDLE_MINUTES`` without use, and at once when its
``APPGEN_HOME`` is deleted. A start either leaves a server that answers ``/api/health``
with its state file, or nothing: on a timeout, an early exit or an interruption it
kills what it started and removes the state file. A run with a Prefect API of its
own (``PREFECT_API_URL``, in the environment or a Prefect profile) never starts,
stops or uses this server.

Imports only the standard library and ``core``: ``appgen server status`` must stay
instant.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import PrefectApiError
from core.processes import (
    end_process_group,
    group_members,
    process_identity,
    process_is_running,
    read_stat,
)

STOP_GRACE_SECONDS = 20.0  # SIGTERM lets it finish open requests; SIGKILL after this
_KILL_WAIT_SECONDS = 10.0
_HEALTH_POLL_SECONDS = 0.2
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


@dataclass(frozen=True)
class ServerState:
    """A started server, as its state file records it."""

    pid: int
    process: str  # host:pid:start, as core.processes names processes
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return process_is_running(self.pid, self.process)


class ManagedServer:
    """The Prefect server of one ``APPGEN_HOME``."""

    def __init__(self, appgen_home: Path) -> None:
        self.home = appgen_home
        self.directory = appgen_home / "server"
        self.state_file = self.directory / "server.json"
        self.log = self.directory / "server.log"
        self.prefect_home = self.directory / "prefect"
        self._lock_file = self.directory / "server.lock"
        self._looked_up = self.directory / "looked-up"

    def running(self) -> ServerState | None:
        """The server if it runs (it may still be starting)."""
        state = self._read_state()
        return state if state is not None and state.is_running() else None

    def forget_if_dead(self) -> ServerState | None:
        """Remove a state file whose server is no longer running (killed, or its
        machine restarted), killing anything it left in its process group; return
        what the file said, or None if there was nothing to clean."""
        if self._read_state() is None:
            return None
        with self.lock():
            state = self._read_state()  # a start may have replaced it meanwhile
            if state is None or state.is_running():
                return None
            self._forget(state)
            return state

    def ensure_started(self, timeout: float, idle_minutes: float) -> tuple[ServerState, bool]:
        """The running server, started if none runs (stopping itself after
        ``idle_minutes`` without use; 0: never); and whether this call started it.
        Two callers at once start one server: the second waits for the first."""
        with self.lock():
            state = self._read_state()
            if state is not None and state.is_running():
                # Healthy at once, unless its starter was killed before it answered.
                self._wait_healthy(state, None, timeout)
                started = False
            else:
                if state is not None:
                    self._forget(state)
                state, started = self._start(timeout, idle_minutes), True
            # Told while the lock is held: its keeper never stops it under this caller.
            self._looked_up.touch()
            return state, started

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> ServerState | None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``grace``) and
        remove its state file; None if none was running."""
        with self.lock():
            state = self._read_state()
            if state is None or not state.is_running():
                if state is not None:
                    self._forget(state)
                return None
            _end_group(state.pid, grace)
            self._forget(state)
            return state

    def forget_stopped(self) -> None:
        """Remove the state file of a server its keeper stopped (under ``lock``)."""
        self.state_file.unlink(missing_ok=True)

    def seconds_since_looked_up(self) -> float:
        """How long ago a command last chose this server (``ensure_started``)."""
        try:
            return time.time() - self._looked_up.stat().st_mtime
        except OSError:
            return float("inf")

    def healthy(self, state: ServerState) -> bool:
        try:
            with _NO_PROXY.open(f"{state.api_url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:  # refused, reset, timed out, or an HTTP error status
            return False

    def _start(self, timeout: float, idle_minutes: float) -> ServerState:
        try:
            self.prefect_home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PrefectApiError(f"cannot create {self.prefect_home}: {exc}") from exc
        port = _free_port()
        with open(self.log, "wb") as log:
            keeper = [sys.executable, "-m", "appgen.server_watch", "--home", str(self.home)]
            keeper += ["--port", str(port), "--idle-minutes", str(idle_minutes)]
            process = subprocess.Popen(
                keeper,
                env=self._environment(port),
                cwd=self.directory,  # no .env or prefect.toml of the caller's is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            # Recorded at once: if this command is killed while waiting, the next one
            # finds the server (and stops it or uses it) instead of losing it.
            state = ServerState(pid=process.pid, process=process_identity(process.pid), port=port)
            self._write_state(state)
            self._wait_healthy(state, process, timeout)
        except BaseException:
            _end_group(process.pid, grace=2.0)
            process.wait()
            self._forget(None)
            raise
        return state

    def _wait_healthy(
        self, state: ServerState, process: subprocess.Popen[bytes] | None, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy(state):
            exited = process.poll() is not None if process else not state.is_running()
            if exited:
                raise PrefectApiError(f"the Prefect server exited while starting; see {self.log}")
            if time.monotonic() > deadline:
                if process is None:  # not ours to give up on: a start we did not make
                    raise PrefectApiError(
                        f"the Prefect server (pid {state.pid}) does not answer at "
                        f"{state.api_url} after {timeout:g} s; see {self.log}, or "
                        "`appgen server stop` it"
                    )
                raise PrefectApiError(
                    f"the Prefect server did not answer within {timeout:g} s "
                    f"(APPGEN_SERVER_START_TIMEOUT); it was stopped; see {self.log}"
                )
            time.sleep(_HEALTH_POLL_SECONDS)

    def _environment(self, port: int) -> dict[str, str]:
        """The caller's environment without appgen's settings (the server needs no
        credential) or Prefect's: the server's configuration is appgen's alone. The UI
        is served on the server's port and calls its API there."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("APPGEN_", "PREFECT_"))
        }
        return environment | {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        }

    def _read_state(self) -> ServerState | None:
        try:
            fields = json.loads(self.state_file.read_text())
            state = ServerState(
                pid=int(fields["pid"]), process=str(fields["process"]), port=int(fields["port"])
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PrefectApiError(
                f"{self.state_file} is unreadable ({exc}); if no server runs, remove it"
            ) from exc
        host = state.process.split(":", 1)[0]
        if host != socket.gethostname():
            raise PrefectApiError(
                f"{self.state_file} names a server on the host {host}, which this host cannot "
                "judge: give each host an APPGEN_HOME of its own"
            )
        return state

    def _write_state(self, state: ServerState) -> None:
        _write_json(self.state_file, asdict(state))

    def _forget(self, state: ServerState | None) -> None:
        """Remove the state file, and kill what a dead server left in its group."""
        if state is not None and _left_members(state):
            _end_group(state.pid, grace=2.0)
        self.state_file.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a server is started, stopped or chosen."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = open(self._lock_file, "a")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise PrefectApiError(f"cannot use {self.directory}: {exc}") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json(path: Path, fields: dict[str, object]) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(fields))
    partial.replace(path)  # readers never see half a file


def use_for_prefect(
    appgen_home: Path, start_timeout: float, idle_minutes: float, say: Callable[[str], None]
) -> ServerState | None:
    """Point this process's Prefect at the managed server, started if none runs,
    unless a Prefect API is configured (``PREFECT_API_URL`` in the environment, a
    Prefect profile, ``.env`` or ``prefect.toml``): then that one is used and the
    managed server is left alone. Imports Prefect."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    state, started = ManagedServer(appgen_home).ensure_started(start_timeout, idle_minutes)
    os.environ["PREFECT_API_URL"] = state.api_url
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()  # Prefect was imported before the variable was set
    if started:
        say(
            f"started a Prefect server for appgen at {state.ui_url}; it keeps running "
            f"for the next runs (`appgen server stop` stops it{_idle_note(idle_minutes)})"
        )
    else:
        say(f"using the appgen Prefect server at {state.ui_url}")
    return state


def _idle_note(idle_minutes: float) -> str:
    return f"; unused for {idle_minutes:g} min, it stops itself" if idle_minutes else ""


def prefect_server_command(port: int, *, ui: bool) -> list[str]:
    """`prefect server start` on 127.0.0.1:``port``, with analytics off."""
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--analytics-off"]
    return command if ui else [*command, "--no-ui"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _left_members(state: ServerState) -> list[int]:
    """Processes of a dead server's group that outlived it. Only while its pid is
    free (or its zombie lingers): a pid in use by another process means the group
    is long gone (Linux does not hand out a pid that still names a group), and that
    process's own group is not ours to kill."""
    if read_stat(state.pid) is not None and process_identity(state.pid) != state.process:
        return []
    return group_members(state.pid)


def _end_group(group: int, grace: float) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after ``grace``."""
    if left := end_process_group(group, grace, _KILL_WAIT_SECONDS):
        raise PrefectApiError(f"processes {left} of the Prefect server survived SIGKILL")
