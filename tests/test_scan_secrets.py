"""The secret scan in the flow: APPGEN_SECRET_SCAN=block stops a publish before the
repository exists, warn publishes and reports, off skips; a planted key is never in
the message, the log, the row, the summary or a stored result; a re-run after the
app is fixed reuses the generation; GitHub's own push protection (GH013) is named.

Keys are assembled at run time (here and inside the agents' shell commands), so no
complete key is in this file, in an agent's command line or in its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from blocks import defaults
from core.errors import PushProtectionRejected, SecretsFound
from core.git import push_protection_rejection
from core.models import RequestStatus, SecretFinding
from core.settings import Settings
from flows.publish import generate_and_publish
from tests.conftest import agent_runs, flow_run_logs, generation_of, require_sandbox

# A GitHub token, in two halves that are joined only in the generated file.
TOKEN_HEAD, TOKEN_TAIL = "gh", "p_Q7fK2mZp9XwL4tRb8NcV1yHs6DgJ3uEa0a1b"
TOKEN = TOKEN_HEAD + TOKEN_TAIL
ANTHROPIC_HEAD, ANTHROPIC_TAIL = "sk-ant-", "api03-" + "Zp9XwL4tRb8NcV1yHs6DgJ3uEaQ7fK2m" * 3


def plant(path: str, head: str, tail: str, line: str = 'export const key = "%s%s";') -> str:
    """Shell that writes ``line`` with the two halves of a key joined into ``path``."""
    directory = os.path.dirname(path) or "."
    return f"mkdir -p '{directory}' && printf '{line}\\n' '{head}' '{tail}' > '{path}'"


def trusted_agent(monkeypatch, counter: Path, *planting: str) -> None:
    """The template app, counted, then ``planting`` commands (an unconfined agent)."""
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    steps = [
        f'echo "$APPGEN_REQUEST_ID" >> "{counter}"',
        f'"{sys.executable}" -m generator --agent template',
        *planting,
    ]
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", " && ".join(steps))


def record(request_id: int):
    return defaults.database(Settings()).get(request_id)


def files_holding(root: Path, value: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]


def logs_mentioning(flow_run_id: str, text: str, timeout: float = 15.0) -> list[str]:
    """The run's log messages, once one of them mentions ``text`` (logs arrive in
    batches); fails if none does in time."""
    deadline = time.monotonic() + timeout
    while True:
        messages = flow_run_logs([flow_run_id], timeout=1.0)
        if any(text in m for m in messages):
            return messages
        assert time.monotonic() < deadline, f"no log line mentions {text!r}: {messages}"
        time.sleep(0.3)


def summary_of(request_id: int) -> str:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"appgen-request-{request_id}"])
            )
        )
    return "\n".join(str(a.data) for a in artifacts)


@pytest.mark.usefixtures("flow_env")
def test_block_stops_a_sandboxed_agents_key_before_the_repository_exists(
    monkeypatch, appgen_home, tmp_path
):
    require_sandbox()
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        "printf 'console.log(1)\\n' > index.js && "
        + plant("src/config/github.js", TOKEN_HEAD, TOKEN_TAIL, line='// x\\nconst t = "%s%s";'),
    )
    with pytest.raises(SecretsFound) as raised:
        generate_and_publish("a counter app", request_id=31)
    error = raised.value
    assert error.findings == [
        SecretFinding(path="src/config/github.js", line=2, rule="GitHub token")
    ]
    assert "src/config/github.js:2 (GitHub token)" in str(error)
    assert "nothing was created or pushed" in str(error)

    row = record(31)
    assert row.status is RequestStatus.FAILED
    assert "src/config/github.js:2 (GitHub token)" in row.error
    assert row.repo_url is None
    repos = appgen_home / "repos"
    assert not repos.exists() or list(repos.iterdir()) == []

    # The key is only in the generated app, nowhere the orchestrator wrote.
    assert TOKEN not in str(error) and TOKEN not in row.model_dump_json()
    logs = logs_mentioning(row.flow_run_id, "src/config/github.js:2")
    assert not [m for m in logs if TOKEN in m]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(row.flow_run_id)).state
    assert state is not None
    assert TOKEN not in (state.message or "")
    assert files_holding(tmp_path / "results", TOKEN) == []
    assert files_holding(appgen_home, TOKEN) == [
        generation_of(appgen_home / "workspace", 31) / "app/src/config/github.js"
    ]


@pytest.mark.usefixtures("flow_env")
def test_a_rerun_after_the_app_is_fixed_publishes_without_generating_again(
    monkeypatch, appgen_home, tmp_path, tmp_path_factory
):
    counter = tmp_path / "agent-runs"
    trusted_agent(monkeypatch, counter, plant("config.js", ANTHROPIC_HEAD, ANTHROPIC_TAIL))
    with pytest.raises(SecretsFound, match=r"config\.js:1 \(Anthropic API key\)"):
        generate_and_publish("a counter app", request_id=32)
    assert record(32).status is RequestStatus.FAILED

    planted = generation_of(appgen_home / "workspace", 32) / "app/config.js"
    planted.write_text("export const key = process.env.ANTHROPIC_API_KEY;\n")
    outcome = generate_and_publish("a counter app", request_id=32)

    assert outcome.status is RequestStatus.PUBLISHED and outcome.secret_findings == []
    assert agent_runs(counter) == ["32"]  # generated once, for both runs
    assert outcome.repo_url is not None
    clone = tmp_path_factory.mktemp("clone") / "app"
    subprocess.run(["git", "clone", "-q", outcome.repo_url, str(clone)], check=True)
    assert (clone / "config.js").read_text() == planted.read_text()
    assert files_holding(clone, ANTHROPIC_HEAD + ANTHROPIC_TAIL) == []
    assert (record(32).status, record(32).error) == (RequestStatus.PUBLISHED, None)


@pytest.mark.usefixtures("flow_env")
def test_the_agents_own_key_written_into_the_app_is_blocked(monkeypatch, tmp_path):
    """A key the orchestrator passes to the agent (APPGEN_AGENT_ENV) has no known
    shape: its exact value is looked for."""
    monkeypatch.setenv("MODEL_SERVICE_TOKEN", "msvc-7f3e9a1c5b2d4e6f8a0c")
    monkeypatch.setenv("APPGEN_AGENT_ENV", '["MODEL_SERVICE_TOKEN"]')
    trusted_agent(
        monkeypatch,
        tmp_path / "runs",
        "printf 'TOKEN=%s\\n' \"$MODEL_SERVICE_TOKEN\" > .env.example",
    )
    with pytest.raises(SecretsFound) as raised:
        generate_and_publish("a counter app", request_id=33)
    assert [str(f) for f in raised.value.findings] == [
        ".env.example:1 (a secret the orchestrator holds (MODEL_SERVICE_TOKEN))"
    ]
    assert "msvc-7f3e9a1c5b2d4e6f8a0c" not in str(raised.value)


@pytest.mark.usefixtures("flow_env")
def test_warn_publishes_and_lists_the_findings_in_the_outcome_and_the_summary(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("APPGEN_SECRET_SCAN", "warn")
    trusted_agent(
        monkeypatch,
        tmp_path / "runs",
        plant("config/deploy/settings.json", TOKEN_HEAD, TOKEN_TAIL, line='{"token": "%s%s"}'),
    )
    outcome = generate_and_publish("a counter app", request_id=734)
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.secret_findings == [
        SecretFinding(path="config/deploy/settings.json", line=1, rule="GitHub token")
    ]
    summary = summary_of(734)
    assert "### Secret scan" in summary
    assert "| `config/deploy/settings.json` | 1 | GitHub token |" in summary
    assert "published anyway" in summary and TOKEN not in summary
    row = record(734)
    logs = logs_mentioning(row.flow_run_id, "config/deploy/settings.json:1 (GitHub token)")
    assert not [m for m in logs if TOKEN in m]
    assert files_holding(tmp_path / "results", TOKEN) == []


@pytest.mark.usefixtures("flow_env")
def test_off_skips_the_scan(monkeypatch, tmp_path):
    monkeypatch.setenv("APPGEN_SECRET_SCAN", "off")
    trusted_agent(monkeypatch, tmp_path / "runs", plant("a.js", TOKEN_HEAD, TOKEN_TAIL))
    outcome = generate_and_publish("a counter app", request_id=735)
    assert outcome.status is RequestStatus.PUBLISHED and outcome.secret_findings == []
    assert "Skipped" in summary_of(735)


@pytest.mark.usefixtures("flow_env")
def test_on_github_block_creates_no_repository_and_sends_no_push(github, monkeypatch, tmp_path):
    trusted_agent(monkeypatch, tmp_path / "runs", plant("src/a.js", TOKEN_HEAD, TOKEN_TAIL))
    with pytest.raises(SecretsFound, match=r"src/a\.js:1"):
        generate_and_publish("a counter app", request_id=36)
    assert github.repos == {}
    assert github.api_calls("POST", "/repos") == 0
    assert [path for _, path, _ in github.requests if ".git/" in path] == []


@pytest.mark.usefixtures("flow_env")
def test_githubs_push_protection_is_reported_as_gh013_with_its_paths(github, monkeypatch, tmp_path):
    """With appgen's scan off, GitHub's own push protection refuses the push."""
    github.push_protection = {"GitHub Personal Access Token": r"ghp_[A-Za-z0-9]{36}"}
    monkeypatch.setenv("APPGEN_SECRET_SCAN", "off")
    trusted_agent(monkeypatch, tmp_path / "runs", plant("server/config.js", TOKEN_HEAD, TOKEN_TAIL))
    with pytest.raises(PushProtectionRejected) as raised:
        generate_and_publish("a counter app", request_id=37)
    error = raised.value
    assert error.paths == ["server/config.js:1"]
    assert str(error).startswith("GitHub push protection (GH013) rejected the push to ")
    assert "(GitHub Personal Access Token) at server/config.js:1" in str(error)
    assert TOKEN not in str(error)
    assert "GH013" in record(37).error
    bare = github.bare_path("acme", "counter-app")
    heads = subprocess.run(
        ["git", f"--git-dir={bare}", "for-each-ref", "refs/heads"], capture_output=True, text=True
    )
    assert heads.stdout == ""  # nothing landed


def test_a_gh013_answer_is_parsed_and_any_other_failure_is_not():
    stderr = (
        "remote: error: GH013: Repository rule violations found for refs/heads/main.\n"
        "remote: \n"
        "remote: - GITHUB PUSH PROTECTION\n"
        "remote:   —————————————————————————————————————————\n"
        "remote:     Resolve the following violations before pushing again\n"
        "remote: \n"
        "remote:       —— GitHub Personal Access Token ——————————————————————\n"
        "remote:        locations:\n"
        "remote:          - commit: 8728dbe67fb1e4b27ffd3e0de5ccb2a7ee8f1fc9\n"
        "remote:            path: config.js:3\n"
        "remote:          - commit: 8728dbe67fb1e4b27ffd3e0de5ccb2a7ee8f1fc9\n"
        "remote:            path: lib/a.js:1\n"
        "remote: \n"
        "remote:       —— Stripe API Key ——————————————————————\n"
        "remote:        locations:\n"
        "remote:          - commit: 8728dbe67fb1e4b27ffd3e0de5ccb2a7ee8f1fc9\n"
        "remote:            path: config.js:3\n"
        "To https://github.com/acme/app.git\n"
        " ! [remote rejected] main -> main (push declined due to repository rule violations)\n"
    )
    error = push_protection_rejection("https://github.com/acme/app", stderr)
    assert isinstance(error, PushProtectionRejected)
    assert error.paths == ["config.js:3", "lib/a.js:1"]
    assert "(GitHub Personal Access Token, Stripe API Key) at config.js:3, lib/a.js:1" in str(error)
    assert push_protection_rejection("u", "remote: error: denied by a hook\n") is None


def test_cli_block_exits_1_with_the_findings_in_json_and_no_key_anywhere(
    appgen, monkeypatch, tmp_path
):
    trusted_agent(monkeypatch, tmp_path / "runs", plant(".env.example", TOKEN_HEAD, TOKEN_TAIL))
    result = appgen("publish", "--prompt", "a counter app", "--request-id", "38", "--json")
    assert result.returncode == 1, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "failed" and outcome["repo_url"] is None
    assert outcome["secret_findings"] == [
        {"path": ".env.example", "line": 1, "rule": "GitHub token"}
    ]
    assert ".env.example:1 (GitHub token)" in result.stderr
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_cli_warn_lists_the_findings_in_json(appgen, monkeypatch, tmp_path):
    monkeypatch.setenv("APPGEN_SECRET_SCAN", "warn")
    trusted_agent(monkeypatch, tmp_path / "runs", plant("a.js", TOKEN_HEAD, TOKEN_TAIL))
    result = appgen("publish", "--prompt", "a counter app", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "published"
    assert outcome["secret_findings"] == [{"path": "a.js", "line": 1, "rule": "GitHub token"}]
    assert "a.js:1 (GitHub token), published anyway" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.usefixtures("flow_env")
def test_a_key_pasted_into_the_prompt_never_reaches_the_commit_message(github):
    prompt = f"a counter app; deploy with token {TOKEN}"
    with pytest.raises(SecretsFound, match=r"\(the prompt, in the commit message\):1") as found:
        generate_and_publish(prompt, request_id=737, app_name="counter")
    assert TOKEN not in str(found.value)
    assert github.repos == {}
    assert [path for _, path, _ in github.requests if ".git/" in path] == []
