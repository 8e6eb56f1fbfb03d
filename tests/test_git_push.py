"""The local Git host and git_push: one repository per request, no empty commits."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from blocks.git_hosts import LocalGitHost
from core.errors import PublishError
from core.git import INHERITED
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


# The repository id each (root, name, request) got, as the flow keeps it in the row.
_recorded_ids: dict[tuple[str, str, int], str | None] = {}


def publish(host, tmp_path, name, files, request_id=1, attempt="a"):
    key = (str(host.root), name, request_id)
    remote = host.ensure_repository(name, request_id, known_id=_recorded_ids.get(key))
    _recorded_ids[key] = remote.id
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
    second = host.ensure_repository("counter", 2)
    assert second.name == "counter-2"
    assert host.ensure_repository("counter", 3).name == "counter-3"
    reused = host.ensure_repository("counter", 2, known_id=second.id)
    assert reused.name == "counter-2"  # reused, not a 4th
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
    bare = tmp_path / "repos/app.git"
    hook = bare / "hooks/pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    git(bare, "config", "core.hooksPath", str(hook.parent))  # an operator enables hooks
    with pytest.raises(PublishError) as refused:
        publish(host, tmp_path, "app", {"a.js": "2"}, attempt="b")
    assert "git push for" in str(refused.value)
    assert "protected branch" in str(refused.value)
    assert "never force-pushes" in str(refused.value)


FAKE_SECRETS = {
    "APPGEN_GITHUB_TOKEN": "ghp_fakeSecretToken1234567890",
    "AWS_SECRET_ACCESS_KEY": "fakeAwsSecretKey/abcdefghijklmnop",
    "APPGEN_DATABASE_URL": "postgresql://appgen:fakeDbPassword99@db.internal/appgen",
    "OPENAI_API_KEY": "sk-fakeOpenAIKey0123456789",
}


def test_git_runs_with_an_environment_built_from_scratch(tmp_path, monkeypatch):
    """A `git` first on PATH records the environment of every git command appgen runs
    (then runs the real git): none of the orchestrator's variables reach it, a stray
    GIT_DIR does not redirect it, and the push still works."""
    host = LocalGitHost(root=tmp_path / "repos")
    remote = host.ensure_repository("counter", 1)
    dumps = tmp_path / "git-environments"
    spy = tmp_path / "spy-bin"
    spy.mkdir()
    (spy / "git").write_text(
        f'#!/bin/sh\nenv >> "{dumps}"\necho "--- git $1" >> "{dumps}"\n'
        f'exec "{shutil.which("git")}" "$@"\n'
    )
    (spy / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}{os.pathsep}{os.environ['PATH']}")
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    elsewhere = tmp_path / "elsewhere.git"
    monkeypatch.setenv("GIT_DIR", str(elsewhere))

    result = commit_and_push(
        staged(tmp_path / "stage", {"index.js": "1"}),
        remote,
        message="publish",
        author=AUTHOR,
        host_config={"http.extraheader": "AUTHORIZATION: basic aG9zdC1jcmVkZW50aWFs"},
    )

    recorded = dumps.read_text()  # before this test's own git calls add to it
    bare = tmp_path / "repos/counter.git"
    assert git(bare, "rev-parse", "refs/heads/main") == result.commit_sha
    assert not elsewhere.exists()
    commands = [line.split()[-1] for line in recorded.splitlines() if line.startswith("--- git")]
    assert commands[0] == "init" and commands[-1] == "rev-parse" and "push" in commands
    for value in FAKE_SECRETS.values():
        assert value not in recorded
    names = {line.split("=", 1)[0] for line in recorded.splitlines() if "=" in line}
    shell_own = {"PWD", "OLDPWD", "SHLVL", "_"}  # set by the /bin/sh of the spy itself
    allowed = set(INHERITED) | {
        "HOME",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_TERMINAL_PROMPT",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_CONFIG_COUNT",
        *(f"GIT_CONFIG_{kind}_{i}" for kind in ("KEY", "VALUE") for i in range(10)),
    }
    assert names - shell_own <= allowed, names - shell_own - allowed
    assert f"PATH={spy}{os.pathsep}" in recorded  # PATH is the orchestrator's, read per run
    assert "HOME=/dev/null" in recorded and "GIT_CONFIG_GLOBAL=/dev/null" in recorded
