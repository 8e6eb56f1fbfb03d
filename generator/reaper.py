"""The generator's hold on everything the agent starts.

The agent runs model-written commands: it may leave a background child
(``sleep 600 &``) or one in a session of its own (``setsid``), which a process-group
kill does not reach. The generator makes itself a child subreaper
(``PR_SET_CHILD_SUBREAPER``), so every orphaned descendant is re-parented to it
rather than to init, and kills the whole tree when the agent exits, when its own
deadline passes, and when it is told to stop (SIGTERM, SIGINT, SIGHUP, or its
parent's death through ``PR_SET_PDEATHSIG``). Linux only; elsewhere it does what
the platform allows. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Exit code of a generation stopped at its deadline, as timeout(1) uses.
DEADLINE_EXIT_CODE = 124
_KILL_ROUNDS = 500  # of 10 ms each: killed processes are gone long before


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _children_of() -> dict[int, list[int]]:
    """Every process's children, from /proc (what this process may see)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    return children


def descendants(pid: int | None = None) -> list[int]:
    """The processes below ``pid`` (default: this one), nearest first."""
    tree = _children_of()
    found, frontier = [], [pid or os.getpid()]
    while frontier:
        below = [child for parent in frontier for child in tree.get(parent, [])]
        found += below
        frontier = below
    return found


def kill_descendants() -> int:
    """SIGKILL every descendant and reap them, until none is left (a child may fork
    between the scan and the kill; orphans arrive as our children). Returns how many
    processes were killed."""
    killed: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        pids = descendants()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(pids)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        time.sleep(0.01)
    return len(killed)


class Reaper:
    """Context of one generation: subreaper on entry; on exit, on a stop signal, at
    the deadline, or when the parent dies, every process the agent left is killed."""

    def __init__(self, deadline_seconds: float | None = None) -> None:
        self._deadline = deadline_seconds
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
        self._expired = threading.Event()

    def __enter__(self) -> Reaper:
        parent = os.getppid()
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above took effect
            self._stop(signal.SIGTERM, None)
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._stop)
        if self._deadline:
            self._timer = threading.Timer(self._deadline, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        kill_descendants()
        if self._expired.is_set():  # the agent died of the deadline: say so, not its error
            os._exit(DEADLINE_EXIT_CODE)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _stop(self, signum: int, frame: object) -> None:
        kill_descendants()
        _tell(f"generator: stopped by {signal.Signals(signum).name}")
        os._exit(128 + signum)

    def _expire(self) -> None:
        self._expired.set()
        kill_descendants()
        _tell(f"generator: deadline of {self._deadline:g}s passed; the agent was stopped")
        os._exit(DEADLINE_EXIT_CODE)


def _tell(message: str) -> None:
    """Say why the generator stops, if anyone still reads: after its orchestrator
    died, stderr is a pipe without a reader, and a BrokenPipeError raised in a
    signal handler would unwind into ``Popen.__exit__``, which waits for the agent."""
    with contextlib.suppress(OSError):
        print(message, file=sys.stderr, flush=True)
