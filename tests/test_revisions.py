"""Revisions: follow-up prompts build on what the repository holds, as one more commit
each, on main or on the request's one pull request; a person's commits and edits
survive; a failed revision resumes without running its agent again; two at once
land one after the other."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blocks import defaults
from core.errors import PublishError
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish
from flows.revise import revise_app
from tests.conftest import agent_runs, latest_artifact

pytestmark = pytest.mark.usefixtures("flow_env")


@pytest.fixture
def editing_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `command` agent that writes the template app when the directory is empty,
    then adds its prompt as a line of FEATURES.md and keeps the prompt history it was
    given in history.json. It records each run outside its app dir (trusted)."""
    runs = tmp_path / "agent-runs"
    script = tmp_path / "agent.sh"
    script.write_text(
        f'echo "$APPGEN_REQUEST_ID" >> "{runs}"\n'
        f'[ -f server.js ] || "{sys.executable}" -m generator --agent template\n'
        'echo "- $APPGEN_PROMPT" >> FEATURES.md\n'
        'cp "$APPGEN_PROMPT_HISTORY" history.json\n'
        "sleep ${AGENT_SLEEP:-0}\n"
    )
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", f"sh {script}")
    return runs


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def clone(url: str, into: Path, branch: str = "main") -> Path:
    git("clone", "-q", "--branch", branch, url, str(into))
    git("config", "user.name", "A Person", cwd=into)
    git("config", "user.email", "person@example.test", cwd=into)
    return into


def subjects(repo: Path) -> list[str]:
    return git("log", "--format=%s", cwd=repo).splitlines()[::-1]


def revisions(request_id: int):
    return defaults.database(Settings()).revisions(request_id)


def summary(request_id: int) -> str:
    """The newest run summary of the request (a markdown artifact)."""
    return latest_artifact(f"appgen-request-{request_id}")


def test_follow_ups_are_commits_on_main_that_keep_a_persons_work(editing_agent, tmp_path):
    first = generate_and_publish("a counter app", request_id=41)
    second = revise_app(41, "add a reset button")
    assert (second.revision, second.repo_url, second.changed) == (2, first.repo_url, True)
    assert second.repo_url is not None
    repo = clone(second.repo_url, tmp_path / "person")
    assert (repo / "FEATURES.md").read_text() == "- a counter app\n- add a reset button\n"
    assert json.loads((repo / "history.json").read_text()) == ["a counter app"]

    # A person commits a file of their own and edits fly.toml, between revisions.
    (repo / "NOTES.md").write_text("written by a person\n")
    with open(repo / "fly.toml", "a") as fly:
        fly.write("\n# tuned by a person\n")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "A person's change", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)

    third = revise_app(41, "add dark mode")
    assert third.revision == 3
    git("pull", "-q", "--ff-only", cwd=repo)
    assert subjects(repo) == [
        "Publish request 41: counter-app",
        "Revise request 41 (revision 2): counter-app",
        "A person's change",
        "Revise request 41 (revision 3): counter-app",
    ]
    assert git("rev-parse", "HEAD", cwd=repo) == third.commit_sha
    assert (repo / "NOTES.md").read_text() == "written by a person\n"
    assert (repo / "fly.toml").read_text().endswith("# tuned by a person\n")
    assert (repo / "FEATURES.md").read_text().splitlines()[-1] == "- add dark mode"
    assert json.loads((repo / "history.json").read_text()) == [
        "a counter app",
        "add a reset button",
    ]
    readme = (repo / "README.md").read_text()
    assert readme.count("## Deploy") == 1  # rendered again, not appended twice
    shown = summary(41)
    assert "## Request 41, revision 3: counter-app" in shown
    assert "Asked: `add dark mode`" in shown
    assert f"revision 2 (commit `{(second.commit_sha or '')[:12]}`" in shown
    assert "edited since appgen wrote them: `fly.toml`" in shown
    assert agent_runs(editing_agent) == ["41"] * 3

    rows = revisions(41)
    assert [(r.revision, r.status, r.prompt) for r in rows] == [
        (1, RequestStatus.PUBLISHED, "a counter app"),
        (2, RequestStatus.PUBLISHED, "add a reset button"),
        (3, RequestStatus.PUBLISHED, "add dark mode"),
    ]
    assert rows[1].base_commit == first.commit_sha
    assert rows[2].commit_sha == third.commit_sha
    assert "fly.toml" not in (rows[2].rendered.files if rows[2].rendered else {})
    request = defaults.database(Settings()).get(41)
    assert request is not None
    assert (request.status, request.revision, request.commit_sha) == (
        RequestStatus.PUBLISHED,
        3,
        third.commit_sha,
    )


def test_a_revision_that_changes_nothing_makes_no_commit(monkeypatch, tmp_path):
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        f'[ -f server.js ] || "{sys.executable}" -m generator --agent template',
    )
    first = generate_and_publish("a counter app", request_id=42)
    again = revise_app(42, "change nothing at all")
    assert (again.changed, again.commit_sha) == (False, first.commit_sha)
    assert revisions(42)[-1].changed is False
    assert "**Revision 2 changed nothing**: no commit was made." in summary(42)


def test_a_revision_whose_push_failed_resumes_without_running_its_agent(editing_agent, appgen_home):
    generate_and_publish("a counter app", request_id=43)
    bare = appgen_home / "repos/counter-app.git"
    hooks = bare / "refusing-hooks"
    hooks.mkdir()
    (hooks / "pre-receive").write_text("#!/bin/sh\necho 'refused for the test' >&2\nexit 1\n")
    (hooks / "pre-receive").chmod(0o755)
    git("config", "--file", str(bare / "config"), "core.hooksPath", str(hooks))
    with pytest.raises(PublishError, match="refused for the test"):
        revise_app(43, "add a reset button")
    failed = revisions(43)[-1]
    assert (failed.revision, failed.status) == (2, RequestStatus.FAILED)
    assert "refused for the test" in (failed.error or "")

    git("config", "--file", str(bare / "config"), "core.hooksPath", "/dev/null")
    resumed = revise_app(43, "add a reset button")
    assert resumed.revision == 2  # the same revision, not a third
    assert agent_runs(editing_agent) == ["43", "43"]  # the first publish, then once
    assert [r.status for r in revisions(43)] == [RequestStatus.PUBLISHED] * 2


def test_two_revisions_at_once_land_one_after_the_other(editing_agent, monkeypatch, tmp_path):
    first = generate_and_publish("a counter app", request_id=44)
    monkeypatch.setenv("AGENT_SLEEP", "2")
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(lambda prompt: revise_app(44, prompt), ["add a reset button", "add a log"])
        )
    assert sorted(o.revision or 0 for o in outcomes) == [2, 3]
    assert agent_runs(editing_agent) == ["44"] * 3  # the first publish and one each
    assert first.repo_url is not None
    repo = clone(first.repo_url, tmp_path / "clone")
    features = (repo / "FEATURES.md").read_text().splitlines()
    assert features[0] == "- a counter app"
    assert sorted(features[1:]) == ["- add a log", "- add a reset button"]  # both kept
    rows = revisions(44)
    assert rows[2].base_commit == rows[1].commit_sha  # the second built on the first
    assert len(subjects(repo)) == 3


def test_revising_an_unknown_or_unpublished_request_is_a_usage_error(appgen, appgen_home):
    unknown = appgen("revise", "999", "--prompt", "add a button")
    assert unknown.returncode == 2, unknown.stderr
    assert "no request 999" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_cli_revise_prints_the_revision_and_status_lists_them(appgen, editing_agent):
    published = appgen("publish", "--prompt", "a counter app", "--request-id", "45", "--json")
    assert published.returncode == 0, published.stderr
    revised = appgen("revise", "45", "--prompt", "add a reset button", "--json")
    assert revised.returncode == 0, revised.stderr
    result = json.loads(revised.stdout.splitlines()[-1])
    assert (result["revision"], result["status"], result["changed"]) == (2, "published", True)
    assert "revised request 45, revision 2" in revised.stderr
    status = appgen("status", "45", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["revision"] == 2
    assert [(r["revision"], r["prompt"]) for r in shown["revisions"]] == [
        (1, "a counter app"),
        (2, "add a reset button"),
    ]
    table = appgen("status", "45")
    assert "revisions" in table.stdout and "add a reset button" in table.stdout


def test_publishing_a_revised_request_again_is_refused(editing_agent):
    generate_and_publish("a counter app", request_id=46)
    revise_app(46, "add a reset button")
    with pytest.raises(Exception, match="appgen revise 46"):
        generate_and_publish("a counter app", request_id=46)
    assert agent_runs(editing_agent) == ["46", "46"]


def test_in_pull_request_mode_revisions_update_one_pull_request(
    github, editing_agent, monkeypatch, tmp_path
):
    first = generate_and_publish("a counter app", request_id=47)
    monkeypatch.setenv("APPGEN_PUBLISH_MODE", "pull-request")
    second = revise_app(47, "add a reset button")
    third = revise_app(47, "add dark mode")
    assert second.pull_request_url == third.pull_request_url is not None
    assert third.branch == "appgen/request-47"
    pulls = github.pulls[("acme", "counter-app")]
    assert len(pulls) == 1
    body = pulls[0]["body"]
    assert "add a reset button" in body and "add dark mode" in body
    assert (third.commit_sha or "")[:12] in body
    bare = github.bare_path("acme", "counter-app")
    log = git(f"--git-dir={bare}", "log", "--format=%H", "appgen/request-47").splitlines()
    assert log == [third.commit_sha, second.commit_sha, first.commit_sha]
    main = git(f"--git-dir={bare}", "rev-parse", "main")
    assert main == first.commit_sha  # main is the reviewers' to merge into


def test_review_comments_become_the_prompt_and_get_a_reply_with_the_commit(
    github, editing_agent, monkeypatch, tmp_path
):
    monkeypatch.setenv("APPGEN_PUBLISH_MODE", "pull-request")
    generate_and_publish("a counter app", request_id=48)
    first_revision = revise_app(48, "add a reset button")
    [pull] = github.pulls[("acme", "counter-app")]
    comment = github.add_review_comment(
        "acme", "counter-app", pull["number"], "server.js", 12, "Log every reset.", "reviewer"
    )
    review = github.add_review(
        "acme", "counter-app", pull["number"], "Please also add a test.", "lead"
    )
    addressed = revise_app(48, from_review=True)
    assert addressed.revision == 3
    assert addressed.commit_sha != first_revision.commit_sha
    prompt = revisions(48)[-1].prompt
    assert "`server.js:12`, reviewer wrote:\n   Log every reset." in prompt
    assert "lead wrote:\n   Please also add a test." in prompt
    assert [note.id for note in revisions(48)[-1].review or []] == [comment, review]

    thread = github.review_comments[("acme", "counter-app", pull["number"])]
    [reply] = [c for c in thread if c["in_reply_to_id"] == comment]
    assert (addressed.commit_sha or "")[:12] in reply["body"]
    [answer] = github.issue_comments[("acme", "counter-app", pull["number"])]
    assert "lead" in answer["body"] and (addressed.commit_sha or "")[:12] in answer["body"]

    # Everything is addressed now (appgen's own replies are not feedback).
    with pytest.raises(Exception, match="nothing to revise"):
        revise_app(48, from_review=True)
    assert agent_runs(editing_agent) == ["48"] * 3


def test_from_review_on_a_host_without_pull_requests_is_a_usage_error(appgen, editing_agent):
    assert appgen("publish", "--prompt", "a counter app", "--request-id", "49").returncode == 0
    revised = appgen("revise", "49", "--from-review")
    assert revised.returncode == 2, revised.stderr
    assert "without pull requests" in revised.stderr
    assert "Traceback" not in revised.stderr


@pytest.fixture
def confined(confined_mode: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A confined `command` agent that adds its prompt to FEATURES.md of the app it
    finds (or of the template app)."""
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        "[ -f server.js ] || python3 -m generator --agent template; "
        'echo "- $APPGEN_PROMPT" >> FEATURES.md; cat "$APPGEN_PROMPT_HISTORY" > history.json',
    )
    return confined_mode


def test_a_confined_agent_starts_from_the_published_tree(confined, tmp_path):
    request_id = 50 if confined == "sandbox" else 51
    generate_and_publish("a counter app", request_id=request_id)
    revised = revise_app(request_id, "add a reset button")
    assert revised.repo_url is not None
    repo = clone(revised.repo_url, tmp_path / "clone")
    assert (repo / "FEATURES.md").read_text() == "- a counter app\n- add a reset button\n"
    assert json.loads((repo / "history.json").read_text()) == ["a counter app"]


def test_a_hostile_base_is_contained_like_agent_output(editing_agent, tmp_path, appgen_home):
    """Whoever can push to the repository writes the next revision's base: its links
    out of the tree and its secrets meet the same staging and scan as an agent's."""
    first = generate_and_publish("a counter app", request_id=52)
    assert first.repo_url is not None
    repo = clone(first.repo_url, tmp_path / "person")
    (repo / "passwd").symlink_to("/etc/passwd")
    (repo / "config").symlink_to(appgen_home)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "links out of the tree", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)

    revised = revise_app(52, "add a reset button")
    git("pull", "-q", "--ff-only", cwd=repo)
    assert git("rev-parse", "HEAD", cwd=repo) == revised.commit_sha
    tracked = git("ls-files", cwd=repo).splitlines()
    assert "passwd" not in tracked and "config" not in tracked  # left out, not followed
    assert (repo / "FEATURES.md").read_text().endswith("- add a reset button\n")
    assert not (tmp_path / "person" / "passwd").exists()
