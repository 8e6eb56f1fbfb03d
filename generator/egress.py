"""The generator's end of the egress gateway: the orchestrator hands it a directory
with the gateway's Unix sockets (``APPGEN_GATEWAY_DIR``), which is its only way out.
Programs speak HTTP over TCP, so the generator listens on loopback and relays each
connection, byte for byte, to a socket; the agent's environment names the relays as
its proxy (``HTTP_PROXY``, ``HTTPS_PROXY``, both cases) and as its model API
(``ANTHROPIC_BASE_URL``), with a placeholder key: the gateway attaches the real one.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from pathlib import Path

# The gateway's socket names (core.egress has them too: this package imports nothing
# of appgen's).
PROXY_SOCKET = "proxy.sock"
MODEL_SOCKET = "model.sock"
PLACEHOLDER_KEY = "appgen-gateway-attaches-the-real-key"
_CHUNK = 1 << 20


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: Path) -> None:
        self.target = str(target)
        super().__init__(("127.0.0.1", 0), _Connection)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Connection(socketserver.BaseRequestHandler):
    server: _Relay

    def handle(self) -> None:
        client: socket.socket = self.request
        with socket.socket(socket.AF_UNIX) as upstream:
            try:
                upstream.connect(self.server.target)
            except OSError:
                return  # the gateway is gone: the client sees its connection close
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s writing half."""
    with contextlib.suppress(OSError):
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def open_gateway(directory: Path) -> dict[str, str]:
    """Start the relays (daemon threads, for the life of the generator) and return
    the variables that point the agent at them."""
    env: dict[str, str] = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    proxy = _serve(_Relay(directory / PROXY_SOCKET))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = proxy.url
    if (directory / MODEL_SOCKET).exists():
        model = _serve(_Relay(directory / MODEL_SOCKET))
        env["ANTHROPIC_BASE_URL"] = model.url
        env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY
    return env


def _serve(relay: _Relay) -> _Relay:
    threading.Thread(target=relay.serve_forever, name="gateway-relay", daemon=True).start()
    return relay
