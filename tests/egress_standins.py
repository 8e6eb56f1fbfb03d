"""Stand-ins on the orchestrator's side of the egress gateway, on loopback: a model API
(the Messages endpoint, streamed or not, with ``usage``; it checks the key) and a
package index (PEP 503 simple pages and one wheel), which the gateway is pointed at
under a registry host name (APPGEN_GATEWAY_TEST_UPSTREAMS)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODEL = "claude-sonnet-4-5-20250929"
PACKAGE = "appgen-standin-pkg"


@dataclass
class ModelStandIn:
    key: str
    url: str = ""
    calls: list[dict[str, object]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0

    async def messages(self, request: Request) -> Response:
        sent_key = request.headers.get("x-api-key")
        body = json.loads(await request.body())
        self.calls.append({"key": sent_key, "stream": bool(body.get("stream"))})
        if sent_key != self.key:
            return JSONResponse({"type": "error", "error": {"type": "authentication_error"}}, 401)
        n = len(self.calls)
        usage_in, usage_out = 100 * n + 7, 20 * n + 3
        self.input_tokens += usage_in
        self.output_tokens += usage_out
        if body.get("stream"):
            events: list[dict[str, Any]] = [
                {
                    "type": "message_start",
                    "message": {
                        "model": MODEL,
                        "usage": {"input_tokens": usage_in, "output_tokens": 1},
                    },
                },
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
                {"type": "message_delta", "usage": {"output_tokens": usage_out}},
                {"type": "message_stop"},
            ]
            text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
            return Response(text, media_type="text/event-stream")
        return JSONResponse(
            {
                "type": "message",
                "model": MODEL,
                "content": [{"type": "text", "text": "hello"}],
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
            }
        )


@contextmanager
def model_standin(key: str) -> Iterator[ModelStandIn]:
    standin = ModelStandIn(key=key)
    app = Starlette(routes=[Route("/v1/messages", standin.messages, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the model stand-in did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    standin.url = f"http://127.0.0.1:{port}"
    try:
        yield standin
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _wheel(padding: int) -> tuple[str, bytes]:
    name = PACKAGE.replace("-", "_")
    filename = f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": b"VALUE = 'from the stand-in index'\n",
        f"{name}/padding.bin": os.urandom(padding),
        f"{name}-1.0.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n".encode()
        ),
        f"{name}-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: appgen-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},,\n" for path in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for path, content in files.items():
            wheel.writestr(path, content)
        wheel.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return filename, buffer.getvalue()


@contextmanager
def package_index(padding: int = 0) -> Iterator[tuple[str, list[str]]]:
    """A simple index with one wheel (of about ``padding`` bytes): its ``host:port``
    and the paths it served."""
    filename, wheel = _wheel(padding)
    digest = hashlib.sha256(wheel).hexdigest()
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path  # a proxy may send the absolute form
            served.append(path)
            if path.rstrip("/") == f"/simple/{PACKAGE}":
                body = f'<a href="/files/{filename}#sha256={digest}">{filename}</a>'.encode()
                kind = "text/html"
            elif path == f"/files/{filename}":
                body, kind = wheel, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
