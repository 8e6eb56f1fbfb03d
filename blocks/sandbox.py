"""The process generator's sandbox: bubblewrap (``bwrap``).

The agent runs model-written commands, so in process mode it runs in new user, PID,
IPC and UTS namespaces with every capability dropped: the system (``/usr``) and a
few files of ``/etc`` (name resolution, CA certificates) read-only, its own app
directory at ``/app`` the only place it can write, a private ``/tmp``, and a
``/proc`` that shows its own processes only. It does not see the orchestrator's
home, ``APPGEN_HOME`` (the database, the repositories, other requests), ``PREFECT_HOME``
or any other process's environment.

Its network is its own too: a network namespace whose only way out is slirp4netns
with the host's loopback disabled, so an agent reaches its model's API but none of
the services listening on the host's 127.0.0.1 (a Prefect API that serves saved
blocks' secrets, a database). Without a network it has none at all.

When the orchestrator dies, or stops it, the whole sandbox dies with it: killing a
PID namespace's first process kills every process in it, ``setsid`` children included.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from core.processes import die_with_parent

APP_DIR = "/app"
_SLIRP_DNS = "10.0.2.3"  # slirp4netns's DNS forwarder, inside the sandbox's network
_LOOPBACK_WAIT_SECONDS = 10.0
GENERATOR_ROOT = "/opt/appgen"
# What of /etc a program needs to resolve names, trust TLS servers and know users.
_ETC_ENTRIES = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "gai.conf",
    "nsswitch.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "passwd",
    "group",
    "localtime",
    "alternatives",
    "mime.types",
)


@functools.cache
def unavailable_reason(network: bool) -> str | None:
    """Why the sandbox cannot start on this machine, or None when it can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (`bwrap`) is not installed"
    if network and shutil.which("slirp4netns") is None:
        return (
            "slirp4netns is not installed (it gives a networked sandbox a network of its "
            "own, without the host's loopback services)"
        )
    probe = subprocess.run(
        [bwrap, *_system_binds(), *_namespaces(), "--", "/bin/true"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if probe.returncode != 0:
        detail = probe.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"bubblewrap cannot create namespaces here ({detail[0]})"
    return None


class SandboxLaunch:
    """One start of ``argv`` in the sandbox: ``command`` and ``pass_fds`` go to Popen,
    then ``started`` (with a network: bwrap reports its namespace, slirp4netns
    attaches to it, and only then does bwrap run ``argv``), and ``close`` at the end.

    ``scratch`` is a directory outside the app dir for the sandbox's own files."""

    def __init__(
        self,
        argv: list[str],
        *,
        app_dir: Path,
        generator_package: Path,
        env: Mapping[str, str],
        network: bool,
        scratch: Path,
    ) -> None:
        bwrap = shutil.which("bwrap")
        assert bwrap is not None, "check unavailable_reason() first"
        binds = [*_system_binds()]
        python_home = Path(sys.base_prefix).resolve()
        if not python_home.is_relative_to("/usr"):
            binds += ["--ro-bind", str(python_home), str(python_home)]
        binds += ["--ro-bind", str(generator_package), f"{GENERATOR_ROOT}/generator"]
        binds += ["--bind", str(app_dir), APP_DIR, "--chdir", APP_DIR]
        self._network: _SlirpNetwork | None = None
        if network:
            resolv = scratch / "resolv.conf"
            resolv.write_text(f"nameserver {_SLIRP_DNS}\n")
            binds += ["--ro-bind", str(resolv), "/etc/resolv.conf"]
            self._network = _SlirpNetwork()
            binds += self._network.bwrap_options()
        environment = ["--clearenv"]
        for name, value in env.items():
            environment += ["--setenv", name, value]
        self.command = [bwrap, *binds, *_namespaces(), *environment, "--", *argv]
        self.env: dict[str, str] = {}  # bwrap's own; the sandbox gets only ``env``
        self.confinement = "in a bubblewrap sandbox " + (
            "with a network of its own (no host loopback)" if network else "without a network"
        )
        self.pass_fds = self._network.child_fds() if self._network else ()

    def started(self) -> None:
        if self._network is not None:
            self._network.attach()

    def close(self) -> None:
        if self._network is not None:
            self._network.close()


class _SlirpNetwork:
    """slirp4netns for one sandbox: user-mode networking out of its network namespace,
    host loopback disabled. bwrap waits (``--block-fd``) until it is attached.

    Every descriptor is closed exactly once and forgotten: in a process that starts
    sandboxes from several threads, closing a number twice would close another
    sandbox's pipe."""

    def __init__(self) -> None:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        self._fds: dict[str, int] = {
            "info_read": info_read,
            "info_write": info_write,
            "block_read": block_read,
            "block_write": block_write,
        }
        self._process: subprocess.Popen[bytes] | None = None

    def bwrap_options(self) -> list[str]:
        return [
            "--info-fd",
            str(self._fds["info_write"]),
            "--block-fd",
            str(self._fds["block_read"]),
        ]

    def child_fds(self) -> tuple[int, ...]:
        return (self._fds["info_write"], self._fds["block_read"])

    def attach(self) -> None:
        """After bwrap started: give its namespace a network, then let it go on."""
        self._close("info_write", "block_read")  # the child's ends
        try:
            child = self._child_pid()
            _wait_for_loopback(child)
            ready_read, ready_write = os.pipe()
            exit_read, self._fds["exit_write"] = os.pipe()
            try:
                self._process = subprocess.Popen(
                    [
                        shutil.which("slirp4netns") or "slirp4netns",
                        "--configure",
                        "--mtu=65520",
                        "--disable-host-loopback",
                        "--ready-fd",
                        str(ready_write),
                        "--exit-fd",
                        str(exit_read),
                        str(child),
                        "tap0",
                    ],
                    pass_fds=(ready_write, exit_read),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    preexec_fn=die_with_parent,
                )
            finally:
                os.close(ready_write)
                os.close(exit_read)
            with os.fdopen(ready_read, "rb") as ready:
                if ready.read(1) != b"1":
                    _, errors = self._process.communicate(timeout=5)
                    raise SandboxError(
                        f"slirp4netns could not give the sandbox a network: "
                        f"{errors.decode(errors='replace').strip() or 'no output'}"
                    )
        finally:
            self._close("info_read", "block_write")  # bwrap runs the command now

    def _child_pid(self) -> int:
        """The sandbox's first process, as bwrap reports it (JSON on --info-fd)."""
        report = b""
        while not report.rstrip().endswith(b"}"):
            chunk = os.read(self._fds["info_read"], 4096)
            if not chunk:
                break
            report += chunk
        try:
            child = json.loads(report).get("child-pid")
        except ValueError:
            child = None
        if not isinstance(child, int):
            raise SandboxError(f"bubblewrap did not report its namespace ({report!r})")
        return child

    def close(self) -> None:
        self._close(*list(self._fds))  # exit_write among them: slirp4netns then exits
        if self._process is not None:
            with self._process:  # closes its stderr pipe and waits for it
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()

    def _close(self, *names: str) -> None:
        for name in names:
            fd = self._fds.pop(name, None)
            if fd is not None:
                os.close(fd)


def _wait_for_loopback(child: int) -> None:
    """Wait (bounded) until bwrap has set up the sandbox's loopback: slirp4netns
    configuring the namespace at the same time makes bwrap's setup fail."""
    deadline = time.monotonic() + _LOOPBACK_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/net/fib_trie") as routes:
                if "127.0.0.1" in routes.read():
                    return
        except OSError:
            return  # gone already: its exit says why
        time.sleep(0.002)


class SandboxError(Exception):
    """The sandbox could not be set up."""


def sandbox_python() -> str:
    """The interpreter to run inside the sandbox (a venv's python is a link into a
    base installation, which is what the sandbox binds)."""
    return os.path.realpath(sys.executable)


def _system_binds() -> list[str]:
    binds = ["--ro-bind", "/usr", "/usr"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = f"/{link}"
        if os.path.islink(target):
            binds += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            binds += ["--ro-bind", target, target]
    for entry in _ETC_ENTRIES:
        binds += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
    return [*binds, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def _namespaces() -> list[str]:
    uid, gid = str(os.getuid()), str(os.getgid())
    namespaces = [
        "--unshare-user",
        "--uid",
        uid,
        "--gid",
        gid,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
    ]
    return namespaces
