"""The warm runner: appgen commands run in a process that has already imported Prefect.

Importing Prefect and the flow costs 1.5-3 s on a 2-core machine, more than the
rest of a publish. Beside the managed Prefect server (appgen/server.py) appgen keeps
one process that has imported everything a command needs, and forks a child of it
for each command:

    $APPGEN_HOME/server/
        runner.sock     the runner's Unix socket (mode 0600, in a 0700 directory)
        runner.json     its pid and process (host:pid:start)
        runner.log      its output, from its latest start

``appgen`` (which imports only the standard library up to here) connects, sends its
arguments, environment, working directory and umask, and passes its stdin, stdout
and stderr along (SCM_RIGHTS), so the child reads and prints exactly as the command
would. The child takes over that environment (Prefect's settings and logging are
read again) and runs ``appgen.cli.main``; it reports the exit code as soon as the
command is done, then finishes Prefect's log and event delivery on its own with its
output detached, so the caller neither waits for that nor holds a pipe open.

The caller stays in charge of the child: Ctrl-C, SIGTERM or SIGHUP to ``appgen`` are
forwarded to it (a run stops and is recorded as cancelled, as without the runner),
and when ``appgen`` dies without saying goodbye (SIGKILL) the runner stops the child
with SIGTERM. Only processes of the runner's own user may connect (SO_PEERCRED).

A runner whose code changed on disk since it started (a new appgen or Prefect)
answers ``stale`` and exits; the command then runs in its own process as usual, and
the next start of the managed server starts a fresh runner. Anything else that keeps
the runner from taking a command (none runs, a refused connection) is the same: the
command runs in its own process. ``APPGEN_RUNNER=off`` never uses it.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SOCKET_NAME = "runner.sock"
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_HEADER = struct.Struct("!I")
_MAX_REQUEST_BYTES = 16 * 1024 * 1024
_REQUEST_TIMEOUT_SECONDS = 10.0
_STDIO = (0, 1, 2)


def socket_path(appgen_home: Path) -> Path:
    return appgen_home / "server" / SOCKET_NAME


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


# ---------------------------------------------------------------------------------
# The caller's side


def run_in_runner(argv: list[str]) -> int | None:
    """Run ``appgen argv`` in the warm runner and return its exit code; None when no
    runner takes it (then the caller runs the command itself)."""
    if os.environ.get("APPGEN_RUNNER", "").lower() in ("off", "false", "0", "no"):
        return None
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(str(socket_path(appgen_home())))
    except OSError:
        return None
    with connection:
        try:
            _send_request(connection, argv)
            replies = _lines(connection)
            if next(replies, "") != "started":
                return None  # stale, or refused: nothing ran
        except OSError:
            return None
        return _follow(connection, replies)


def _send_request(connection: socket.socket, argv: list[str]) -> None:
    umask = os.umask(0o077)
    os.umask(umask)
    request = json.dumps(
        {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}
    ).encode("utf-8", "surrogateescape")
    fds = array.array("i", _STDIO)
    connection.sendmsg([_HEADER.pack(len(request))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    connection.sendall(request)


def _follow(connection: socket.socket, replies: Iterator[str]) -> int:
    """Forward signals to the child until it reports its exit code."""

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(f"signal {signum}\n".encode())

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED_SIGNALS}
    try:
        for reply in replies:
            kind, _, value = reply.partition(" ")
            if kind == "exit":
                with contextlib.suppress(OSError):
                    connection.sendall(b"done\n")
                return int(value)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("appgen: the runner went away before the command finished", file=sys.stderr)
    return 1


def _lines(connection: socket.socket) -> Iterator[str]:
    buffered = b""
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            yield line.decode()
        try:
            chunk = connection.recv(4096)
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            continue
        if not chunk:
            return
        buffered += chunk


# ---------------------------------------------------------------------------------
# The runner's side


@dataclass
class _Command:
    """A command the runner took: its connection, and the child running it."""

    connection: socket.socket
    pid: int
    done: bool = False  # the caller has its exit code (or is gone)
    exited: bool = False
    buffered: bytes = b""


@dataclass
class Job:
    """What a forked child runs: one ``appgen`` command, as its caller asked."""

    connection: socket.socket
    argv: list[str]
    env: dict[str, str]
    cwd: str
    umask: int
    stdio: list[int] = field(default_factory=list)

    def run(self) -> None:
        """Become the caller's command: its stdio, directory and environment."""
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        for target, fd in zip(_STDIO, self.stdio, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_stdio()
        os.chdir(self.cwd)
        os.umask(self.umask)
        logging_before = _logging_configuration()
        os.environ.clear()
        os.environ.update(self.env)
        sys.argv = ["appgen", *self.argv]
        _reread_environment(logging_before)

        from appgen import cli

        try:
            cli.main(self.argv, warm=True)
            code = cli.EXIT_OK
        except SystemExit as exc:
            code = cli.exit_code(exc)
        except BaseException:  # a bug: shown to the caller as Python would
            import traceback

            traceback.print_exc()
            code = cli.EXIT_FAILED
        cli.flush_stdio()
        with contextlib.suppress(OSError):
            self.connection.sendall(f"exit {code}\n".encode())
        # Prefect's log and event delivery ends at exit, without the caller's output.
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in _STDIO:
            os.dup2(devnull, target)
        self.connection.close()
        cli.exit_now(code)


def serve(directory: Path) -> Job:
    """Listen on ``directory``/runner.sock until stopped or stale; return only in a
    forked child, with the command it is to run."""
    from core.processes import make_non_dumpable

    make_non_dumpable()
    warm_up()
    modules = _loaded_module_files()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = directory / SOCKET_NAME
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
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
    commands: dict[int, _Command] = {}  # by child pid
    print(f"runner {runner} listening on {path}", flush=True)
    try:
        while not stopping:
            for key, _ in selector.select():
                if key.fileobj is listener:
                    job = _accept(listener, selector, commands, modules)
                    if job is None:
                        continue
                    if job == "stale":
                        stopping = True
                        break
                    return job  # in the child
                elif key.fileobj == wakeup_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup_read, 512)
                    _reap(commands, selector)
                else:
                    _read_caller(key.data, selector, commands)
    finally:
        if os.getpid() == runner:
            path.unlink(missing_ok=True)
            listener.close()
    print("runner: stopping", flush=True)
    sys.exit(0)


def warm_up() -> None:
    """Import what the commands use, so that each forked child starts with it."""
    import rich.console
    import rich.table  # noqa: F401

    import appgen.cli  # noqa: F401
    import blocks.defaults  # noqa: F401
    import deployments.setup  # noqa: F401
    import flows.publish  # noqa: F401


def _accept(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    commands: dict[int, _Command],
    modules: dict[str, int],
) -> Job | str | None:
    connection, _ = listener.accept()
    try:
        connection.settimeout(_REQUEST_TIMEOUT_SECONDS)
        pid, uid, _ = struct.unpack(
            "3i",
            connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")),
        )
        if uid != os.getuid():
            connection.sendall(b"refused\n")
            connection.close()
            return None
        job = _read_request(connection)
    except (OSError, ValueError) as exc:
        print(f"runner: a request from pid {locals().get('pid')} failed: {exc}", flush=True)
        connection.close()
        return None
    if _changed(modules):
        for fd in job.stdio:
            os.close(fd)
        with contextlib.suppress(OSError):
            connection.sendall(b"stale\n")
        connection.close()
        print("runner: code changed on disk since the start: stopping", flush=True)
        return "stale"
    child = os.fork()
    if child == 0:
        selector.close()
        listener.close()
        for command in commands.values():
            command.connection.close()
        connection.settimeout(None)
        return job
    for fd in job.stdio:
        os.close(fd)
    print(f"runner: {child} runs `appgen {job.argv[0]}` for pid {pid}", flush=True)
    connection.setblocking(False)
    commands[child] = _Command(connection, child)
    selector.register(connection, selectors.EVENT_READ, data=child)
    with contextlib.suppress(OSError):
        connection.sendall(b"started\n")
    return None


def _read_request(connection: socket.socket) -> Job:
    fds = array.array("i")
    header, ancillary, _, _ = connection.recvmsg(
        _HEADER.size, socket.CMSG_SPACE(len(_STDIO) * fds.itemsize)
    )
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(header) != _HEADER.size or len(fds) != len(_STDIO):
        for fd in fds:
            os.close(fd)
        raise ValueError("a request without its header or its three descriptors")
    (length,) = _HEADER.unpack(header)
    if length > _MAX_REQUEST_BYTES:
        raise ValueError(f"a request of {length} bytes")
    body = b""
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("the request was cut short")
        body += chunk
    request = json.loads(body.decode("utf-8", "surrogateescape"))
    return Job(
        connection,
        argv=list(request["argv"]),
        env=dict(request["env"]),
        cwd=str(request["cwd"]),
        umask=int(request["umask"]),
        stdio=list(fds),
    )


def _read_caller(pid: int, selector: selectors.BaseSelector, commands: dict[int, _Command]) -> None:
    """A caller's message: a signal to forward, its goodbye, or its end."""
    command = commands[pid]
    try:
        chunk = command.connection.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    command.buffered += chunk
    while b"\n" in command.buffered:
        line, command.buffered = command.buffered.split(b"\n", 1)
        kind, _, value = line.decode(errors="replace").partition(" ")
        if kind == "done":
            command.done = True
        elif kind == "signal" and value.isdigit() and not command.exited:
            sig = int(value)
            if sig in _FORWARDED_SIGNALS:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if sig == signal.SIGHUP else sig)
    if chunk:
        return
    # The caller is gone. Without its goodbye it was killed: so is its command.
    if not command.done and not command.exited:
        print(f"runner: the caller of {pid} is gone: stopping it (SIGTERM)", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    selector.unregister(command.connection)
    command.connection.close()
    command.done = True
    if command.exited:
        del commands[pid]


def _reap(commands: dict[int, _Command], selector: selectors.BaseSelector) -> None:
    """Collect exited children; tell a caller still waiting how its command ended
    (a child that reported its code itself is answered twice: the first counts)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        command = commands.get(pid)
        if command is None:
            continue
        command.exited = True
        if command.done:
            del commands[pid]
            continue
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            command.connection.sendall(f"exit {code if code >= 0 else 128 - code}\n".encode())


def _reopen_stdio() -> None:
    """New sys.stdin/stdout/stderr on the caller's descriptors: buffered as Python
    would for them (line by line on a terminal)."""
    for name, fd in (("stdin", 0), ("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        mode = "r" if fd == 0 else "w"
        interactive = os.isatty(fd)
        stream = open(  # noqa: SIM115 (the process's own streams)
            fd,
            mode,
            encoding=old.encoding,
            errors=old.errors,
            closefd=False,
            buffering=-1 if fd == 0 or not interactive else 1,
        )
        if fd == 2 and not interactive:
            stream.reconfigure(line_buffering=True)  # stderr never waits for a flush
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _reread_environment(logging_before: tuple[object, ...]) -> None:
    """What was read from the runner's environment at import, read from the caller's."""
    import tempfile

    from prefect.context import refresh_global_settings_context

    tempfile.tempdir = None  # TMPDIR
    refresh_global_settings_context()
    if _logging_configuration() != logging_before:  # 75 ms: only when it differs
        from prefect.logging.configuration import setup_logging

        setup_logging(incremental=False)


def _logging_configuration() -> tuple[object, ...]:
    """What Prefect's logging set-up reads: its variables and its file, if any."""
    from prefect.settings import PREFECT_LOGGING_SETTINGS_PATH

    variables = sorted((k, v) for k, v in os.environ.items() if k.startswith("PREFECT_LOGGING_"))
    path = PREFECT_LOGGING_SETTINGS_PATH.value()
    return (variables, path if path.exists() else None)


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
    directory = Path(sys.argv[1])
    job = serve(directory)
    job.run()


if __name__ == "__main__":
    main()
