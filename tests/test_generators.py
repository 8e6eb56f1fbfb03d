"""The process generator block: streaming, timeouts, failures, and what it may see."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from blocks.generators import ProcessGenerator
from core.errors import GeneratorFailed
from tests.conftest import command_spec


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_writes_into_the_workspace_and_returns_the_app_dir(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    run = generator.run(command_spec(5, "echo hello > index.html"), run_logger)
    app = tmp_path / "ws/5/app"
    assert run.artifact.kind == "volume" and Path(run.artifact.location) == app
    assert (app / "index.html").read_text() == "hello\n"


def test_a_new_generation_starts_from_an_empty_directory(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    generator.run(command_spec(5, "touch old.txt"), run_logger)
    generator.run(command_spec(5, "touch new.txt"), run_logger)
    assert sorted(p.name for p in (tmp_path / "ws/5/app").iterdir()) == ["new.txt"]


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


def test_a_timeout_kills_the_whole_process_group(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path, timeout_seconds=1.5)
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(GeneratorFailed, match=r"timed out after 1.5s and was killed"):
        generator.run(
            command_spec(5, f"sleep 300 & echo $! > {pid_file}; echo waiting; wait"), run_logger
        )
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)


def test_the_generator_sees_no_credentials_only_its_allow_list(tmp_path, run_logger, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret_token")
    monkeypatch.setenv("APPGEN_DATABASE_URL", "postgresql://u:db_password@h/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_key")
    monkeypatch.setenv("MY_AGENT_KEY", "agent-key")
    generator = ProcessGenerator(workspace=tmp_path, env_allowlist=["MY_AGENT_KEY"])
    generator.run(command_spec(5, "env > environment.txt"), run_logger)
    environment = (tmp_path / "5/app/environment.txt").read_text()
    for secret in ("ghp_secret_token", "db_password", "aws_secret_key"):
        assert secret not in environment
    assert "MY_AGENT_KEY=agent-key" in environment
    assert "APPGEN_REQUEST_ID=5" in environment


def test_an_unusable_interpreter_is_a_clear_failure(tmp_path, run_logger):
    generator = ProcessGenerator(workspace=tmp_path, python_executable="/nonexistent/python")
    with pytest.raises(GeneratorFailed, match="could not start the generator"):
        generator.run(command_spec(5, "true"), run_logger)
