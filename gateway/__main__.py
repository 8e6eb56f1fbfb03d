"""``python -m gateway CONFIG``: serve one generation's egress until SIGTERM.

The orchestrator starts it in a session of its own with the model key in its
environment (``APPGEN_GATEWAY_MODEL_KEY``) and waits for both sockets; every process
of the gateway dies with the one that started it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import proxy
import uvicorn

from core.egress import MODEL_SOCKET, PROXY_SOCKET
from core.processes import die_with_parent, make_non_dumpable
from gateway.forward import CONFIG_VARIABLE, gateway_config
from gateway.model import relay_app


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m gateway CONFIG", file=sys.stderr)
        return 2
    # It holds the model key: an unconfined agent of this user must not read it
    # from /proc/PID/environ or the process's memory (nor a fork of it).
    make_non_dumpable()
    os.environ[CONFIG_VARIABLE] = str(Path(argv[0]).absolute())
    config = gateway_config()
    # proxy.py serves from processes of its own: each dies with this one, too.
    os.register_at_fork(after_in_child=die_with_parent)
    sockets = Path(config.socket_dir)
    options = [
        "--unix-socket-path",
        str(sockets / PROXY_SOCKET),
        "--plugins",
        "gateway.forward.EgressFilter",
        "--num-acceptors",
        "1",
        "--threaded",
        "--log-level",
        "WARNING",
        "--timeout",
        "60",
        # Downloads (a package, a toolchain) pass in large reads, not proxy.py's default.
        "--client-recvbuf-size",
        str(1 << 20),
        "--server-recvbuf-size",
        str(1 << 20),
    ]
    with proxy.Proxy(options):
        if config.policy.model:
            server = uvicorn.Server(
                uvicorn.Config(
                    relay_app(config),
                    uds=str(sockets / MODEL_SOCKET),
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=5,
                )
            )
            server.run()  # until SIGTERM or SIGINT
        else:
            stops = {signal.SIGTERM, signal.SIGINT}
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # proxy.py's children forked
            signal.sigwait(stops)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
