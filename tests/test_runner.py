"""The warm runner beside the managed Prefect server (appgen/runner.py), black-box
through the CLI as a person runs it: no PREFECT_API_URL, one APPGEN_HOME whose server
(and runner) the tests of this module share. Each test checks what the caller sees
(output, exit code, the row) and what is left (processes, the runner's children)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import appgen.runner
from appgen.server import ManagedServer
from tests.aws_standins import free_port
from tests.conftest import processes_like, unique_sleep, wait_until_gone
from tests.test_faults import wait_for

pytestmark = pytest.mark.slow

START_TIMEOUT = 300  # seconds; a first start on a busy machine has taken 30
TEMPLATE = f'"{sys.executable}" -m generator --agent template'


class Warm:
    """The shared home, the environment of its callers, and its runner."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.server = ManagedServer(home)

    def start(self, *args: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "appgen", *args],
            env=self.env | extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, *args: str, **extra: str) -> tuple[int, str, str]:
        process = self.start(*args, **extra)
        stdout, stderr = process.communicate(timeout=START_TIMEOUT + 120)
        return process.returncode, stdout, stderr

    def row(self, request_id: int) -> dict:
        code, stdout, stderr = self.run("status", str(request_id), "--json")
        assert code == 0, stderr
        return json.loads(stdout)

    @property
    def log(self) -> str:
        return self.server.runner_log.read_text()

    def runner_pid(self) -> int:
        runner = self.server.runner()
        assert runner is not None, "no warm runner runs"
        return runner.pid

    def wait_listening(self) -> None:
        """Until the runner (which imports Prefect first) accepts commands."""
        wait_for(lambda: "listening on" in self.log, "the runner to listen")

    def ran_in_runner(self, caller: int) -> bool:
        return re.search(rf"runs `appgen [a-z-]+` for pid {caller}$", self.log, re.M) is not None


def children_of(pid: int) -> list[int]:
    """Live (not zombie) children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[1] == str(pid) and fields[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def start_publish(warm: Warm, request_id: int, **env: str) -> subprocess.Popen:
    """`appgen publish --json` of ``request_id``, once its agent has started."""
    process = warm.start(
        "publish", "--prompt", "a counter", "--request-id", str(request_id), "--json", **env
    )
    wait_for(lambda: started(warm.home, request_id), "the agent")
    return process


def started(home: Path, request_id: int) -> bool:
    return any((home / "workspace" / str(request_id)).glob("g-*/app/started"))


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warm]:
    root = tmp_path_factory.mktemp("warm")
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "PREFECT_API_URL" and not name.startswith("APPGEN_")
    }
    env |= {
        "APPGEN_HOME": str(root / "home"),
        "PREFECT_HOME": str(root / "client-prefect-home"),
        "APPGEN_SERVER_START_TIMEOUT": str(START_TIMEOUT),
        "APPGEN_AGENT": "command",
        "APPGEN_AGENT_COMMAND": TEMPLATE,
    }
    warm = Warm(root / "home", env)
    code, _, stderr = warm.run("server", "start")
    assert code == 0, stderr
    warm.wait_listening()
    yield warm

    runner = warm.server.runner()
    code, stdout, _ = warm.run("server", "stop")
    assert code == 0 and "stopped the server" in stdout
    assert runner is None or not children_of(runner.pid)
    assert not (warm.home / "server/runner.sock").exists()
    assert warm.server.runner() is None and warm.server.running() is None


def test_commands_run_in_the_runner_with_the_callers_environment(warm, tmp_path):
    git_root = tmp_path / "this-callers-repos"
    process = warm.start(
        "publish", "--prompt", "a counter", "--json", APPGEN_GIT_ROOT=str(git_root)
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert warm.ran_in_runner(process.pid)
    outcome = json.loads(stdout.strip().splitlines()[-1])
    assert outcome["status"] == "published"
    assert outcome["repo_url"] == f"file://{git_root}/counter.git"  # the caller's setting
    assert (git_root / "counter.git").is_dir()
    assert "git_push" in stderr and "published request" in stderr  # the caller's stderr
    assert "Traceback" not in stderr
    assert warm.row(outcome["request_id"])["commit_sha"] == outcome["commit_sha"]

    status = warm.start("server", "status")
    stdout, _ = status.communicate(timeout=60)
    assert f"warm runner: pid {warm.runner_pid()}" in stdout
    assert not warm.ran_in_runner(status.pid)  # it starts and stops the runner itself

    refused = warm.start("publish", "--prompt", "x", "--git-host", "no/such-block")
    stdout, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and warm.ran_in_runner(refused.pid)
    assert stdout == "" and "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        "error: git_host: no saved block 'no/such-block' (`prefect block ls` lists them)"
    )

    off = warm.start("status", "--json", APPGEN_RUNNER="off")
    stdout, _ = off.communicate(timeout=120)
    assert off.returncode == 0 and json.loads(stdout)
    assert not warm.ran_in_runner(off.pid)


@pytest.mark.parametrize(("sent", "stopped_by"), [("SIGINT", "SIGINT"), ("SIGKILL", "SIGTERM")])
def test_a_stopped_or_killed_caller_cancels_its_run(warm, sent, stopped_by):
    """Ctrl-C reaches the run through its caller; a caller killed outright cannot say
    so, and the run stops itself (SIGTERM) when its caller's connection drops."""
    request_id = {"SIGINT": 71, "SIGKILL": 72}[sent]
    sleep = unique_sleep()
    process = start_publish(
        warm, request_id, APPGEN_AGENT_COMMAND=f"echo started > started; {sleep}"
    )
    assert warm.ran_in_runner(process.pid)
    process.send_signal(getattr(signal, sent))
    _, stderr = process.communicate(timeout=60)
    if sent == "SIGINT":
        assert process.returncode == 130
        assert stderr.strip().splitlines()[-1].startswith("cancelled: stopped by SIGINT")
    else:
        assert process.returncode == -signal.SIGKILL
    wait_for(lambda: warm.row(request_id)["status"] == "cancelled", "the row", timeout=60)
    assert warm.row(request_id)["error"] == f"cancelled: the run was stopped by {stopped_by}"
    assert wait_until_gone(sleep) == []
    runner = warm.runner_pid()
    wait_for(lambda: not children_of(runner), "the run's process to end", timeout=60)

    # Nothing is held: the request publishes at once.
    code, stdout, stderr = warm.run(
        "publish", "--prompt", "a counter", "--request-id", str(request_id), "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "published"


def test_a_runner_whose_code_changed_steps_aside_and_the_next_publish_restarts_it(warm):
    old = warm.runner_pid()
    module = Path(appgen.runner.__file__)
    times = module.stat()
    os.utime(module, ns=(times.st_atime_ns, times.st_mtime_ns + 1_000_000_000))
    try:  # as after `pip install` of another appgen: the runner's code is not on disk
        process = warm.start("status", "--json")
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert isinstance(json.loads(stdout), list)  # answered in the caller's process
        assert not warm.ran_in_runner(process.pid)
        assert "code changed on disk" in warm.log
        wait_for(lambda: warm.server.runner() is None, "the stale runner to exit", timeout=60)
    finally:
        os.utime(module, ns=(times.st_atime_ns, times.st_mtime_ns))

    code, _, stderr = warm.run("publish", "--prompt", "a todo list", "--json")
    assert code == 0, stderr
    assert warm.runner_pid() != old
    warm.wait_listening()
    process = warm.start("status", "--json")
    process.communicate(timeout=120)
    assert process.returncode == 0 and warm.ran_in_runner(process.pid)
    runner = warm.runner_pid()
    # a command's forked child keeps the runner's command line while it delivers its logs
    commands = children_of(runner)
    same_command = processes_like(f"{sys.executable} -m appgen.runner {warm.home / 'server'}")
    assert [pid for pid in same_command if pid not in commands] == [runner]


def gated_agent(gate: Path) -> str:
    """A trusted `command` agent that says it started, waits for ``gate`` to exist,
    then writes the template app."""
    return (
        f'echo started > started; while [ ! -e "{gate}" ]; do sleep 0.1; done; '
        f'"{sys.executable}" -m generator --agent template'
    )


def start_gated(warm: Warm, request_id: int, gate: Path) -> subprocess.Popen:
    """`appgen publish` of ``request_id`` whose agent waits for ``gate``, once it has
    started."""
    return start_publish(
        warm, request_id, APPGEN_TRUST_AGENT="true", APPGEN_AGENT_COMMAND=gated_agent(gate)
    )


def test_signals_the_caller_ignores_are_not_forwarded(warm, tmp_path):
    """`nohup appgen publish …`: a SIGHUP from the closing terminal does not stop it."""
    gate = tmp_path / "go"
    command = [sys.executable, "-m", "appgen", "publish", "--prompt", "a counter", "--json"]
    process = subprocess.Popen(
        [*command, "--request-id", "81"],
        env=warm.env | {"APPGEN_TRUST_AGENT": "true", "APPGEN_AGENT_COMMAND": gated_agent(gate)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as nohup does
    )
    wait_for(lambda: started(warm.home, 81), "the agent")
    process.send_signal(signal.SIGHUP)
    gate.touch()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "published"
    assert warm.ran_in_runner(process.pid)


def test_a_runner_told_to_stop_finishes_the_commands_it_runs(warm, tmp_path):
    gate = tmp_path / "go"
    runner = warm.runner_pid()
    process = start_gated(warm, 82, gate)
    os.kill(runner, signal.SIGTERM)
    wait_for(lambda: "stopping once 1 running command(s) end" in warm.log, "the runner to stop")
    assert not (warm.home / "server/runner.sock").exists()  # it takes no new command
    gate.touch()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "published"
    wait_for(lambda: warm.server.runner() is None, "the runner to exit", timeout=60)

    # The next command that uses the server starts another.
    code, _, stderr = warm.run("publish", "--prompt", "a counter", "--request-id", "82")
    assert code == 0, stderr
    assert warm.runner_pid() != runner
    warm.wait_listening()


def test_malformed_and_foreign_requests_are_refused_and_the_runner_goes_on(warm):
    runner = warm.runner_pid()
    path = str(warm.home / "server/runner.sock")
    for garbage in (b"", b"\x00\x00\x00\x02{}", b"\x00\x00\x00\x02[]", b"\xff" * 64):
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(path)
            connection.sendall(garbage)
            connection.shutdown(socket.SHUT_WR)
            assert connection.recv(100) in (b"refused\n", b"")
    # A caller of another appgen checkout (or Python) runs its own code, not the runner's.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, appgen.runner as r; r._PACKAGE = '/elsewhere/appgen'; "
            "sys.exit(3 if r.run_in_runner(['status', '--json']) is None else 4)",
        ],
        env=warm.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 3, other.stderr
    assert "the caller runs" in warm.log and "/elsewhere/appgen" in warm.log
    assert warm.runner_pid() == runner
    process = warm.start("status", "--json")
    process.communicate(timeout=60)
    assert process.returncode == 0 and warm.ran_in_runner(process.pid)
    wait_for(lambda: not children_of(runner), "the command's process to end", timeout=60)


@contextlib.contextmanager
def own_runner(directory: Path, env: dict[str, str]) -> Iterator[Path]:
    """A runner on ``directory`` started as the managed server starts it, without the
    server (for commands that need none); yields its log, and stops it."""
    directory.mkdir(parents=True, mode=0o700)
    log = directory / "runner.log"
    with open(log, "wb") as output:
        runner = subprocess.Popen(
            [sys.executable, "-m", "appgen.runner", str(directory)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "listening on" in log.read_text(), "the runner to listen")
        yield log
    finally:
        runner.terminate()
        assert runner.wait(timeout=60) == 0
    assert not (directory / "runner.sock").exists()


def without_settings() -> dict[str, str]:
    """This environment without appgen's or Prefect's settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("APPGEN_", "PREFECT_"))}


def test_a_home_whose_socket_path_is_too_long_for_unix_sockets(tmp_path):
    """Unix socket addresses hold 107 bytes: the runner binds and the caller connects
    through the directory, so any APPGEN_HOME works."""
    home = tmp_path / ("deep-" * 20) / "home"
    assert len(str(home / "server/runner.sock")) > 108
    with own_runner(home / "server", without_settings()) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "appgen", "status", "--json"],
            env=without_settings() | {"APPGEN_HOME": str(home)},
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout, _ = process.communicate(timeout=60)
        assert process.returncode == 0 and json.loads(stdout) == []
        assert f"runs `appgen status` for pid {process.pid}" in log.read_text()


def test_the_callers_prefect_profile_names_the_api_its_command_uses(tmp_path):
    """The runner keeps Prefect's default home, as most callers do: a caller's active
    profile there, written after the runner started, is read again; so is the one a
    caller names from a PREFECT_HOME of its own, even once the runner's profiles file
    is broken. Each names an API where nothing listens."""
    user = tmp_path / "user"  # HOME, of the runner and its callers
    own_home = tmp_path / "own-prefect-home"
    ports = {"default": free_port(), "own": free_port()}
    env = without_settings() | {"HOME": str(user), "APPGEN_HOME": str(tmp_path / "home")}
    own = {"PREFECT_HOME": str(own_home), "PREFECT_PROFILE": "own"}

    def config_fails_on(name: str, extra: dict[str, str]) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "appgen", "config"],
            env=env | extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, stderr = process.communicate(timeout=120)
        assert f"runs `appgen config` for pid {process.pid}" in log.read_text()
        assert process.returncode == 1 and "Traceback" not in stderr
        assert "WARNING" not in stderr  # as of a profile missing from the profiles file
        assert (
            stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"error: the Prefect API at http://127.0.0.1:{ports[name]}/api cannot be reached ("
            )
        )

    with own_runner(tmp_path / "home/server", env) as log:
        for name, directory in (("default", user / ".prefect"), ("own", own_home)):
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "profiles.toml").write_text(
                f'active = "{name}"\n[profiles.{name}]\n'
                f'PREFECT_API_URL = "http://127.0.0.1:{ports[name]}/api"\n'
            )
        config_fails_on("default", {})
        config_fails_on("own", own)
        (user / ".prefect/profiles.toml").write_text("active = [\n")
        config_fails_on("own", own)


def test_the_caller_finds_its_runner_where_the_settings_put_appgen_home(tmp_path, monkeypatch):
    """The caller reads APPGEN_HOME without the settings (which cost a quarter of a
    second): from the environment, then ./.env, names in any case, as they do."""
    from core.settings import Settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APPGEN_HOME", raising=False)
    (tmp_path / ".env").write_text("appgen_home=/srv/from-dotenv\n")
    assert appgen.runner.appgen_home() == Settings().home == Path("/srv/from-dotenv")
    monkeypatch.setenv("APPGEN_HOME", "/srv/from-env")
    assert appgen.runner.appgen_home() == Settings().home == Path("/srv/from-env")


def test_a_killed_runner_leaves_each_run_in_its_callers_hands(warm, tmp_path):
    """SIGKILL to the runner mid-run: Ctrl-C to the caller still cancels the run, and
    the next publish starts a new runner."""
    runner = warm.runner_pid()
    process = start_gated(warm, 83, tmp_path / "never")
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: warm.server.runner() is None, "the runner to die", timeout=60)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("cancelled: stopped by SIGINT")
    assert warm.row(83)["status"] == "cancelled"

    code, _, stderr = warm.run("publish", "--prompt", "a counter", "--request-id", "83")
    assert code == 0, stderr
    assert warm.runner_pid() != runner
    warm.wait_listening()
