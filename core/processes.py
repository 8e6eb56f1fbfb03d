"""This host's processes as ``/proc`` shows them: who holds a lease, whether that
holder still runs, and the members of a process group.

A claim on a request or a generator slot, and the managed Prefect server's state
file, name a process as ``host:pid:start`` (``start`` is the process's start time in
clock ticks since boot, from ``/proc/PID/stat``), so a process killed on this host is
recognised at once, even if its pid has been handed out again. Holders on other
hosts are judged by their heartbeat alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ProcessStat:
    """The fields of ``/proc/PID/stat`` this project reads."""

    state: str  # R, S, D, Z (zombie), …
    process_group: int
    start_ticks: str

    @property
    def is_zombie(self) -> bool:
        return self.state == "Z"


def read_stat(pid: int) -> ProcessStat | None:
    """``/proc/PID/stat`` of ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rfind(b")") + 2 :].decode().split()
    if len(fields) < 20:
        return None
    return ProcessStat(state=fields[0], process_group=int(fields[2]), start_ticks=fields[19])


def process_identity(pid: int) -> str:
    """``pid`` as a lease holder: ``host:pid:start``."""
    stat = read_stat(pid)
    return f"{socket.gethostname()}:{pid}:{stat.start_ticks if stat else '?'}"


def current_process() -> str:
    """This process as a lease holder: ``host:pid:start``."""
    return process_identity(os.getpid())


def process_is_gone(holder: str | None) -> bool:
    """True when ``holder`` names a process on this host that no longer runs. A holder
    on another host, or one this host cannot judge, is not known to be gone."""
    host, _, rest = (holder or "").partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    stat = read_stat(int(pid))
    return stat is None or stat.start_ticks != start


def process_is_running(pid: int, identity: str) -> bool:
    """The process ``identity`` names still runs as ``pid``: same start time, and not
    a zombie (an orphan's zombie lingers where the init process does not reap)."""
    stat = read_stat(pid)
    return stat is not None and not stat.is_zombie and process_identity(pid) == identity


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of the process group ``group``."""
    members = []
    for entry in os.listdir("/proc"):
        stat = read_stat(int(entry)) if entry.isdigit() else None
        if stat is not None and stat.process_group == group and not stat.is_zombie:
            members.append(int(entry))
    return members


def end_process_group(group: int, grace: float, kill_wait: float) -> list[int]:
    """SIGTERM to the process group, SIGKILL to what is left after ``grace`` seconds;
    the members still alive ``kill_wait`` seconds after that (none, normally)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        deadline = time.monotonic() + wait
        while group_members(group):
            if time.monotonic() > deadline:
                break
            time.sleep(_POLL_SECONDS)
        else:
            return []
    return group_members(group)


def temp_prefix(kind: str) -> str:
    """The prefix of a temporary directory this process makes (``appgen-stage-PID_START-``),
    so that ``appgen reap`` can tell which ones a dead process left."""
    _, pid, start = current_process().split(":")
    return f"appgen-{kind}-{pid}_{start}-"


def temp_dir_is_orphaned(name: str) -> bool:
    """True for an appgen temporary directory whose maker (on this host) is gone."""
    parts = name.split("-")
    if len(parts) < 4 or parts[0] != "appgen" or "_" not in parts[2]:
        return False
    pid, _, start = parts[2].partition("_")
    return process_is_gone(f"{socket.gethostname()}:{pid}:{start}")


def die_with_parent() -> None:
    """In a child, before exec (``preexec_fn``): be sent SIGTERM when the process
    that started it dies, however it dies."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def make_non_dumpable() -> None:
    """Make this process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no process of the
    same user (an unconfined agent, an orphan it left) may read its environment or
    memory through ``/proc/PID/environ``, ``/proc/PID/mem`` or ptrace, and it leaves no
    core dump. Its ``/proc/PID`` files then belong to root; ``stat`` and ``cmdline`` stay
    readable, so leases (``process_is_gone``) still work. Children get back the normal
    setting when they ``exec``. Root, which may ptrace anything, is not kept out."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
