"""The local Git host: repositories created atomically, one owner each, no hooks."""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import pytest

from blocks.git_hosts import LocalGitHost

WORKERS, ROUNDS = 8, 30


def git_config(repository: Path, key: str) -> str:
    return subprocess.run(
        ["git", "config", "--file", str(repository / "config"), key],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _claim_names(base: str, request_id: int, barrier, results) -> None:
    """One request in its own process: every round, all requests ask for the same
    name at once in a fresh root, then ask again."""
    for round_ in range(ROUNDS):
        host = LocalGitHost(root=Path(base) / f"round-{round_}")
        barrier.wait()
        try:
            created = host.ensure_repository("counter-app", request_id)
            first = created.name
            again = host.ensure_repository("counter-app", request_id, known_id=created.id).name
            results.put((round_, request_id, first, again, None))
        except Exception as exc:  # reported to the test, which fails on it
            results.put((round_, request_id, None, None, f"{type(exc).__name__}: {exc}"))


def test_concurrent_requests_for_one_name_each_get_their_own_repository(tmp_path):
    context = multiprocessing.get_context("spawn")  # the test process may run threads
    barrier = context.Barrier(WORKERS, timeout=120)
    results = context.Queue()
    workers = [
        context.Process(target=_claim_names, args=(str(tmp_path), request_id, barrier, results))
        for request_id in range(1, WORKERS + 1)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in range(WORKERS * ROUNDS)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    errors = [outcome for outcome in outcomes if outcome[4] is not None]
    assert errors == []
    for round_ in range(ROUNDS):
        root = tmp_path / f"round-{round_}"
        got = {request: (first, again) for r, request, first, again, _ in outcomes if r == round_}
        assert all(first == again for first, again in got.values()), got
        names = [first for first, _ in got.values()]
        assert len(set(names)) == WORKERS, got
        for request, (name, _) in got.items():
            assert git_config(root / f"{name}.git", "appgen.requestid") == str(request)
        assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.git" for n in names)


def test_a_second_call_by_the_same_request_returns_the_same_repository(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    first = host.ensure_repository("counter-app", 7)
    assert host.ensure_repository("counter-app", 7, known_id=first.id) == first
    assert host.ensure_repository("counter-app", 8).name == "counter-app-2"
    bare = tmp_path / "repos/counter-app.git"
    assert (bare / "description").read_text() == "appgen request 7\n"
    head = subprocess.run(
        ["git", "--git-dir", str(bare), "symbolic-ref", "HEAD"], capture_output=True, text=True
    )
    assert head.stdout.strip() == "refs/heads/main"


def test_a_file_at_the_name_moves_on_to_the_next_name(tmp_path):
    root = tmp_path / "repos"
    root.mkdir()
    (root / "counter-app.git").write_text("not a repository")
    assert LocalGitHost(root=root).ensure_repository("counter-app", 1).name == "counter-app-2"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


@pytest.fixture
def global_template_with_a_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose ~/.gitconfig points init.templateDir at a template with a hook."""
    home = tmp_path / "user-home"
    hooks = home / "git-template/hooks"
    hooks.mkdir(parents=True)
    hook = hooks / "pre-receive"
    hook.write_text("#!/bin/sh\necho hijacked >&2\nexit 1\n")
    hook.chmod(0o755)
    (home / ".gitconfig").write_text(f"[init]\n\ttemplateDir = {home / 'git-template'}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.delenv("GIT_TEMPLATE_DIR", raising=False)
    return home


def test_a_global_template_puts_no_hooks_into_created_repositories(
    tmp_path, global_template_with_a_hook
):
    # The setup is real: a plain `git init` would copy the hook.
    plain = tmp_path / "plain.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(plain)], check=True)
    assert (plain / "hooks/pre-receive").exists()

    host = LocalGitHost(root=tmp_path / "repos")
    bare = tmp_path / "repos" / f"{host.ensure_repository('counter-app', 1).name}.git"
    assert list((bare / "hooks").iterdir()) == []
    assert git_config(bare, "appgen.requestid") == "1"


def test_created_repositories_carry_a_token_that_is_their_id_and_run_no_hooks(tmp_path):
    host = LocalGitHost(root=tmp_path / "repos")
    created = host.ensure_repository("counter-app", 1)
    bare = tmp_path / "repos/counter-app.git"
    assert created.id and git_config(bare, "appgen.token") == created.id
    assert git_config(bare, "core.hooksPath") == "/dev/null"
    other = host.ensure_repository("other", 2)
    assert other.id != created.id


def plant(root: Path, name: str, request_id: int, token: str | None = None) -> Path:
    """A bare repository someone else made at ``name``, marked as ``request_id``'s."""
    bare = root / f"{name}.git"
    subprocess.run(["git", "init", "-q", "--bare", "--template=", str(bare)], check=True)
    for key, value in (("appgen.requestid", str(request_id)), ("appgen.token", token)):
        if value is not None:
            subprocess.run(
                ["git", "config", "--file", str(bare / "config"), key, value], check=True
            )
    return bare


def test_a_marker_alone_never_makes_a_repository_ours(tmp_path):
    root = tmp_path / "repos"
    host = LocalGitHost(root=root)
    plant(root, "blog", 5)
    assert host.ensure_repository("blog", 5).name == "blog-2"  # nothing recorded yet
    plant(root, "shop", 5, token="guessed")
    assert host.ensure_repository("shop", 5, known_id="not-guessed").name == "shop-2"


def test_a_repository_is_reused_with_its_token_only_by_its_request(tmp_path):
    root = tmp_path / "repos"
    host = LocalGitHost(root=root)
    mine = host.ensure_repository("blog", 5)
    assert host.ensure_repository("blog", 5, known_id=mine.id) == mine
    # Another request that learnt the token still does not get it.
    assert host.ensure_repository("blog", 6, known_id=mine.id).name == "blog-2"
    # Nor does a link to it at another name.
    (root / "diary.git").symlink_to(root / "blog.git")
    assert host.ensure_repository("diary", 5, known_id=mine.id).name == "diary-2"


def test_a_hook_in_a_created_repository_does_not_run_at_push(tmp_path):
    """receive-pack reads the repository's own config: core.hooksPath=/dev/null there
    keeps a hook someone put into hooks/ from running with the pusher's environment."""
    host = LocalGitHost(root=tmp_path / "repos")
    bare = tmp_path / "repos" / f"{host.ensure_repository('counter-app', 1).name}.git"
    marker = tmp_path / "hook-ran"
    hook = bare / "hooks/pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    hook.chmod(0o755)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "a.txt").write_text("a")
    for args in (
        ["add", "a.txt"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"],
    ):
        subprocess.run(["git", "-C", str(work), *args], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", bare.as_uri(), "main"], check=True)
    assert not marker.exists()
