"""The managed Prefect server's keeper: ``python -m appgen.server_watch``.

``appgen server start`` (or a first publish) starts this process, which starts
``prefect server start`` as its child in the same process group and stops it

- at once when the server's ``APPGEN_HOME`` is gone (deleted with everything it
  held: nobody can reach or stop this server through appgen any more), and
- after ``APPGEN_SERVER_IDLE_MINUTES`` without use: no client connected to its port
  (a publish, a worker, an open UI all hold connections), no flow run pending,
  running, paused or cancelling, and no ``appgen`` command that looked it up.

It exits with the server, so the state file's pid is alive exactly as long as the
server is. Standard library and ``core`` only, like ``appgen.server``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from appgen.server import STOP_GRACE_SECONDS, ManagedServer, prefect_server_command
from core.processes import die_with_parent

_HOME_POLL_SECONDS = 1.0
_ACTIVE_STATES = ("PENDING", "RUNNING", "PAUSED", "CANCELLING")
_TCP_ESTABLISHED = "01"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def connected_clients(port: int) -> int:
    """Established connections to ``port`` on this host's loopback (server side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)  # the header
                for line in lines:
                    local, _, state = line.split()[1:4]
                    if state == _TCP_ESTABLISHED and int(local.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return count


def active_flow_runs(port: int) -> int:
    """Flow runs the server holds that are not done; an unanswered query counts as
    active (a server busy enough not to answer is not idle)."""
    body = json.dumps({"flow_runs": {"state": {"type": {"any_": list(_ACTIVE_STATES)}}}})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/flow_runs/count",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    try:
        with _NO_PROXY.open(request, timeout=30) as response:
            return int(json.loads(response.read()))
    except (OSError, ValueError):
        return 1


class Keeper:
    """Runs the server until it exits, is told to stop, loses its home or idles."""

    def __init__(self, home: Path, port: int, idle_minutes: float) -> None:
        self._home = home
        self._server = ManagedServer(home)
        self._port = port
        self._idle_seconds = idle_minutes * 60
        # Often enough that a server's last minutes of idleness are judged on time.
        self._idle_poll_seconds = min(30.0, max(self._idle_seconds / 4, _HOME_POLL_SECONDS))
        self._last_active = time.monotonic()
        self._last_idle_check = time.monotonic()

    def run(self, environment: dict[str, str]) -> int:
        child = subprocess.Popen(
            prefect_server_command(self._port, ui=True),
            env=environment,
            preexec_fn=die_with_parent,  # a killed keeper leaves no server nobody records
        )

        def stop_on(signum: int, frame: FrameType | None) -> None:
            sys.exit(self._stop(child, signum))

        signal.signal(signal.SIGTERM, stop_on)
        signal.signal(signal.SIGINT, stop_on)
        while child.poll() is None:
            time.sleep(_HOME_POLL_SECONDS)
            if not self._home.is_dir():
                print("appgen: APPGEN_HOME is gone; stopping the server", flush=True)
                return self._stop(child)
            if self._idle_seconds and self._idle():
                with self._server.lock():  # no `appgen` command is choosing this server
                    if self._idle():
                        minutes = self._idle_seconds / 60
                        print(f"appgen: idle for {minutes:g} min; stopping the server", flush=True)
                        code = self._stop(child)
                        self._server.forget_stopped()
                        return code
        return child.returncode

    def _idle(self) -> bool:
        now = time.monotonic()
        if now - self._last_idle_check >= self._idle_poll_seconds:
            self._last_idle_check = now
            if connected_clients(self._port) or active_flow_runs(self._port):
                self._last_active = now
        quiet = min(now - self._last_active, self._server.seconds_since_looked_up())
        return quiet >= self._idle_seconds

    @staticmethod
    def _stop(child: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
        child.send_signal(signum)
        try:
            return child.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appgen.server_watch")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-minutes", type=float, required=True)
    args = parser.parse_args(argv)
    return Keeper(args.home, args.port, args.idle_minutes).run(dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
