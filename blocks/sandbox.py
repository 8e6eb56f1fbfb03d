"""The process generator's sandbox: bubblewrap (``bwrap``).

The agent runs model-written commands, so in process mode it runs in new user, PID,
IPC and UTS namespaces with every capability dropped: the system (``/usr``) and a
few files of ``/etc`` (name resolution, CA certificates) read-only, its own app
directory at ``/app`` the only place it can write, a private ``/tmp``, and a
``/proc`` that shows its own processes only. It does not see the orchestrator's
home, ``APPGEN_HOME`` (the database, the repositories, other requests), ``PREFECT_HOME``
or any other process's environment.

Its network is its own too: a network namespace with nothing but its own loopback.
Its one way out is the egress gateway's socket directory, bound read-only into the
sandbox (``blocks/egress.py``): no route to the host's 127.0.0.1 services (a Prefect
API that serves saved blocks' secrets, a database), to its network or to DNS.

When the orchestrator dies, or stops it, the whole sandbox dies with it: killing a
PID namespace's first process kills every process in it, ``setsid`` children included.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

APP_DIR = "/app"
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
def unavailable_reason() -> str | None:
    """Why the sandbox cannot start on this machine, or None when it can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (`bwrap`) is not installed"
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
    """The command line that runs ``argv`` in the sandbox, its own environment being
    ``env`` alone; ``gateway`` is the egress gateway's socket directory and where the
    sandbox sees it."""

    def __init__(
        self,
        argv: list[str],
        *,
        app_dir: Path,
        generator_package: Path,
        env: Mapping[str, str],
        gateway: tuple[Path, str] | None,
    ) -> None:
        bwrap = shutil.which("bwrap")
        assert bwrap is not None, "check unavailable_reason() first"
        binds = [*_system_binds()]
        python_home = Path(sys.base_prefix).resolve()
        if not python_home.is_relative_to("/usr"):
            binds += ["--ro-bind", str(python_home), str(python_home)]
        binds += ["--ro-bind", str(generator_package), f"{GENERATOR_ROOT}/generator"]
        binds += ["--bind", str(app_dir), APP_DIR, "--chdir", APP_DIR]
        if gateway is not None:
            binds += ["--ro-bind", str(gateway[0]), gateway[1]]
        environment = ["--clearenv"]
        for name, value in env.items():
            environment += ["--setenv", name, value]
        self.command = [bwrap, *binds, *_namespaces(), *environment, "--", *argv]
        self.env: dict[str, str] = {}  # bwrap's own; the sandbox gets only ``env``
        self.cwd = app_dir
        self.confinement = "in a bubblewrap sandbox " + (
            "whose only way out is the egress gateway" if gateway else "without a network"
        )


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
