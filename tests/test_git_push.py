"""The local Git host and git_push: one repository per request, no empty commits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from blocks.git_hosts import LocalGitHost
from core.errors import PublishError
from core.models import CommitAuthor, StagedTree
from tasks.git_push import commit_and_push

AUTHOR = CommitAuthor(name="appgen", email="appgen@example.test")


def staged(root: Path, files: dict[str, str]) -> StagedTree:
    root.mkdir(parents=True)
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return StagedTree(path=root, kept_files=len(files), kept_links=0, kept_bytes=0, excluded=[])


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def publish(host, tmp_path, name, files, request_id=1, attempt="a"):
    remote = host.ensure_repository(name, request_id)
    return commit_and_push(
        staged(tmp_path / f"stage-{name}-{attempt}", files),
        remote,
        message="publish",
        author=AUTHOR,
        host_config=host.git_config(),
    )


def test_creates_the_repository_and_pushes_main(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    result = publish(host, tmp_path, "counter", {"index.js": "1", "src/a.js": "2"})
    bare = tmp_path / "repos/counter.git"
    assert result.new_commit and result.url == bare.as_uri()
    assert git(bare, "rev-parse", "refs/heads/main") == result.commit_sha
    assert git(bare, "ls-tree", "-r", "--name-only", "main").split() == ["index.js", "src/a.js"]
    assert git(bare, "log", "-1", "--format=%an <%ae>", "main") == "appgen <appgen@example.test>"


def test_an_unchanged_tree_makes_no_new_commit_and_a_change_lands_on_top(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    first = publish(host, tmp_path, "counter", {"index.js": "1"}, attempt="a")
    again = publish(host, tmp_path, "counter", {"index.js": "1"}, attempt="b")
    changed = publish(host, tmp_path, "counter", {"index.js": "2"}, attempt="c")
    bare = tmp_path / "repos/counter.git"
    assert (again.new_commit, again.commit_sha) == (False, first.commit_sha)
    assert changed.new_commit
    assert git(bare, "rev-list", "main").split() == [changed.commit_sha, first.commit_sha]


def test_a_removed_file_is_removed_in_the_next_commit(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    publish(host, tmp_path, "app", {"a.js": "1", "b.js": "2"}, attempt="a")
    publish(host, tmp_path, "app", {"a.js": "1"}, attempt="b")
    assert git(tmp_path / "repos/app.git", "ls-tree", "--name-only", "main") == "a.js"


def test_a_name_held_by_another_request_moves_to_the_next_name(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    assert host.ensure_repository("counter", 1).name == "counter"
    assert host.ensure_repository("counter", 2).name == "counter-2"
    assert host.ensure_repository("counter", 3).name == "counter-3"
    assert host.ensure_repository("counter", 2).name == "counter-2"  # reused, not a 4th
    (tmp_path / "repos/other.git").mkdir(parents=True)  # not ours, not even a repository
    assert host.ensure_repository("other", 1).name == "other-2"
    assert sorted(p.name for p in (tmp_path / "repos").iterdir()) == [
        "counter-2.git",
        "counter-3.git",
        "counter.git",
        "other-2.git",
        "other.git",
    ]


def test_an_unusable_git_root_is_a_clear_publish_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    host = LocalGitHost(root=blocker / "repos")
    with pytest.raises(PublishError, match="point APPGEN_GIT_ROOT at a writable directory"):
        host.ensure_repository("counter", 1)


def test_a_refused_push_says_what_happened_and_never_forces(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    publish(host, tmp_path, "app", {"a.js": "1"}, attempt="a")
    hook = tmp_path / "repos/app.git/hooks/pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(PublishError) as refused:
        publish(host, tmp_path, "app", {"a.js": "2"}, attempt="b")
    assert "git push for" in str(refused.value)
    assert "protected branch" in str(refused.value)
    assert "never force-pushes" in str(refused.value)
