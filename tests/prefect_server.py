"""A real `prefect server start` on 127.0.0.1, for the deployment tests and the
flow-overhead benchmark."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from appgen.server import prefect_server_command
from tests.aws_standins import free_port


def wait_healthy(api_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the Prefect server at {api_url} did not become healthy")


class PrefectServer:
    """SQLite under ``home``, analytics off, no UI; ``api_url`` once entered."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.api_url = f"http://127.0.0.1:{free_port()}/api"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrefectServer:
        env = os.environ | {
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        port = self.api_url.rsplit(":", 1)[1].split("/")[0]
        with open(self.home / "server.log", "w") as log:
            self._process = subprocess.Popen(
                prefect_server_command(int(port), ui=False),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.api_url)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=30)
