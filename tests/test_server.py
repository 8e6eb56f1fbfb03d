"""The managed Prefect server (`appgen server start|stop|status`), black-box through the
CLI as a person runs it: no PREFECT_API_URL, a fresh APPGEN_HOME. Waits are for
conditions, with deadlines generous enough for a busy 2-core machine."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from appgen.server import ManagedServer
from core.processes import group_members, read_stat

pytestmark = pytest.mark.slow

Completed = subprocess.CompletedProcess[str]
START_TIMEOUT = 300  # seconds; a first start on a busy machine has taken 30


@pytest.fixture
def managed(appgen_home: Path, tmp_path: Path) -> Iterator[Callable[..., Completed]]:
    """Runs `appgen` with no Prefect API of its own, so that it uses the managed
    server of this test's APPGEN_HOME; whatever server the test started is stopped."""
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "client-prefect-home")}

    def run(*args: str, **extra: str) -> Completed:
        return subprocess.run(
            [sys.executable, "-m", "appgen", *args],
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 120,
        )

    run.env = env  # type: ignore[attr-defined]
    yield run
    ManagedServer(appgen_home).stop()
    for pid in server_processes(appgen_home):  # a test that failed half-way
        os.killpg(pid, signal.SIGKILL)


def server_processes(appgen_home: Path) -> list[int]:
    """Live processes working in this home's server directory: the servers it started."""
    directory = str(appgen_home / "server")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == directory:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def state_of(appgen_home: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((appgen_home / "server/server.json").read_text()))


def started_pids(appgen_home: Path) -> list[int]:
    """The server's keeper, as its state file records it, and the server it runs."""
    return sorted(group_members(state_of(appgen_home)["pid"]))


def get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read()


def test_start_status_publish_stop(managed, appgen_home):
    started = managed("server", "start", APPGEN_SERVER_START_TIMEOUT=str(START_TIMEOUT))
    assert started.returncode == 0, started.stderr
    assert "started at http://127.0.0.1:" in started.stdout
    state = state_of(appgen_home)
    api = f"http://127.0.0.1:{state['port']}/api"
    assert get(f"{api}/health") == (200, b"true")
    assert sorted(server_processes(appgen_home)) == started_pids(appgen_home)

    again = managed("server", "start")
    assert again.returncode == 0 and "already running" in again.stdout
    status = managed("server", "status")
    assert status.returncode == 0
    assert f"running at http://127.0.0.1:{state['port']}" in status.stdout
    assert f"pid {state['pid']}" in status.stdout

    published = managed("publish", "--prompt", "Build me a counter app", "--json")
    assert published.returncode == 0, published.stderr
    outcome = json.loads(published.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "published"
    assert f"using the appgen Prefect server at http://127.0.0.1:{state['port']}" in (
        published.stderr
    )
    code, body = get(f"{api}/flow_runs/{outcome['flow_run_id']}")
    assert code == 200 and json.loads(body)["state"]["type"] == "COMPLETED"

    stopped = managed("server", "stop")
    assert stopped.returncode == 0 and "stopped the server" in stopped.stdout
    assert not (appgen_home / "server/server.json").exists()
    assert server_processes(appgen_home) == []
    assert managed("server", "stop").stdout.strip() == "not running"
    after = managed("server", "status")
    assert after.returncode == 1 and after.stdout.strip() == "not running"


def test_two_first_publishes_at_once_start_one_server(managed, appgen_home, tmp_path):
    """A fresh machine: the first publish starts the server in the background, and a
    second one started at the same moment waits for it rather than starting another."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "appgen", "publish", "--prompt", f"app {n}", "--json"],
            env=managed.env | {"APPGEN_SERVER_START_TIMEOUT": str(START_TIMEOUT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    results = [run.communicate(timeout=START_TIMEOUT + 300) for run in runs]
    for run, (stdout, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0, stderr
        assert json.loads(stdout.strip().splitlines()[-1])["status"] == "published"
        assert "Traceback" not in stderr and "Failed to send telemetry" not in stderr
    stderrs = [stderr for _, stderr in results]
    assert sum("started a Prefect server for appgen" in s for s in stderrs) == 1
    assert sum("using the appgen Prefect server" in s for s in stderrs) == 1
    assert "`appgen server stop` stops it" in "".join(stderrs)
    # Both outlive the publishes.
    assert sorted(server_processes(appgen_home)) == started_pids(appgen_home)
    log = (appgen_home / "server/server.log").read_text()
    assert "telemetry" not in log.lower()


def test_a_killed_server_is_noticed_and_its_state_file_removed(managed, appgen_home):
    started = managed("server", "start", APPGEN_SERVER_START_TIMEOUT=str(START_TIMEOUT))
    assert started.returncode == 0, started.stderr
    pid = state_of(appgen_home)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: pid not in server_processes(appgen_home))

    status = managed("server", "status")
    assert status.returncode == 1 and status.stdout.strip() == "not running"
    assert f"the server (pid {pid}) had stopped" in status.stderr
    assert not (appgen_home / "server/server.json").exists()
    assert managed("server", "stop").stdout.strip() == "not running"
    assert server_processes(appgen_home) == []


@pytest.mark.parametrize("failure", ["timeout", "crash"])
def test_a_failed_start_leaves_no_server_and_no_state_file(managed, appgen_home, failure):
    env = {"APPGEN_SERVER_START_TIMEOUT": str(START_TIMEOUT)}
    if failure == "timeout":  # importing Prefect alone takes longer than this
        env["APPGEN_SERVER_START_TIMEOUT"] = "0.5"
    else:  # the server cannot create its database: a directory is in the way
        (appgen_home / "server/prefect/prefect.db").mkdir(parents=True)
    started = managed("server", "start", **env)
    assert started.returncode == 1
    expected = "did not answer within 0.5 s" if failure == "timeout" else "exited while starting"
    assert expected in started.stderr
    assert f"see {appgen_home / 'server/server.log'}" in started.stderr
    assert "Traceback" not in started.stderr
    assert not (appgen_home / "server/server.json").exists()
    assert server_processes(appgen_home) == []

    published = managed("publish", "--prompt", "x", "--json", **env)
    assert published.returncode == 1
    assert json.loads(published.stdout.strip().splitlines()[-1])["status"] == "failed"
    assert server_processes(appgen_home) == []


def test_an_explicit_prefect_api_url_never_touches_the_managed_server(appgen, appgen_home):
    result = appgen("publish", "--prompt", "x", "--json")
    assert result.returncode == 0, result.stderr
    assert "appgen Prefect server" not in result.stderr
    assert not (appgen_home / "server").exists()


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if (stat := read_stat(pid)) is not None and not stat.is_zombie]


def test_a_server_stops_itself_when_unused_but_not_while_used(managed, appgen_home):
    """A fresh home per test run used to leave a server per home running for good:
    now one nobody uses stops itself after APPGEN_SERVER_IDLE_MINUTES. A client that
    keeps a connection (a worker polling, an open UI) keeps it running."""
    idle = {"APPGEN_SERVER_IDLE_MINUTES": "0.25"}  # 15 s
    started = managed("server", "start", APPGEN_SERVER_START_TIMEOUT=str(START_TIMEOUT), **idle)
    assert started.returncode == 0, started.stderr
    pids, port = started_pids(appgen_home), state_of(appgen_home)["port"]
    assert len(pids) == 2  # the keeper and the server

    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    in_use_until = time.monotonic() + 45  # three idle periods
    while time.monotonic() < in_use_until:
        client.request("GET", "/api/health")
        assert client.getresponse().read() == b"true"
        time.sleep(1)
    client.close()
    assert alive(pids) == pids

    assert wait_for(lambda: not alive(pids), timeout=120)
    assert not (appgen_home / "server/server.json").exists()
    status = managed("server", "status")
    assert (status.returncode, status.stdout.strip()) == (1, "not running")
    assert "had stopped" not in status.stderr  # it said so itself, and cleaned up
    assert (
        "idle for 0.25 min; stopping the server" in (appgen_home / "server/server.log").read_text()
    )


def test_a_server_whose_home_is_deleted_stops_at_once(managed, appgen_home):
    started = managed("server", "start", APPGEN_SERVER_START_TIMEOUT=str(START_TIMEOUT))
    assert started.returncode == 0, started.stderr
    pids = started_pids(appgen_home)
    shutil.rmtree(appgen_home)
    assert wait_for(lambda: not alive(pids), timeout=60), "the server outlived its home"
