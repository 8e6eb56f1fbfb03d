"""The warm runner: appgen commands run in a process that has already imported Prefect.

Importing Prefect and the flow costs 1.5-3 s on a 2-core machine, more than the
rest of a publish. Beside the managed Prefect server (appgen/server.py) appgen keeps
one process that has imported everything a command needs, and forks a child of it
for each command:

    $APPGEN_HOME/server/
        runner.sock     the runner's Unix socket (mode 0600)
        runner.json     its pid and process (host:pid:start)
        runner.log      its output, from its latest start: a line per command

``appgen`` (which imports only the standard library up to here) connects, sends its
arguments, environment, working directory, umask and ignored signals, and passes
its stdin, stdout and stderr along (SCM_RIGHTS), so the child reads and prints
exactly as the command would. The child takes over that environment (the time
zone and the temporary directory are read again, and Prefect's settings, profile
and logging for a command that uses Prefect) and runs ``appgen.cli.main``; it
reports the exit code as soon as the command is done, then finishes Prefect's log
and event delivery on its own with its output detached, so the caller neither
waits for that nor holds a pipe open. What a fork cannot take over stays the
runner's: resource limits, cgroup, supplementary groups and namespaces
(``APPGEN_RUNNER=off`` for a caller confined by those).

The caller stays in charge of the child: Ctrl-C, SIGTERM or SIGHUP to ``appgen`` are
forwarded to it unless the caller ignores them (``nohup``), and when ``appgen`` dies
without saying goodbye (SIGKILL) the child stops itself with SIGTERM. The child reads
its caller's connection itself, so this holds even if the runner is gone. Both ends
check that the other is the same user (SO_PEERCRED), and the caller only connects in
a directory of its own that nobody else may write.

The runner takes nothing it would run differently from the caller's own process: a
caller of another Python or another appgen checkout is refused, and a runner whose
code changed on disk since it started (an upgrade) answers ``stale``, stops taking
commands and exits once those it runs have ended; the next command that uses the
managed server starts a fresh one. A refused command, or one with no runner to take
it, runs in its own process as usual. ``APPGEN_RUNNER=off`` never uses the runner.
"""

from __future__ import annotations

import array
import contextlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOCKET_NAME = "runner.sock"
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_HEADER = struct.Struct("!I")
_PEER = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# A caller sends its request at once; one that does not is not waited for long, as
# the runner reads requests one at a time.
_REQUEST_SECONDS = 3.0
# A runner answers at once; one that does not is stopped or wedged.
_STARTED_SECONDS = 30.0
_STDIO = (0, 1, 2)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# The interpreter and environment (a virtualenv's python is a link to its base's).
_PYTHON = f"{os.path.realpath(sys.executable)} ({sys.prefix})"


def runner_disabled() -> bool:
    """``APPGEN_RUNNER=off``: commands run in their own processes, and no runner starts."""
    return os.environ.get("APPGEN_RUNNER", "").lower() in ("off", "false", "0", "no")


def appgen_home() -> Path:
    """``APPGEN_HOME`` as the settings read it (the environment, then ``./.env``,
    names matched without regard to case), without importing them."""
    for source in (os.environ, _dotenv()):
        for name, value in source.items():
            if name.upper() == "APPGEN_HOME" and value:
                return Path(value).expanduser()
    return Path("~/.appgen").expanduser()


def _dotenv() -> dict[str, str]:
    if not os.path.exists(".env"):
        return {}
    from dotenv import dotenv_values

    return {name: value for name, value in dotenv_values(".env").items() if value is not None}


def _peer(connection: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end."""
    pid, uid, _ = _PEER.unpack(
        connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER.size)
    )
    return pid, uid


# ---------------------------------------------------------------------------------
# The caller's side


class RunnerError(Exception):
    """The runner took the command but does not answer."""


def run_in_runner(argv: list[str]) -> int | None:
    """Run ``appgen argv`` in the warm runner and return its exit code; None when no
    runner takes it (then the caller runs the command itself)."""
    if runner_disabled():
        return None
    directory = appgen_home() / "server"
    try:
        connection = _connect(directory)
    except OSError:
        return None
    except KeyboardInterrupt:  # before anything was asked of the runner
        return 128 + signal.SIGINT
    with connection, _Forwarding(connection) as forwarding:
        try:
            _send_request(connection, argv, forwarding.ignored)
            connection.settimeout(_STARTED_SECONDS)
            replies = _lines(connection)
            if next(replies, "") != "started":
                return None  # stale or refused (or gone): nothing ran
            connection.settimeout(None)
        except TimeoutError:
            raise RunnerError(
                f"the warm runner in {directory} took the command but did not answer within "
                f"{_STARTED_SECONDS:g} s; `appgen server stop` stops it, APPGEN_RUNNER=off "
                "runs without it"
            ) from None
        except OSError:
            return None
        with contextlib.suppress(OSError):  # reset: as gone
            for reply in replies:
                kind, _, value = reply.partition(" ")
                if kind == "exit":
                    with contextlib.suppress(OSError):
                        connection.sendall(b"done\n")
                    return int(value)
    raise RunnerError("the warm runner went away before the command finished")


def _connect(directory: Path) -> socket.socket:
    """A connection to the runner of ``directory``, which must be this user's and
    writable by nobody else, as must be whoever listens (the path may be long: it is
    reached through the directory's descriptor)."""
    handle = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        info = os.fstat(handle)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise PermissionError(f"{directory} is not this user's alone")
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(f"/proc/self/fd/{handle}/{SOCKET_NAME}")
            if _peer(connection)[1] != os.getuid():
                raise PermissionError("the runner socket is another user's")
        except OSError:
            connection.close()
            raise
        return connection
    finally:
        os.close(handle)


class _Forwarding:
    """Forwards the signals the caller does not ignore to its command, from before
    the request is sent (one that comes before the child exists waits in the socket)."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._previous: dict[int, Any] = {}
        ignoring = signal.SIG_IGN
        self.ignored = [sig for sig in _FORWARDED_SIGNALS if signal.getsignal(sig) is ignoring]

    def __enter__(self) -> _Forwarding:
        for sig in _FORWARDED_SIGNALS:
            if sig not in self.ignored:
                self._previous[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _forward(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            self._connection.sendall(f"signal {signum}\n".encode())


def _send_request(connection: socket.socket, argv: list[str], ignored: list[int]) -> None:
    umask = os.umask(0o077)
    os.umask(umask)
    request = {
        "argv": argv,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "umask": umask,
        "ignored": [int(sig) for sig in ignored],
        "python": _PYTHON,
        "appgen": _PACKAGE,
    }
    body = json.dumps(request).encode("utf-8", "surrogateescape")
    fds = array.array("i", _STDIO)
    connection.sendmsg([_HEADER.pack(len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    connection.sendall(body)


def _lines(connection: socket.socket) -> Iterator[str]:
    buffered = b""
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            yield line.decode()
        chunk = connection.recv(4096)
        if not chunk:
            return
        buffered += chunk


# ---------------------------------------------------------------------------------
# The runner's side


@dataclass
class Job:
    """What a forked child runs: one ``appgen`` command, as its caller asked."""

    connection: socket.socket
    argv: list[str]
    env: dict[str, str]
    cwd: str
    umask: int
    ignored: list[int]
    python: str  # the caller's interpreter and appgen package: the runner's own only
    appgen: str
    stdio: list[int] = field(default_factory=list)
    reported: bool = False  # the exit code is sent: the caller's end is no signal

    def close_stdio(self) -> None:
        """Close the runner's copies of the caller's descriptors."""
        for fd in self.stdio:
            os.close(fd)
        self.stdio = []

    def run(self) -> None:
        """Become the caller's command (its stdio, directory, environment and ignored
        signals), run it, report its exit code, then end the process."""
        for sig in _FORWARDED_SIGNALS:
            handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, signal.SIG_IGN if sig in self.ignored else handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        threading.Thread(target=self._follow_caller, name="appgen-caller", daemon=True).start()
        from appgen import cli

        try:
            self._become_the_caller()
            cli.main(self.argv, warm=True)
            code = cli.EXIT_OK
        except SystemExit as exc:
            code = cli.exit_code(exc)
        except KeyboardInterrupt:  # before the command could handle it
            code = 128 + signal.SIGINT
        except BaseException:  # a bug: shown to the caller as Python would
            import traceback

            traceback.print_exc()
            code = cli.EXIT_FAILED
        cli.flush_stdio()
        self.reported = True
        with contextlib.suppress(OSError):
            self.connection.sendall(f"exit {code}\n".encode())
        # Prefect's log and event delivery ends at exit, without the caller's output.
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in _STDIO:
            os.dup2(devnull, target)
        self.connection.close()
        cli.exit_now(code)

    def _follow_caller(self) -> None:
        """Take the caller's signals; a caller gone without its goodbye was killed,
        and so is its command (SIGTERM: it is cancelled). This process reads its
        connection itself, so its caller keeps control even if the runner is gone."""
        buffered = b""
        while True:
            try:
                chunk = self.connection.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                if not self.reported:
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                kind, _, value = line.decode(errors="replace").partition(" ")
                if kind == "done":
                    return
                if kind == "signal" and value.isdigit() and not self.reported:
                    sig = int(value)
                    if sig in _FORWARDED_SIGNALS and sig not in self.ignored:
                        os.kill(os.getpid(), signal.SIGTERM if sig == signal.SIGHUP else sig)

    def _become_the_caller(self) -> None:
        for target, fd in zip(_STDIO, self.stdio, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_stdio()
        os.chdir(self.cwd)
        os.umask(self.umask)
        from appgen.cli import WITHOUT_PREFECT

        uses_prefect = self.argv[0] not in WITHOUT_PREFECT
        logging_before = _logging_configuration() if uses_prefect else None
        os.environ.clear()
        os.environ.update(self.env)
        sys.argv = ["appgen", *self.argv]
        _reread_environment()
        if uses_prefect:
            _reread_prefect_settings(logging_before)


def serve(directory: Path) -> Job:
    """Listen on ``directory``/runner.sock until stopped or stale; return only in a
    forked child, with the command it is to run."""
    from core.processes import make_non_dumpable

    make_non_dumpable()
    os.chdir(directory)  # the socket is bound by its name here: no path length limit
    warm_up()
    modules = _loaded_module_files()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET_NAME)
    old_umask = os.umask(0o177)
    try:
        listener.bind(SOCKET_NAME)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    runner = os.getpid()
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    commands: dict[int, socket.socket] = {}  # child pid → its caller's connection
    _log(f"runner {runner} listening on {directory / SOCKET_NAME}")
    accepting = True
    try:
        while True:
            if stopping and accepting:  # no new commands; those running finish
                accepting = False
                selector.unregister(listener)
                listener.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(SOCKET_NAME)
                _log(f"runner: stopping once {len(commands)} running command(s) end")
            if not accepting and not commands:
                break
            for key, _ in selector.select():
                if key.fileobj is listener and accepting:
                    job = _accept(listener, selector, commands, modules)
                    if job == "stale":
                        stopping = True
                        break
                    if isinstance(job, Job):
                        return job  # in the child
                elif key.fileobj == wakeup_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup_read, 512)
                    _reap(commands)
    finally:
        if os.getpid() == runner and accepting:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(SOCKET_NAME)
    _log("runner: stopped")
    sys.exit(0)


def warm_up() -> None:
    """Import what the commands use, so that each forked child starts with it."""
    import rich.console
    import rich.table  # noqa: F401

    import appgen.cli  # noqa: F401
    import blocks.defaults  # noqa: F401
    import deployments.setup  # noqa: F401
    import flows.publish  # noqa: F401


def _log(line: str) -> None:
    print(line, flush=True)


def _accept(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    commands: dict[int, socket.socket],
    modules: dict[str, int],
) -> Job | str | None:
    """Take one command: a Job in the forked child; "stale" when the runner must stop;
    None otherwise (refused, failed, or forked in the runner)."""
    try:
        connection, _ = listener.accept()
    except OSError as exc:  # out of descriptors, say: the caller runs it itself
        _log(f"runner: accept failed: {exc}")
        return None
    caller = "?"
    try:
        pid, uid = _peer(connection)
        caller = str(pid)
        if uid != os.getuid():
            raise PermissionError(f"a caller of another user (uid {uid})")
        job = _read_request(connection)
    except Exception as exc:  # a malformed or foreign request: it is refused
        _log(f"runner: refused a request from pid {caller}: {exc}")
        _refuse(connection, b"refused\n")
        return None
    stale = _changed(modules)
    reason = "stale: its code changed on disk since it started" if stale else _foreign(job)
    if reason is not None:
        job.close_stdio()
        _log(f"runner: refused `appgen {job.argv[0]}` for pid {caller}: {reason}")
        _refuse(connection, b"stale\n" if stale else b"refused\n")
        return "stale" if stale else None
    try:
        child = os.fork()
    except OSError as exc:
        job.close_stdio()
        _log(f"runner: fork failed: {exc}")
        _refuse(connection, b"refused\n")
        return None
    if child == 0:
        selector.close()
        listener.close()
        for other in commands.values():
            other.close()
        connection.settimeout(None)
        return job
    job.close_stdio()
    _log(f"runner: {child} runs `appgen {job.argv[0]}` for pid {caller}")
    commands[child] = connection
    with contextlib.suppress(OSError):
        connection.sendall(b"started\n")
    return None


def _foreign(job: Job) -> str | None:
    """Why ``job``'s caller would run other code than this runner's, or None."""
    if job.python != _PYTHON or job.appgen != _PACKAGE:
        return f"the caller runs {job.python} with {job.appgen}, not this runner's"
    return None


def _refuse(connection: socket.socket, answer: bytes) -> None:
    with contextlib.suppress(OSError):
        connection.sendall(answer)
    connection.close()


def _read_request(connection: socket.socket) -> Job:
    deadline = time.monotonic() + _REQUEST_SECONDS
    connection.settimeout(_REQUEST_SECONDS)
    fds = array.array("i")
    header, ancillary, _, _ = connection.recvmsg(
        _HEADER.size, socket.CMSG_SPACE(len(_STDIO) * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    try:
        if len(header) != _HEADER.size or len(fds) != len(_STDIO):
            raise ValueError("a request without its header or its three descriptors")
        (length,) = _HEADER.unpack(header)
        if length > _MAX_REQUEST_BYTES:
            raise ValueError(f"a request of {length} bytes")
        body = b""
        while len(body) < length:
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = connection.recv(length - len(body))
            if not chunk:
                raise ValueError("the request was cut short")
            body += chunk
        request = json.loads(body.decode("utf-8", "surrogateescape"))
        argv = [str(arg) for arg in request["argv"]]
        if not argv:
            raise ValueError("a request without a command")
        return Job(
            connection,
            argv=argv,
            env={str(name): str(value) for name, value in request["env"].items()},
            cwd=str(request["cwd"]),
            umask=int(request["umask"]),
            ignored=[int(sig) for sig in request["ignored"]],
            python=str(request["python"]),
            appgen=str(request["appgen"]),
            stdio=list(fds),
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _reap(commands: dict[int, socket.socket]) -> None:
    """Collect exited children and tell their callers how they ended: a child that
    died before reporting its exit code (killed) is reported here; one that did
    report is reported twice, and the first counts."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = commands.pop(pid, None)
        if connection is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            connection.settimeout(1.0)
            connection.sendall(f"exit {code if code >= 0 else 128 - code}\n".encode())
        connection.close()


def _reopen_stdio() -> None:
    """New sys.stdin/stdout/stderr on the caller's descriptors: buffered as Python
    would for them (line by line on a terminal; stderr always)."""
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        interactive = os.isatty(fd)
        stream = open(  # noqa: SIM115 (the process's own streams)
            fd,
            "r" if fd == 0 else "w",
            encoding=old.encoding,
            errors=old.errors,
            closefd=False,
            buffering=1 if fd != 0 and interactive else -1,
        )
        if fd == 2 and not interactive:
            stream.reconfigure(line_buffering=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _reread_environment() -> None:
    """What the standard library read from the runner's environment, read from the
    caller's."""
    import tempfile

    time.tzset()  # TZ
    tempfile.tempdir = None  # TMPDIR


def _reread_prefect_settings(logging_before: object) -> None:
    """Prefect's settings, active profile and logging, from the caller's environment
    (70 ms a read: commands that never use Prefect skip it)."""
    from prefect.context import (
        SettingsContext,
        get_settings_context,
        refresh_global_settings_context,
    )
    from prefect.settings import Settings, get_current_settings

    profiles_before = get_current_settings().profiles_path
    # A read takes the active profile from the profiles file the current settings
    # name: the runner's. When the caller's settings name that file too (Prefect's
    # default home, as the runner's), the first read is the caller's, with what it
    # said; otherwise it is read again through the caller's settings.
    try:
        with (
            contextlib.redirect_stderr(io.StringIO()) as said,
            warnings.catch_warnings(record=True) as warned,
        ):
            warnings.simplefilter("always")  # and so none is marked as already shown
            refresh_global_settings_context()
    except Exception:  # the runner's profiles file is broken; the caller's may not be
        with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
            refresh_global_settings_context()
    else:
        if get_current_settings().profiles_path != profiles_before:
            refresh_global_settings_context()
        else:
            sys.stderr.write(said.getvalue())
            for warning in warned:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
    if _logging_configuration() != logging_before:  # 75 ms: only when it differs
        from prefect.logging.configuration import setup_logging

        setup_logging(incremental=False)


def _logging_configuration() -> object:
    """What Prefect's logging set-up reads: its settings (from any source) and its
    file, if there is one."""
    from prefect.settings import get_current_settings

    logging = get_current_settings().logging
    path = logging.config_path  # under PREFECT_HOME by default: only its file counts
    return (logging.model_dump(exclude={"config_path"}), path if path.exists() else None)


def _changed(modules: dict[str, int]) -> bool:
    return any(_mtime(name) != mtime for name, mtime in modules.items())


def _mtime(name: str) -> int:
    try:
        return os.stat(name).st_mtime_ns
    except OSError:
        return -1


def _loaded_module_files() -> dict[str, int]:
    """Each loaded module's file and its modification time: what a runner must
    still match on disk to run a command as a fresh process would."""
    names = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    return {name: _mtime(name) for name in names if isinstance(name, str)}


def main() -> None:
    """``python -m appgen.runner DIRECTORY``: what the managed server starts."""
    serve(Path(sys.argv[1]).resolve()).run()


if __name__ == "__main__":
    main()
