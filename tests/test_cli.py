"""The `appgen` command as a person or a script runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import agent_runs


@pytest.fixture
def appgen(prefect_api: str):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "appgen", *args],
            env=os.environ | {"PREFECT_API_URL": prefect_api} | env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_publish_json_reports_the_repository_and_status_agrees(appgen, appgen_home):
    result = appgen("publish", "--prompt", "Build me a counter app", "--json")
    assert result.returncode == 0, result.stderr
    outcome = last_json(result)
    assert outcome["status"] == "published" and outcome["error"] is None
    assert outcome["repo_url"] == (appgen_home / "repos/counter-app.git").as_uri()
    assert len(outcome["commit_sha"]) == 40
    assert "run_generator" in result.stderr  # progress for people goes to stderr

    status = appgen("status", str(outcome["request_id"]), "--json")
    recorded = last_json(status)
    assert {k: recorded[k] for k in ("status", "repo_url", "commit_sha")} == {
        k: outcome[k] for k in ("status", "repo_url", "commit_sha")
    }
    table = appgen("status")
    assert "counter-app" in table.stdout and "published" in table.stdout


def test_a_failed_publish_is_a_clear_message_and_exit_1_then_a_rerun_finishes_it(
    appgen, tmp_path, counting_agent
):
    (tmp_path / "file").write_text("")
    failed = appgen(
        "publish",
        "--prompt",
        "a blog",
        "--request-id",
        "21",
        "--json",
        APPGEN_GIT_ROOT=str(tmp_path / "file/repos"),
    )
    assert failed.returncode == 1
    outcome = last_json(failed)
    assert (outcome["request_id"], outcome["status"]) == (21, "failed")
    assert "point APPGEN_GIT_ROOT at a writable directory" in outcome["error"]
    assert "request 21 failed:" in failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout

    done = appgen("publish", "--prompt", "a blog", "--request-id", "21", "--json")
    assert done.returncode == 0, done.stderr
    assert last_json(done)["status"] == "published"
    assert agent_runs(counting_agent) == ["21"]


def test_a_failing_generator_exits_1_without_a_traceback(appgen):
    result = appgen(
        "publish",
        "--prompt",
        "a shop",
        "--json",
        APPGEN_AGENT="command",
        APPGEN_AGENT_COMMAND="echo out of tokens; exit 7",
    )
    assert result.returncode == 1
    outcome = last_json(result)
    assert outcome["status"] == "failed" and "out of tokens" in outcome["error"]
    assert "Traceback" not in result.stderr
    assert "prefect flow-run logs" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["publish", "--prompt", ""], {}, "the prompt is empty"),
        (["publish", "--prompt", "x", "--app-name", "bad/name"], {}, "not a safe repository"),
        (["publish", "--prompt", "x", "--request-id", "0"], {}, "must be a positive integer"),
        (["publish"], {}, "the following arguments are required: --prompt"),
        (["publish", "--prompt", "x"], {"APPGEN_GENERATOR": "kubernetes"}, "APPGEN_GENERATOR"),
        (["publish", "--prompt", "x"], {"APPGEN_AGENT": "command"}, "APPGEN_AGENT_COMMAND"),
        (["publish", "--prompt", "x"], {"APPGEN_GENERATOR": "ecs"}, "APPGEN_ECS_CLUSTER"),
        (["publish", "--prompt", "x"], {"APPGEN_GIT_HOST": "github"}, "APPGEN_GITHUB_OWNER"),
        (["status", "99"], {}, "no request 99"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_creates_nothing(
    appgen, appgen_home, args, env, message
):
    result = appgen(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    created = [p.name for p in appgen_home.iterdir()] if appgen_home.exists() else []
    assert set(created) <= (
        {"appgen.db", "appgen.db.migrate.lock"} if args[0] == "status" else set()
    )


def test_status_with_no_requests(appgen):
    result = appgen("status", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_module_entry_points_agree():
    help_text = subprocess.run(
        [sys.executable, "-m", "appgen", "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "publish" in help_text.stdout
    script = Path(sys.executable).with_name("appgen")
    if script.exists():  # installed with `pip install -e .`
        assert subprocess.run([str(script), "--help"], capture_output=True).returncode == 0
