"""Faults of the orchestrator itself, black-box through the `appgen` CLI against a real
Prefect server: SIGKILL of the whole process group during generation and after the
push landed, SIGTERM and SIGINT, a full disk during generation and during the push, a
database that goes away at the end. Each case checks what a platform engineer would:
the row, the generations, the processes, the slots, the claims and the temp dirs,
and that a re-run finishes the request."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr

from blocks import defaults
from blocks.database import Database
from core.models import RequestStatus
from core.settings import Settings
from tests.aws_standins import free_port
from tests.conftest import (
    agent_runs,
    require_sandbox,
    reset_postgres,
    unique_sleep,
    wait_until_gone,
)

TEMPLATE = f'"{sys.executable}" -m generator --agent template'


@pytest.fixture
def cli_env(prefect_server: str, appgen_home: Path, tmp_path: Path) -> dict[str, str]:
    """What an `appgen` process sees: the real Prefect server, this test's home, its
    own result storage (shared by the runs of one test, so resume can be seen) and
    its own staging dir (so leftovers can be seen)."""
    staging = tmp_path / "staging"
    staging.mkdir()
    return os.environ | {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "APPGEN_HOME": str(appgen_home),
        "APPGEN_STAGING_DIR": str(staging),
        "APPGEN_AGENT": "command",
    }


class Publish:
    """One `appgen publish --json` in a session (process group) of its own."""

    def __init__(self, env: dict[str, str], tmp_path: Path, *args: str) -> None:
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appgen", "publish", "--json", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )

    def finish(self, timeout: float = 300) -> tuple[int, dict[str, Any], str]:
        stdout, _ = self.process.communicate(timeout=timeout)
        lines = stdout.strip().splitlines()
        return self.process.returncode, json.loads(lines[-1]) if lines else {}, self.stderr

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill_group(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def publish(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    return Publish(env, tmp_path, *args).finish()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def started(home: Path, request_id: int) -> bool:
    return any((home / "workspace" / str(request_id)).glob("g-*/app/started"))


def row(request_id: int):
    return defaults.database(Settings()).get(request_id)


def reap(env: dict[str, str]) -> None:
    """`appgen reap`: what killed runs left (rows, slots, temp dirs) is repaired."""
    done = subprocess.run(
        [sys.executable, "-m", "appgen", "reap"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def assert_nothing_held(tmp_path: Path) -> None:
    database = defaults.database(Settings())
    assert database.held_slots() == []
    assert all(record.claimed_by is None for record in database.all())
    assert list((tmp_path / "staging").iterdir()) == []


@pytest.fixture(params=["sandboxed", "trusted"])
def agent_mode(request, monkeypatch) -> str:
    if request.param == "sandboxed":
        require_sandbox()
    else:
        monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    return cast(str, request.param)


def test_killed_runs_hold_nothing_and_their_requests_finish_on_a_rerun(
    cli_env, appgen_home, tmp_path, agent_mode
):
    sleep = unique_sleep()
    env = cli_env | {
        "APPGEN_GENERATOR_SLOTS": "2",
        "APPGEN_AGENT_COMMAND": f"echo started > started; {sleep}",
    }
    for request_id in (1, 2, 3):  # one more than there are slots
        run = Publish(
            env, tmp_path, "--prompt", f"app {request_id}", "--request-id", str(request_id)
        )
        wait_for(
            functools.partial(started, appgen_home, request_id), f"request {request_id}'s agent"
        )
        run.kill_group()  # SIGKILL, OOM, node loss: no handler runs
    assert wait_until_gone(sleep) == []  # every generator died with its orchestrator

    env["APPGEN_AGENT_COMMAND"] = TEMPLATE
    code, result, _ = publish(env, tmp_path, "--prompt", "app 1", "--request-id", "1")
    assert (code, result["status"]) == (0, "published")  # not stuck behind dead claims or slots
    assert row(1).status is RequestStatus.PUBLISHED
    assert len(list((appgen_home / "workspace/1").glob("g-*"))) == 1  # the killed one is gone

    reap(env)
    for request_id in (2, 3):
        assert row(request_id).status is RequestStatus.FAILED
        assert "abandoned" in row(request_id).error
    assert_nothing_held(tmp_path)


@pytest.mark.parametrize(("sent", "exit_code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_cancels_within_seconds_and_leaves_nothing_behind(
    cli_env, appgen_home, tmp_path, sent, exit_code
):
    sleep = unique_sleep()
    env = cli_env | {"APPGEN_AGENT_COMMAND": f"echo started > started; {sleep}"}
    run = Publish(env, tmp_path, "--prompt", "a counter", "--request-id", "7")
    wait_for(lambda: started(appgen_home, 7), "the agent")
    stopped_at = time.monotonic()
    run.process.send_signal(getattr(signal, sent))
    code, _, stderr = run.finish(timeout=60)
    assert time.monotonic() - stopped_at < 10
    assert code == exit_code
    assert stderr.strip().splitlines()[-1].startswith(f"cancelled: stopped by {sent}")
    assert "Traceback" not in stderr
    assert (row(7).status, row(7).error) == (
        RequestStatus.CANCELLED,
        f"cancelled: the run was stopped by {sent}",
    )
    assert wait_until_gone(sleep) == []
    assert list((appgen_home / "workspace/7").iterdir()) == []
    assert_nothing_held(tmp_path)

    env["APPGEN_AGENT_COMMAND"] = TEMPLATE
    code, result, _ = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "7")
    assert (code, result["status"]) == (0, "published")


def test_killed_after_the_push_landed_a_rerun_records_that_push_without_generating(
    github, counting_agent, cli_env, tmp_path
):
    env = cli_env
    code, first, _ = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "5")
    assert code == 0

    github.hold_pushes = True
    run = Publish(env, tmp_path, "--prompt", "a counter with a reset button", "--request-id", "5")
    wait_for(github.push_landed.is_set, "the push to land")
    run.kill_group()  # the commit is on main; the row never heard of it
    github.hold_pushes = False
    github.release_push.set()
    landed = subprocess.run(
        ["git", f"--git-dir={github.bare_path('acme', 'counter')}", "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert row(5).commit_sha == first["commit_sha"] != landed

    code, result, _ = publish(
        env, tmp_path, "--prompt", "a counter with a reset button", "--request-id", "5"
    )
    assert (code, result["status"], result["commit_sha"]) == (0, "published", landed)
    assert agent_runs(counting_agent) == ["5", "5"]  # one generation per prompt
    assert row(5).commit_sha == landed
    reap(env)  # the killed run's staged copy
    assert_nothing_held(tmp_path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[Path, str], None]]:
    """Mounts small tmpfs file systems (needs root); unmounts them after the test."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(where: Path, size: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" if where not in mounted else f"remount,size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
        if where not in mounted:
            mounted.append(where)

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_during_generation_records_the_agents_error(
    cli_env, appgen_home, tmp_path, small_disk
):
    small_disk(appgen_home, "16m")  # the workspace and the SQLite database share it
    env = cli_env | {
        "APPGEN_AGENT_COMMAND": f"{TEMPLATE} && head -c 64000000 /dev/zero > huge.bin",
    }
    code, result, _ = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "21")
    assert (code, result["status"]) == (1, "failed")
    assert "No space left on device" in row(21).error
    assert "database or disk is full" not in row(21).error
    assert list((appgen_home / "workspace/21").iterdir()) == []  # its space came back
    assert_nothing_held(tmp_path)

    env["APPGEN_AGENT_COMMAND"] = TEMPLATE
    code, result, _ = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "21")
    assert (code, result["status"]) == (0, "published")


def test_a_full_disk_during_the_push_fails_cleanly_and_a_rerun_pushes_without_generating(
    counting_agent, cli_env, tmp_path, small_disk
):
    repos = tmp_path / "repos"
    small_disk(repos, "1m")
    env = cli_env | {
        "APPGEN_GIT_ROOT": str(repos),
        "APPGEN_AGENT_COMMAND": cli_env["APPGEN_AGENT_COMMAND"]
        + " && head -c 3000000 /dev/urandom > assets.bin",
    }
    code, result, stderr = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "22")
    assert (code, result["status"]) == (1, "failed"), stderr
    assert "git push" in row(22).error
    assert_nothing_held(tmp_path)

    small_disk(repos, "64m")
    code, result, _ = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "22")
    assert (code, result["status"]) == (0, "published")
    assert agent_runs(counting_agent) == ["22"]
    assert_nothing_held(tmp_path)


class TcpProxy:
    """A loopback TCP proxy to a server that can be cut (every connection closed, new
    ones refused) and restored on the same port: a database that goes away."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._connections += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def test_a_database_that_goes_away_at_the_end_is_survived_and_a_rerun_records_the_push(
    github, counting_agent, cli_env, tmp_path, postgres_url
):
    import sqlalchemy as sa

    reset_postgres(postgres_url)
    url = sa.make_url(postgres_url)
    assert url.host is not None and url.port is not None, "the test database's URL names both"
    proxy = TcpProxy((url.host, url.port))
    proxy.start()
    env = cli_env | {
        "APPGEN_DATABASE_URL": url.set(port=proxy.port).render_as_string(hide_password=False)
    }
    github.hold_pushes = True
    run = Publish(env, tmp_path, "--prompt", "a counter", "--request-id", "41")
    wait_for(github.push_landed.is_set, "the push to land")
    proxy.cut()  # the database is gone when the run records its outcome
    github.release_push.set()
    code, result, stderr = run.finish()
    github.hold_pushes = False
    assert (code, result["status"]) == (1, "failed"), stderr
    assert "database" in result["error"] and "Traceback" not in stderr

    proxy.start()
    direct = Database(url=SecretStr(postgres_url))
    held = direct.get(41)
    assert held is not None
    assert held.status is RequestStatus.PUBLISHING  # nothing could be written
    code, result, _ = publish(env, tmp_path, "--prompt", "a counter", "--request-id", "41")
    assert (code, result["status"]) == (0, "published")
    assert agent_runs(counting_agent) == ["41"]
    done = direct.get(41)
    assert done is not None
    assert done.commit_sha == result["commit_sha"]
    assert done.claimed_by is None and direct.held_slots() == []
    proxy.cut()
