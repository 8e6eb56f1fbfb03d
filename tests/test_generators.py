"""The process generator block: streaming, timeouts, failures, and what it may see."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocks.generators import ProcessGenerator
from core.errors import GeneratorFailed
from core.models import GenerationSpec


def spec(command: str, request_id: int = 5) -> GenerationSpec:
    return GenerationSpec(
        request_id=request_id,
        registered_at=datetime.now(UTC),
        prompt="an app",
        agent="command",
        agent_command=command,
    )


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.LoggerAdapter:
    caplog.set_level(logging.INFO, logger="test.generator")
    return logging.LoggerAdapter(logging.getLogger("test.generator"), {})


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_writes_into_the_workspace_and_returns_the_app_dir(tmp_path, logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    run = generator.run(spec("echo hello > index.html"), logger)
    app = tmp_path / "ws/5/app"
    assert run.artifact.kind == "volume" and Path(run.artifact.location) == app
    assert (app / "index.html").read_text() == "hello\n"


def test_a_new_generation_starts_from_an_empty_directory(tmp_path, logger):
    generator = ProcessGenerator(workspace=tmp_path / "ws")
    generator.run(spec("touch old.txt"), logger)
    generator.run(spec("touch new.txt"), logger)
    assert sorted(p.name for p in (tmp_path / "ws/5/app").iterdir()) == ["new.txt"]


def test_output_lines_reach_the_log_as_they_come(tmp_path, logger, caplog):
    generator = ProcessGenerator(workspace=tmp_path)
    generator.run(spec("echo first; sleep 1; echo second"), logger)
    times = {r.getMessage(): r.created for r in caplog.records}
    assert times["second"] - times["first"] > 0.8  # logged while the agent was still running


def test_a_non_zero_exit_fails_with_the_last_lines(tmp_path, logger):
    generator = ProcessGenerator(workspace=tmp_path)
    with pytest.raises(GeneratorFailed) as failure:
        generator.run(spec("for i in $(seq 1 40); do echo line $i; done; exit 9"), logger)
    message = str(failure.value)
    assert "generator for request 5 exited with code 1" in message
    assert "exited with code 9" in message  # the agent's own reason, from stderr
    assert "line 40" in message and "line 10\n" not in message


def test_a_timeout_kills_the_whole_process_group(tmp_path, logger):
    generator = ProcessGenerator(workspace=tmp_path, timeout_seconds=1.5)
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(GeneratorFailed, match=r"timed out after 1.5s and was killed"):
        generator.run(spec(f"sleep 300 & echo $! > {pid_file}; echo waiting; wait"), logger)
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)


def test_the_generator_sees_no_credentials_only_its_allow_list(tmp_path, logger, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret_token")
    monkeypatch.setenv("APPGEN_DATABASE_URL", "postgresql://u:db_password@h/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_key")
    monkeypatch.setenv("MY_AGENT_KEY", "agent-key")
    generator = ProcessGenerator(workspace=tmp_path, env_allowlist=["MY_AGENT_KEY"])
    generator.run(spec("env > environment.txt"), logger)
    environment = (tmp_path / "5/app/environment.txt").read_text()
    for secret in ("ghp_secret_token", "db_password", "aws_secret_key"):
        assert secret not in environment
    assert "MY_AGENT_KEY=agent-key" in environment
    assert "APPGEN_REQUEST_ID=5" in environment


def test_an_unusable_interpreter_is_a_clear_failure(tmp_path, logger):
    generator = ProcessGenerator(workspace=tmp_path, python_executable="/nonexistent/python")
    with pytest.raises(GeneratorFailed, match="could not start the generator"):
        generator.run(spec("true"), logger)
