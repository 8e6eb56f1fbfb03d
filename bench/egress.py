#!/usr/bin/env python3
"""Egress gateway benchmark, measured in one run on loopback:

1. A 10 MB package downloaded by pip from a stand-in index, direct against through
   the gateway (the generator's TCP relay, the gateway's socket, proxy.py, the
   index, reached as pypi.org): the gateway's time as a multiple of the direct time
   (target: at most 1.2). The same 10 MB as one raw HTTP transfer too: the gateway's
   worst case, with nothing but the copy to compare with.
2. 100 small model calls to a stand-in Messages API, direct against through the
   gateway's model relay (which attaches the key and reads the usage): the median
   time added per call (target: at most 5 ms).

    python bench/egress.py [--repeat 5] [--calls 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from blocks.egress import EgressGateway  # noqa: E402
from core.egress import GATEWAY_TEST_UPSTREAMS_VARIABLE, EgressPolicy, GatewayConfig  # noqa: E402
from generator.egress import open_gateway  # noqa: E402
from tests.egress_standins import MODEL, PACKAGE, model_standin, package_index  # noqa: E402

DOWNLOAD_BYTES = 10 * 1024 * 1024
KEY = "sk-bench-key"


def file_server() -> tuple[ThreadingHTTPServer, str]:
    payload = os.urandom(DOWNLOAD_BYTES)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


def best_of(repeat: int, action: Callable[[], object]) -> float:
    """The median of ``repeat`` timings of ``action``."""
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def download(url: str, opener: urllib.request.OpenerDirector) -> None:
    with opener.open(url, timeout=60) as answer:
        while answer.read(1 << 20):
            pass


def model_call(url: str, key: str) -> None:
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def pip_download(index: str, into: Path, env: dict[str, str]) -> None:
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q"]
    options = ["--disable-pip-version-check", "--index-url", f"http://{index}/simple"]
    options += ["--trusted-host", index.split(":")[0], "-d", str(into), PACKAGE]
    subprocess.run([*pip, *options], check=True, env=env)
    shutil.rmtree(into)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    server, address = file_server()
    work = Path(tempfile.mkdtemp(prefix="appgen-bench-egress-"))
    with model_standin(KEY) as model, package_index(DOWNLOAD_BYTES) as (index, _):
        os.environ[GATEWAY_TEST_UPSTREAMS_VARIABLE] = json.dumps(
            {"files.bench.test:80": address, "pypi.org:80": index}
        )
        config = GatewayConfig(
            socket_dir="",
            events_file="",
            policy=EgressPolicy.from_setting(["files.bench.test", "pypi.org"]),
            model_api_url=model.url,
        )
        with EgressGateway(config, SecretStr(KEY), logging.getLogger("bench")) as gateway:
            env = open_gateway(gateway.socket_dir)
            plain = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
            direct_pip = best_of(args.repeat, lambda: pip_download(index, work / "d", plain))
            gateway_pip = best_of(
                args.repeat, lambda: pip_download("pypi.org", work / "g", plain | env)
            )
            print(
                f"pip download of a 10 MB package: direct {direct_pip * 1000:.0f} ms, through "
                f"the gateway {gateway_pip * 1000:.0f} ms: {gateway_pip / direct_pip:.2f}x "
                "(target <= 1.20x)"
            )
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            proxied = urllib.request.build_opener(
                urllib.request.ProxyHandler({"http": env["HTTP_PROXY"]})
            )
            direct_seconds = best_of(args.repeat, lambda: download(f"http://{address}/", direct))
            gateway_seconds = best_of(
                args.repeat, lambda: download("http://files.bench.test/", proxied)
            )
            print(
                f"10 MB raw transfer: direct {direct_seconds * 1000:.1f} ms, through the "
                f"gateway {gateway_seconds * 1000:.1f} ms: "
                f"{gateway_seconds / direct_seconds:.2f}x (the gateway's worst case)"
            )
            calls_direct = [
                best_of(1, lambda: model_call(model.url, KEY)) for _ in range(args.calls)
            ]
            relay = env["ANTHROPIC_BASE_URL"]
            calls_relayed = [
                best_of(1, lambda: model_call(relay, "placeholder")) for _ in range(args.calls)
            ]
            added = (statistics.median(calls_relayed) - statistics.median(calls_direct)) * 1000
            print(
                f"{args.calls} model calls: median direct "
                f"{statistics.median(calls_direct) * 1000:.2f} ms, through the gateway "
                f"{statistics.median(calls_relayed) * 1000:.2f} ms: +{added:.2f} ms per call "
                "(target <= 5 ms)"
            )
        receipt = gateway.receipt
        assert receipt is not None and receipt.usage.requests == args.calls
    server.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
