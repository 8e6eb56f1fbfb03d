"""Who holds a lease, and whether that holder is still alive.

A claim on a request or a generator slot names its holder's process as
``host:pid:start`` (``start`` is the process's start time in clock ticks since
boot, from ``/proc/PID/stat``), so a holder killed on this host is recognised at
once, even if its pid has been handed out again. Holders on other hosts are judged
by their heartbeat alone.
"""

from __future__ import annotations

import ctypes
import os
import socket

_PR_SET_DUMPABLE = 4


def _start_ticks(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def current_process() -> str:
    """This process as a lease holder: ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def process_is_gone(holder: str | None) -> bool:
    """True when ``holder`` names a process on this host that no longer runs. A holder
    on another host, or one this host cannot judge, is not known to be gone."""
    host, _, rest = (holder or "").partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _start_ticks(int(pid)) != start


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


def make_non_dumpable() -> None:
    """Make this process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): no process of the
    same user (an unconfined agent, an orphan it left) may read its environment or
    memory through ``/proc/PID/environ``, ``/proc/PID/mem`` or ptrace, and it leaves no
    core dump. Its ``/proc/PID`` files then belong to root; ``stat`` and ``cmdline`` stay
    readable, so leases (``process_is_gone``) still work. Children get back the normal
    setting when they ``exec``. Root, which may ptrace anything, is not kept out."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
