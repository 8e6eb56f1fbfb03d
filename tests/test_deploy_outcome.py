"""The honest outcome of a publish: ``deployable``, its reason and ``verified`` in the
result, the row, ``appgen --json`` and the CLI's warning; APPGEN_REQUIRE_DEPLOYABLE
and a failed deploy check stop the publish before anything is pushed."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from blocks import defaults
from core.errors import PublishError
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish

APPS = Path(__file__).resolve().parent / "apps"


def use_app(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A `command` agent that writes a corpus app (a trusted test instrument: it copies
    from outside its app dir)."""
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", f"cp -a '{APPS / name}/.' .")


def record(request_id: int):
    return defaults.database(Settings()).get(request_id)


def commits(appgen_home: Path, name: str) -> list[str]:
    bare = appgen_home / "repos" / f"{name}.git"
    assert bare.is_dir(), "the repository is created before the deploy files are rendered"
    result = subprocess.run(
        ["git", "-C", str(bare), "rev-list", "--all"], capture_output=True, text=True
    )
    return result.stdout.split()


@pytest.mark.usefixtures("flow_env")
def test_an_unknown_stack_is_published_as_not_deployable(monkeypatch, tmp_path):
    use_app(monkeypatch, "unknown")
    outcome = generate_and_publish("a C program", app_name="c-thing")
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.request_id is not None and outcome.repo_url is not None
    assert outcome.deploy_reason is not None
    assert outcome.deployable is False and "no scanner matched" in outcome.deploy_reason
    assert outcome.verified is None
    row = record(outcome.request_id)
    assert (row.deployable, row.deploy_reason, row.verified) == (
        False,
        outcome.deploy_reason,
        None,
    )
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", outcome.repo_url, str(clone)], check=True)
    fly = tomllib.loads((clone / "fly.toml").read_text())
    assert "http_service" not in fly and not (clone / "Dockerfile").exists()
    assert "could not prepare this app" in (clone / "DEPLOY.md").read_text()


@pytest.mark.usefixtures("flow_env")
def test_require_deployable_fails_before_anything_is_pushed(monkeypatch, appgen_home):
    use_app(monkeypatch, "unknown")
    monkeypatch.setenv("APPGEN_REQUIRE_DEPLOYABLE", "true")
    with pytest.raises(PublishError, match="APPGEN_REQUIRE_DEPLOYABLE"):
        generate_and_publish("an app of no known kind", request_id=41, app_name="kit")
    row = record(41)
    assert row.status is RequestStatus.FAILED
    assert row.deployable is False and "no scanner matched" in row.deploy_reason
    assert "no scanner matched" in row.error
    assert commits(appgen_home, "kit") == []


def test_the_cli_warns_and_json_carries_the_deploy_fields(appgen):
    env = {
        "APPGEN_AGENT": "command",
        "APPGEN_TRUST_AGENT": "true",
        "APPGEN_AGENT_COMMAND": f"cp -a '{APPS / 'unknown'}/.' .",
    }
    result = appgen("publish", "--prompt", "a C program", "--json", **env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "published" and outcome["deployable"] is False
    assert "no scanner matched" in outcome["deploy_reason"] and outcome["verified"] is None
    assert "not deployable: no scanner matched" in result.stderr
    status = appgen("status", str(outcome["request_id"]), "--json")
    row = json.loads(status.stdout)
    assert (row["deployable"], row["deploy_reason"]) == (False, outcome["deploy_reason"])
    template = appgen("publish", "--prompt", "Build me a counter app", "--json")
    assert json.loads(template.stdout.strip().splitlines()[-1])["deployable"] is True
    assert "not deployable" not in template.stderr


@pytest.fixture
def deploy_base(docker_engine):
    from tests.deploy_images import ensure_deploy_base

    try:
        return ensure_deploy_base(docker_engine)
    except Exception as exc:  # no debootstrap, not root, no mirror
        pytest.skip(f"cannot build the offline base images: {exc}")


@pytest.mark.slow
@pytest.mark.usefixtures("flow_env")
def test_a_failed_deploy_check_is_recorded_and_nothing_is_pushed(
    monkeypatch, appgen_home, deploy_base, tmp_path
):
    app = tmp_path / "broken"
    app.mkdir()
    (app / "Dockerfile").write_text(
        "FROM node:18-slim\nRUN echo broken-build-step && exit 3\nEXPOSE 8080\n"
    )
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", f"cp -a '{app}/.' .")
    monkeypatch.setenv("APPGEN_VERIFY", "build")
    with pytest.raises(PublishError, match="deploy check \\(build\\) failed") as failure:
        generate_and_publish("a broken image", request_id=42, app_name="broken")
    assert "broken-build-step" in str(failure.value)  # the build log tail
    row = record(42)
    assert (row.status, row.deployable, row.verified) == (RequestStatus.FAILED, True, "failed")
    assert commits(appgen_home, "broken") == []


def test_the_summary_says_why_not_deployable_and_what_the_check_found(tmp_path):
    from datetime import UTC, datetime

    from core.models import (
        ArtifactRef,
        DeployCheck,
        DeployFiles,
        GeneratorRun,
        PublishedRepo,
        PublishRequest,
        StagedTree,
    )
    from tasks.publish_summary import summary_markdown

    request = PublishRequest(
        request_id=3, prompt="x", app_name="x", registered_at=datetime.now(UTC)
    )
    generation = GeneratorRun(
        request_id=3, artifact=ArtifactRef(kind="volume", location="/w"), duration_seconds=1
    )
    staged = StagedTree(path=tmp_path, kept_files=1, kept_links=0, kept_bytes=1, excluded=[])
    published = PublishedRepo(name="x", url="file:///x.git", commit_sha="a" * 40, new_commit=True)
    hostile = "the start file [click](http://evil.example) does not exist"
    deploy = DeployFiles(
        framework="node",
        internal_port=None,
        written=["fly.toml"],
        kept_from_generator=[],
        deployable=False,
        deploy_reason=hostile,
        notes=["package.json: dependencies is a list, not an object: ignored"],
    )
    text = summary_markdown(request, generation, staged, deploy, published, [])
    assert "**Not deployable**" in text and f"`{hostile}`" in text  # a code span, not a link
    assert "dependencies is a list" in text
    served = DeployFiles(
        framework="express",
        internal_port=3000,
        written=["Dockerfile"],
        kept_from_generator=[],
        deploy_reason="express server server.js on port 3000",
    )
    check = DeployCheck(mode="smoke", verified="served", seconds=12.5, detail="HTTP 200 on 3000")
    text = summary_markdown(request, generation, staged, served, published, [], deploy_check=check)
    assert "**Deployable**: express app on port 3000" in text
    assert "`APPGEN_VERIFY=smoke`): **served** in 12.5s" in text
