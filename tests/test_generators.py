"""The process generator block: streaming, timeouts, failures, and what it may see."""

from __future__ import annotations

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blocks.generators import ProcessGenerator
from core.errors import GeneratorFailed
from tests.conftest import (
    command_spec,
    generation_of,
    require_sandbox,
    unique_sleep,
    wait_until_gone,
)


@pytest.fixture(params=["sandboxed", "trusted"])
def mode(request) -> dict[str, bool]:
    """The same behaviour in the bubblewrap sandbox and unconfined (APPGEN_TRUST_AGENT)."""
    if request.param == "sandboxed":
        require_sandbox()
    return {"trust_agent": request.param == "trusted"}


def test_writes_into_a_fresh_generation_dir_and_returns_it(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    run = generator.run(command_spec(5, "echo hello > index.html"), run_logger)
    app = Path(run.artifact.location)
    assert run.artifact.kind == "volume" and app == generation_of(tmp_path / "ws", 5) / "app"
    assert (app / "index.html").read_text() == "hello\n"


def test_a_new_generation_replaces_the_earlier_one(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    first = generator.run(command_spec(5, "touch old.txt"), run_logger)
    second = generator.run(command_spec(5, "touch new.txt"), run_logger)
    assert first.artifact.location != second.artifact.location
    assert sorted(p.name for p in Path(second.artifact.location).iterdir()) == ["new.txt"]
    assert not Path(first.artifact.location).exists()


def test_a_failed_generation_leaves_nothing_in_the_workspace(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    with pytest.raises(GeneratorFailed):
        generator.run(command_spec(5, "head -c 1000000 /dev/zero > big; exit 3"), run_logger)
    assert list((tmp_path / "ws/5").iterdir()) == []  # a full disk gets its space back


def test_output_lines_reach_the_log_as_they_come(tmp_path, run_logger, caplog):
    generator = ProcessGenerator(workspace=tmp_path)
    generator.run(command_spec(5, "echo first; sleep 1; echo second"), run_logger)
    times = {r.getMessage(): r.created for r in caplog.records}
    assert times["second"] - times["first"] > 0.8  # logged while the agent was still running


def test_a_non_zero_exit_fails_with_the_last_lines(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path)
    with pytest.raises(GeneratorFailed) as failure:
        generator.run(
            command_spec(5, "for i in $(seq 1 40); do echo line $i; done; exit 9"), run_logger
        )
    message = str(failure.value)
    assert "generator for request 5 exited with code 1" in message
    assert "exited with code 9" in message  # the agent's own reason, from stderr
    assert "line 40" in message and "line 10\n" not in message


def test_a_timeout_kills_everything_the_agent_started(tmp_path, run_logger, mode):
    generator = ProcessGenerator(workspace=tmp_path, timeout_seconds=1.5, **mode)
    marker = unique_sleep()
    started = time.monotonic()
    with pytest.raises(GeneratorFailed, match=r"timed out after 1.5s and was killed"):
        generator.run(
            command_spec(5, f"{marker} & setsid {marker} & echo waiting; wait"), run_logger
        )
    assert time.monotonic() - started < 15
    assert wait_until_gone(marker) == []


@pytest.mark.parametrize("leftover", ["{sleep} &", "setsid {sleep} &", "nohup setsid {sleep} &"])
def test_the_run_ends_when_the_agent_exits_and_its_leftovers_are_killed(
    tmp_path, run_logger, mode, leftover
):
    generator = ProcessGenerator(workspace=tmp_path, **mode)
    marker = unique_sleep()
    started = time.monotonic()
    run = generator.run(
        command_spec(5, leftover.format(sleep=marker) + " echo done > index.html"), run_logger
    )
    assert time.monotonic() - started < 20  # not the sleep's 300 s
    assert (Path(run.artifact.location) / "index.html").read_text() == "done\n"
    assert wait_until_gone(marker) == []


def test_the_generator_sees_no_credentials_only_its_allow_list(
    tmp_path, run_logger, monkeypatch, mode
):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret_token")
    monkeypatch.setenv("APPGEN_DATABASE_URL", "postgresql://u:db_password@h/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_key")
    monkeypatch.setenv("MY_AGENT_KEY", "agent-key")
    generator = ProcessGenerator(workspace=tmp_path, env_allowlist=["MY_AGENT_KEY"], **mode)
    run = generator.run(command_spec(5, "env > environment.txt"), run_logger)
    environment = (Path(run.artifact.location) / "environment.txt").read_text()
    for secret in ("ghp_secret_token", "db_password", "aws_secret_key"):
        assert secret not in environment
    assert "MY_AGENT_KEY=agent-key" in environment
    assert "APPGEN_REQUEST_ID=5" in environment


def test_an_unusable_interpreter_is_a_clear_failure(tmp_path, run_logger):
    generator = ProcessGenerator(
        workspace=tmp_path, python_executable="/nonexistent/python", trust_agent=True
    )
    with pytest.raises(GeneratorFailed, match="could not start the generator"):
        generator.run(command_spec(5, "true"), run_logger)


PROBE = (
    '"{python}" -c "import socket, sys\n'
    "for host in sys.argv[1:]:\n"
    "    try:\n"
    "        socket.create_connection((host, {port}), 3).close(); print(host, 'reached')\n"
    "    except OSError as exc:\n"
    "        print(host, 'refused', exc.errno)\n"
    '" 127.0.0.1 10.0.2.2 > probe.txt; cat /proc/net/dev > interfaces.txt'
)


@pytest.mark.parametrize("egress", ["registries", "none"])
def test_a_sandboxed_agent_cannot_reach_the_hosts_loopback_services(tmp_path, run_logger, egress):
    require_sandbox()
    with socket.socket() as service:  # a Prefect API, a database: anything on 127.0.0.1
        service.bind(("127.0.0.1", 0))
        service.listen()
        port = service.getsockname()[1]
        generator = ProcessGenerator(workspace=tmp_path, agent_egress=egress)
        command = PROBE.format(python=sys.executable, port=port)
        run = generator.run(command_spec(5, command), run_logger)
    app = Path(run.artifact.location)
    assert "reached" not in (app / "probe.txt").read_text()
    devices = (app / "interfaces.txt").read_text().splitlines()[2:]
    # No network but its own loopback: the gateway is a socket.
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]


def test_sandboxes_with_gateways_start_side_by_side(tmp_path, run_logger):
    require_sandbox()
    generator = ProcessGenerator(workspace=tmp_path)
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(lambda rid: generator.run(command_spec(rid, "true"), run_logger), range(1, 21))
        )
    assert len(runs) == 20
    assert all(run.receipt is not None and run.receipt.egress == "registries" for run in runs)
