"""Who holds a lease, and whether that holder is still alive.

A claim on a request or a generator slot names its holder's process as
``host:pid:start`` (``start`` is the process's start time in clock ticks since
boot, from ``/proc/PID/stat``), so a holder killed on this host is recognised at
once, even if its pid has been handed out again. Holders on other hosts are judged
by their heartbeat alone.
"""

from __future__ import annotations

import os
import socket


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
