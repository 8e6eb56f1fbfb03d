"""generate_and_publish end to end, called from Python against a Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks import defaults
from core.errors import GeneratorFailed, InvalidRequest, PublishError
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish
from tests.conftest import agent_runs, generation_of, require_sandbox

pytestmark = pytest.mark.usefixtures("flow_env")
TEMPLATE_AGENT = f'"{sys.executable}" -m generator --agent template'


def clone(url: str, into: Path) -> Path:
    subprocess.run(["git", "clone", "-q", url, str(into)], check=True)
    return into


def tracked(repo: Path) -> list[str]:
    return subprocess.run(
        ["git", "-C", str(repo), "ls-files"], check=True, capture_output=True, text=True
    ).stdout.split()


def record(request_id: int):
    return defaults.database(Settings()).get(request_id)


def test_a_prompt_becomes_a_published_repository_and_a_row(tmp_path, appgen_home):
    outcome = generate_and_publish("Build me a counter app")
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.repo_url == (appgen_home / "repos/counter-app.git").as_uri()
    assert outcome.repo_url is not None and outcome.request_id is not None
    files = tracked(clone(outcome.repo_url, tmp_path / "clone"))
    assert {
        "package.json",
        "server.js",
        "public/index.html",
        "fly.toml",
        "Dockerfile",
        ".dockerignore",
        ".gitignore",
        "README.md",
    } <= set(files)
    row = record(outcome.request_id)
    assert (row.status, row.repo_url, row.commit_sha, row.error) == (
        RequestStatus.PUBLISHED,
        outcome.repo_url,
        outcome.commit_sha,
        None,
    )
    assert row.flow_run_id


def test_a_failed_push_is_finished_by_a_rerun_without_generating_again(
    tmp_path, monkeypatch, counting_agent, appgen_home
):
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "not-a-dir/repos"))
    with pytest.raises(PublishError, match="APPGEN_GIT_ROOT"):
        generate_and_publish("a recipe book", request_id=11)
    failed = record(11)
    assert failed.status is RequestStatus.FAILED and "APPGEN_GIT_ROOT" in failed.error

    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "repos"))
    outcome = generate_and_publish("a recipe book", request_id=11)
    assert outcome.status is RequestStatus.PUBLISHED
    assert agent_runs(counting_agent) == ["11"]  # the agent ran once, for both runs
    row = record(11)
    assert (row.status, row.error) == (RequestStatus.PUBLISHED, None)


def test_regenerate_runs_the_agent_again_and_an_unchanged_app_makes_no_commit(counting_agent):
    first = generate_and_publish("a recipe book", request_id=3)
    second = generate_and_publish("a recipe book", request_id=3, regenerate=True)
    assert agent_runs(counting_agent) == ["3", "3"]
    assert second.commit_sha == first.commit_sha


def test_a_new_prompt_for_the_same_request_generates_again_into_the_same_repository(
    counting_agent,
):
    first = generate_and_publish("a recipe book", request_id=4, app_name="recipes")
    second = generate_and_publish("a recipe book with ratings", request_id=4)
    assert agent_runs(counting_agent) == ["4", "4"]
    assert second.repo_url == first.repo_url
    assert second.commit_sha != first.commit_sha


def test_a_failing_agent_fails_the_request_and_creates_no_repository(monkeypatch, appgen_home):
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", "echo 'npm ERR! missing script'; exit 1")
    with pytest.raises(GeneratorFailed, match="exited with code 1"):
        generate_and_publish("a broken app", request_id=5)
    row = record(5)
    assert row.status is RequestStatus.FAILED
    assert "npm ERR! missing script" in row.error
    assert not (appgen_home / "repos").exists() or not any((appgen_home / "repos").iterdir())


def test_two_requests_for_the_same_name_get_their_own_repositories(counting_agent):
    first = generate_and_publish("Build me a counter app")
    second = generate_and_publish("Build me a counter app")
    again = generate_and_publish("Build me a counter app", request_id=second.request_id)
    assert first.repo_url is not None and second.repo_url is not None
    assert second.request_id is not None
    assert first.repo_url.endswith("/counter-app.git")
    assert second.repo_url.endswith("/counter-app-2.git")
    assert (again.repo_url, again.commit_sha) == (second.repo_url, second.commit_sha)
    # the name the host chose, everywhere: the outcome (--json), the row (status)
    assert (second.app_name, again.app_name) == ("counter-app-2", "counter-app-2")
    assert record(second.request_id).app_name == "counter-app-2"


def test_a_seed_shaped_workspace_publishes_nothing_that_is_excluded(
    tmp_path, monkeypatch, seed_workspace
):
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", f"cp -a '{seed_workspace}/.' .")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")  # it copies from outside its app dir
    outcome = generate_and_publish("a counter with a server", app_name="counter-app")
    assert outcome.repo_url is not None
    repo = clone(outcome.repo_url, tmp_path / "clone")
    files = tracked(repo)
    assert "server/src/config/default.json" in files and "client/package.json" in files
    leaked = [
        f
        for f in files
        if any(
            part in f
            for part in ("node_modules", "dist/", "coverage/", ".log", ".env.local", "session.tmp")
        )
    ]
    assert leaked == []
    secrets = subprocess.run(
        ["git", "-C", str(repo), "grep", "-l", "DO-NOT-COMMIT", "HEAD"],
        capture_output=True,
        text=True,
    )
    assert secrets.stdout == ""
    link = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-s", "server/src/config/constants.js"],
        capture_output=True,
        text=True,
    )
    assert link.stdout.startswith("120000")  # still a symlink


def test_staging_dirs_are_removed_after_success_and_failure(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.utime(scratch, (0, 0))
    monkeypatch.setenv("APPGEN_STAGING_DIR", str(scratch))
    generate_and_publish("a counter", request_id=8)
    assert scratch.stat().st_mtime > 0  # a staging dir was made here…
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "blocked/repos"))
    with pytest.raises(PublishError):
        generate_and_publish("a counter", request_id=8)
    assert list(scratch.iterdir()) == []  # …and removed, after success and after failure


@pytest.mark.parametrize(
    ("prompt", "app_name", "message"),
    [("   ", None, "the prompt is empty"), ("a counter", "../escape", "not a safe repository")],
)
def test_bad_inputs_are_refused_before_anything_is_created(prompt, app_name, message, appgen_home):
    with pytest.raises(InvalidRequest, match=message):
        generate_and_publish(prompt, app_name=app_name)
    assert defaults.database(Settings()).all() == []
    assert not (appgen_home / "repos").exists()
    assert not (appgen_home / "workspace").exists()


def test_the_source_workspace_is_never_modified(appgen_home):
    from tests.conftest import tree_digest

    outcome = generate_and_publish("a counter", request_id=9)
    app = generation_of(appgen_home / "workspace", 9) / "app"
    before = tree_digest(app)
    generate_and_publish("a counter", request_id=9)
    assert tree_digest(app) == before
    assert os.listdir(app) and outcome.status is RequestStatus.PUBLISHED


def test_a_saved_generator_block_overrides_the_settings(tmp_path, appgen_home):
    from blocks.generators import ProcessGenerator

    elsewhere = tmp_path / "saved-workspace"
    ProcessGenerator(workspace=elsewhere).save("elsewhere", overwrite=True)
    outcome = generate_and_publish(
        "a counter", request_id=12, generator_block="appgen-process-generator/elsewhere"
    )
    assert outcome.status is RequestStatus.PUBLISHED
    assert (generation_of(elsewhere, 12) / "app/package.json").exists()
    assert not (appgen_home / "workspace/12").exists()


def test_an_unknown_saved_block_is_a_clear_error():
    with pytest.raises(InvalidRequest, match="no saved block 'appgen-process-generator/nope'"):
        generate_and_publish("a counter", generator_block="appgen-process-generator/nope")


def test_a_request_id_reused_by_a_new_database_is_generated_afresh(counting_agent, appgen_home):
    generate_and_publish("a counter", request_id=1, app_name="first")
    (appgen_home / "appgen.db").unlink()  # a fresh database hands out id 1 again
    outcome = generate_and_publish("a counter", request_id=1, app_name="second")
    assert outcome.status is RequestStatus.PUBLISHED
    assert agent_runs(counting_agent) == ["1", "1"]


def test_changing_limits_between_a_failure_and_its_rerun_does_not_generate_again(
    tmp_path, monkeypatch, counting_agent
):
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "not-a-dir/repos"))
    with pytest.raises(PublishError):
        generate_and_publish("a recipe book", request_id=13)
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "repos"))
    monkeypatch.setenv("APPGEN_GENERATOR_TIMEOUT", "900")  # limits are not the output
    monkeypatch.setenv("APPGEN_GENERATOR_SLOTS", "2")
    monkeypatch.setenv("APPGEN_LEASE_SECONDS", "30")
    assert generate_and_publish("a recipe book", request_id=13).status is RequestStatus.PUBLISHED
    assert agent_runs(counting_agent) == ["13"]


def test_the_summary_says_how_the_agent_was_confined(monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    require_sandbox()
    generate_and_publish("a counter", request_id=14)
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", TEMPLATE_AGENT)
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    generate_and_publish("a counter", request_id=15)
    summaries: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for key in ("appgen-request-14", "appgen-request-15"):
            data = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
            )[0].data
            assert isinstance(data, str), f"{key}: a markdown artifact"
            summaries[key] = data
    assert (
        "The agent ran in a bubblewrap sandbox without a network." in summaries["appgen-request-14"]
    )
    assert "The agent ran UNCONFINED (APPGEN_TRUST_AGENT=true)." in summaries["appgen-request-15"]


def test_a_run_stopped_after_recording_its_push_leaves_the_row_published(monkeypatch):
    """Ctrl-C (or a kill) while the summary is written: the push landed and the row
    says so; the stop must not rewrite it as cancelled, and the claim is released."""
    import flows.publish
    from tasks.publish_summary import publish_summary as real_summary

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flows.publish, "publish_summary", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_and_publish("Build me a counter app", request_id=3)
    row = record(3)
    assert (row.status, row.error) == (RequestStatus.PUBLISHED, None)
    assert row.commit_sha and row.claimed_by is None
    # Nothing is held: the request publishes again at once. (Not monkeypatch.undo(),
    # which would also undo this test's APPGEN_HOME and publish into ~/.appgen.)
    monkeypatch.setattr(flows.publish, "publish_summary", real_summary)
    assert generate_and_publish("a counter", request_id=3).status is RequestStatus.PUBLISHED
