"""Pull-request mode on the GitHub stand-in and the real `git http-backend`: the
first publish creates main, later ones push appgen/request-N and open or update one
pull request; a main that moved on gets the same branch in main mode; re-runs are
idempotent; closed pull requests are reopened, merged ones replaced; a 422 "already
exists" and rate limits on the pull-request calls are survived."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

from blocks import defaults
from core.errors import PublishError
from core.models import CommitAuthor, PublishMode, StagedTree
from core.settings import Settings
from tasks.git_push import commit_and_push, request_branch
from tests.conftest import latest_artifact

AUTHOR = CommitAuthor(name="appgen", email="appgen@example.test")
REQUEST = 7
BRANCH = request_branch(REQUEST)


class Publisher:
    """Publishes trees for one request the way git_push does, and keeps what the
    flow would keep in the row (the repository id, the last pushed commit)."""

    def __init__(self, tmp_path: Path, mode: PublishMode) -> None:
        self.host = defaults.git_host(Settings())
        self.tmp_path = tmp_path
        self.mode = mode
        self.repo_id: str | None = None
        self.pushed: str | None = None
        self.attempt = 0

    def publish(self, files: dict[str, str], before_pull=lambda: None):
        self.attempt += 1
        root = self.tmp_path / f"stage-{self.attempt}"
        for relative, text in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        staged = StagedTree(
            path=root, kept_files=len(files), kept_links=0, kept_bytes=0, excluded=[]
        )
        remote = self.host.ensure_repository("shop", REQUEST, known_id=self.repo_id)
        self.repo_id = remote.id
        published = commit_and_push(
            staged,
            remote,
            message=f"publish {self.attempt}",
            author=AUTHOR,
            host_config=self.host.git_config(),
            expected_head=self.pushed,
            mode=self.mode,
            branch=BRANCH,
        )
        self.pushed = published.commit_sha
        pull = None
        before_pull()
        if published.branch:
            pull = self.host.open_pull_request(remote, published.branch, title="t", body="b")
        return published, pull


def heads(github, name: str = "shop") -> dict[str, str]:
    out = subprocess.run(
        [
            "git",
            f"--git-dir={github.bare_path('acme', name)}",
            "for-each-ref",
            "refs/heads",
            "--format=%(refname:short) %(objectname)",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split() for line in out.splitlines())


def rev(github, revision: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={github.bare_path('acme', 'shop')}", "rev-parse", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def file_on(github, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={github.bare_path('acme', 'shop')}", "show", f"{ref}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_first_publish_creates_main_then_changes_arrive_as_one_pull_request(github, tmp_path):
    publisher = Publisher(tmp_path, "pull-request")
    first, pull = publisher.publish({"app.js": "v1"})
    assert (first.branch, pull) == (None, None)
    assert heads(github) == {"main": first.commit_sha}

    second, pull = publisher.publish({"app.js": "v2"})
    assert second.branch == BRANCH and second.new_commit
    assert (pull.number, pull.action) == (1, "opened")
    assert pull.url == f"{github.base_url}/acme/shop/pull/1"
    assert heads(github) == {"main": first.commit_sha, BRANCH: second.commit_sha}
    assert file_on(github, "main", "app.js") == "v1"
    assert file_on(github, BRANCH, "app.js") == "v2"
    [opened] = github.pulls[("acme", "shop")]
    assert (opened["head"]["ref"], opened["base"]["ref"]) == (BRANCH, "main")

    # A re-run of the same tree: no commit, the same pull request.
    again, pull = publisher.publish({"app.js": "v2"})
    assert (again.commit_sha, again.new_commit) == (second.commit_sha, False)
    assert (pull.number, pull.action) == (1, "updated")

    # A further change lands on the branch, on top of the last one; still one PR.
    _, pull = publisher.publish({"app.js": "v3"})
    assert (pull.number, pull.action) == (1, "updated")
    assert rev(github, f"{BRANCH}~1") == second.commit_sha
    assert len(github.pulls[("acme", "shop")]) == 1
    # Every pull-request call carried the token, in a header only.
    calls = [r for r in github.requests if "/pulls" in r[1]]
    assert calls and all(auth == f"Bearer {github.token}" for _, _, auth in calls)
    assert not [r for r in github.requests if github.token in r[1]]


def test_a_closed_pull_request_is_reopened_and_a_merged_one_replaced(github, tmp_path):
    publisher = Publisher(tmp_path, "pull-request")
    publisher.publish({"app.js": "v1"})
    publisher.publish({"app.js": "v2"})
    github.close_pull("acme", "shop", 1)
    _, pull = publisher.publish({"app.js": "v3"})
    assert (pull.number, pull.action) == (1, "reopened")
    assert github.pulls[("acme", "shop")][0]["state"] == "open"

    github.close_pull("acme", "shop", 1, merged=True)
    _, pull = publisher.publish({"app.js": "v4"})
    assert (pull.number, pull.action) == (2, "opened")


def test_a_closed_pull_request_github_will_not_reopen_is_replaced(github, tmp_path):
    publisher = Publisher(tmp_path, "pull-request")
    publisher.publish({"app.js": "v1"})
    publisher.publish({"app.js": "v2"})
    github.close_pull("acme", "shop", 1)
    github.unreopenable.add(1)
    _, pull = publisher.publish({"app.js": "v3"})
    assert (pull.number, pull.action) == (2, "opened")
    assert [p["state"] for p in github.pulls[("acme", "shop")]] == ["closed", "open"]


def test_main_mode_falls_back_to_the_branch_when_main_moved_on(github, tmp_path):
    publisher = Publisher(tmp_path, "main")
    publisher.publish({"app.js": "v1"})
    second, pull = publisher.publish({"app.js": "v2"})
    assert second.branch is None and pull is None  # main mode: straight to main

    # Someone commits on main.
    clone = tmp_path / "someone"
    subprocess.run(
        ["git", "clone", "-q", str(github.bare_path("acme", "shop")), str(clone)], check=True
    )
    (clone / "NOTES.md").write_text("mine\n")
    git = ["git", "-C", str(clone), "-c", "user.name=x", "-c", "user.email=x@x"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "theirs"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "main"], check=True)
    theirs = heads(github)["main"]

    third, pull = publisher.publish({"app.js": "v3"})
    assert third.branch == BRANCH and third.main_moved_on
    assert (pull.number, pull.action) == (1, "opened")
    assert heads(github)["main"] == theirs  # their work is untouched
    # The branch starts from appgen's last commit: the pull request shows appgen's
    # change only, and merging it keeps theirs.
    assert rev(github, f"{BRANCH}~1") == second.commit_sha
    assert file_on(github, BRANCH, "app.js") == "v3"


def test_without_a_branch_a_moved_main_still_stops_the_publish(github, tmp_path):
    from tasks.git_push import commit_and_push as push

    publisher = Publisher(tmp_path, "main")
    publisher.publish({"app.js": "v1"})
    remote = publisher.host.ensure_repository("shop", REQUEST, known_id=publisher.repo_id)
    root = tmp_path / "other"
    root.mkdir()
    (root / "app.js").write_text("v2")
    staged = StagedTree(path=root, kept_files=1, kept_links=0, kept_bytes=0, excluded=[])
    with pytest.raises(PublishError, match="moved on"):
        push(
            staged,
            remote,
            message="m",
            author=AUTHOR,
            host_config=publisher.host.git_config(),
            expected_head="0" * 40,
        )


def test_a_422_already_exists_finds_the_open_pull_request(github, tmp_path):
    publisher = Publisher(tmp_path, "pull-request")
    publisher.publish({"app.js": "v1"})
    publisher.publish({"app.js": "v2"})
    github.stale_pull_lists = 1  # the list lags: it does not show pull request #1 yet
    _, pull = publisher.publish({"app.js": "v3"})
    assert (pull.number, pull.action) == (1, "updated")
    assert len(github.pulls[("acme", "shop")]) == 1
    assert github.api_calls("POST", "/pulls") == 2  # the first, and the one answered 422


def test_rate_limits_on_the_pull_request_calls_are_waited_out(github, tmp_path):
    publisher = Publisher(tmp_path, "pull-request")
    publisher.publish({"app.js": "v1"})

    def limit_the_pull_request_calls():
        github.rate_limit_next = [("GET", "retry-after"), ("POST", "reset")]

    _, pull = publisher.publish({"app.js": "v2"}, before_pull=limit_the_pull_request_calls)
    assert (pull.number, pull.action) == (1, "opened")
    assert github.rate_limit_next == []  # both were answered, and waited out
    assert github.api_calls("GET", "/pulls") == 2 and github.api_calls("POST", "/pulls") == 2


# -- through the flow -----------------------------------------------------------------


def link_artifact(request_id: int) -> str:
    return latest_artifact(f"appgen-request-{request_id}-repository")


@pytest.mark.usefixtures("flow_env")
def test_the_flow_in_pull_request_mode_records_the_branch_and_the_pull_request(github, monkeypatch):
    from core.models import RequestStatus
    from flows.publish import generate_and_publish

    monkeypatch.setenv("APPGEN_PUBLISH_MODE", "pull-request")
    first = generate_and_publish("a counter", request_id=741, app_name="tally")
    assert (first.branch, first.pull_request_url) == (None, None)

    second = generate_and_publish("a counter with a reset button", request_id=741)
    branch = request_branch(741)
    assert second.branch == branch
    assert second.pull_request_url == f"{github.base_url}/acme/tally/pull/1"
    row = defaults.database(Settings()).get(741)
    assert row is not None
    assert (row.status, row.branch, row.pull_request_url, row.commit_sha) == (
        RequestStatus.PUBLISHED,
        branch,
        second.pull_request_url,
        second.commit_sha,
    )
    assert heads(github, "tally") == {"main": first.commit_sha, branch: second.commit_sha}
    assert second.pull_request_url in link_artifact(741)

    again = generate_and_publish("a counter with a reset button", request_id=741)
    assert (again.commit_sha, again.pull_request_url) == (
        second.commit_sha,
        second.pull_request_url,
    )
    assert len(github.pulls[("acme", "tally")]) == 1


@pytest.mark.usefixtures("flow_env")
def test_on_the_local_host_the_branch_is_pushed_and_recorded(appgen_home, monkeypatch):
    from flows.publish import generate_and_publish

    monkeypatch.setenv("APPGEN_PUBLISH_MODE", "pull-request")
    first = generate_and_publish("a counter", request_id=42, app_name="tally")
    second = generate_and_publish("a counter with a reset button", request_id=42)
    assert (second.branch, second.pull_request_url) == (request_branch(42), None)
    bare = appgen_home / "repos/tally.git"
    out = subprocess.run(
        ["git", f"--git-dir={bare}", "for-each-ref", "--format=%(refname:short) %(objectname)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert dict(line.split() for line in out.splitlines()) == {
        "main": first.commit_sha,
        request_branch(42): second.commit_sha,
    }
    row = defaults.database(Settings()).get(42)
    assert row is not None
    assert row.branch == request_branch(42)


def test_cli_json_and_status_carry_the_branch(prefect_api, appgen_home, monkeypatch):
    import json
    import os
    import sys

    monkeypatch.setenv("APPGEN_PUBLISH_MODE", "pull-request")

    def appgen(*args: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "appgen", *args],
            env=os.environ | {"PREFECT_API_URL": prefect_api},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        return cast(dict[str, Any], json.loads(result.stdout.strip().splitlines()[-1]))

    first = appgen("publish", "--prompt", "a counter", "--request-id", "43", "--json")
    assert (first["branch"], first["pull_request_url"]) == (None, None)
    second = appgen("publish", "--prompt", "a counter with undo", "--request-id", "43", "--json")
    assert (second["branch"], second["pull_request_url"]) == (request_branch(43), None)
    assert appgen("status", "43", "--json")["branch"] == request_branch(43)
