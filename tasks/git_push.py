"""git_push: commit the staged tree on top of the repository's history and push ``main``.

The same request always maps to the same repository (the host decides the name);
an unchanged tree makes no new commit; a remote that moved on is never force-pushed.
git runs with the user's global and system configuration switched off, and the
host's credentials arrive through ``GIT_CONFIG_*`` variables, never a URL or a file.

git runs with an environment built from scratch (``git_environment``), not on top of
the orchestrator's: GitPython's ``Git.execute`` always starts from ``os.environ``
(its ``env=`` only adds), which would hand git — and whatever git starts — the
database URL, the Git host token, AWS keys, the agent's API key, and a stray
``GIT_DIR`` too. So git is started directly with ``subprocess``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.git_hosts import GitHost
from core.errors import PublishError, PushProtectionRejected
from core.models import (
    CommitAuthor,
    PublishedRepo,
    PublishMode,
    PublishRequest,
    RemoteRepository,
    StagedTree,
)
from core.paths import display_path
from core.redaction import redact
from tasks.step_timings import remember_timing

_BASE_CONFIG = {
    "gc.auto": "0",  # no detached `git gc` left running in a temp dir we delete
    "commit.gpgSign": "false",
    "credential.helper": "",
    "core.hooksPath": os.devnull,
}
_MAX_MESSAGE_PROMPT = 2000
# What git may take from the orchestrator's environment: where programs are, the
# locale, the temp dir, and how to reach the host through a proxy or an intercepting
# TLS proxy's CA bundle (a push over HTTPS fails without them where they are needed).
_INHERITED = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


def git_environment(config: dict[str, str], author: CommitAuthor) -> dict[str, str]:
    """The whole environment git runs with. HOME is /dev/null: nothing of the user's
    is read (no ~/.gitconfig, ~/.config/git/ignore or attributes, no ~/.netrc)."""
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env |= {
        "HOME": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": author.name,
        "GIT_AUTHOR_EMAIL": author.email,
        "GIT_COMMITTER_NAME": author.name,
        "GIT_COMMITTER_EMAIL": author.email,
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for index, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def request_branch(request_id: int) -> str:
    """The branch a request's pull request comes from."""
    return f"appgen/request-{request_id}"


def commit_and_push(
    staged: StagedTree,
    remote: RemoteRepository,
    *,
    message: str,
    author: CommitAuthor,
    host_config: dict[str, str],
    expected_head: str | None = None,
    mode: PublishMode = "main",
    branch: str | None = None,
) -> PublishedRepo:
    """Commit the staged tree as the next commit of ``remote``'s main and push it; or,
    with ``mode="pull-request"`` once main exists, as the next commit of ``branch``
    (started from main), which the caller proposes as a pull request.

    ``expected_head`` is the commit appgen last pushed: if main has moved on since,
    someone else committed there, and appgen never buries their work: it pushes to
    ``branch`` instead when one is given, else it stops. A tree main already holds
    makes no commit in either mode.
    """
    run = _Git(staged.path, remote, git_environment(_BASE_CONFIG | host_config, author))
    run("init", "--quiet", "--initial-branch=main", "--template=")
    run("remote", "add", "origin", remote.push_url)
    refs = ["refs/heads/main"] + ([f"refs/heads/{branch}"] if branch else [])
    heads = {
        ref: sha
        for sha, _, ref in (
            line.partition("\t")
            for line in run("ls-remote", "--heads", "origin", *refs).splitlines()
        )
    }
    main = heads.get("refs/heads/main")
    if main:
        run("fetch", "--quiet", "--depth=1", "origin", "refs/heads/main")
        run("update-ref", "refs/heads/main", "FETCH_HEAD")
    run("add", "--all", "--force", ".")  # the staged tree is exactly what we publish
    if main and not run.differs("diff", "--cached", "--quiet"):
        # main already holds this tree: nothing to do. That includes appgen's own push
        # whose run was killed before it could record the commit.
        return PublishedRepo(name=remote.name, url=remote.url, commit_sha=main, new_commit=False)
    tip = heads.get(f"refs/heads/{branch}")
    moved_on = bool(main and expected_head and main != expected_head)
    if mode == "pull-request":  # what appgen pushed last is then the branch's head
        moved_on = moved_on and expected_head != tip
    if not main or (mode == "main" and not moved_on):
        return _commit_and_push_to(run, remote, "main", message)
    if branch is None:
        raise PublishError(
            f"main of {remote.url} moved on: it is at {main[:12]}, but appgen last "
            f"pushed {(expected_head or 'nothing')[:12]}. appgen never overwrites commits it "
            "did not make: merge or revert them on main, then publish again."
        )
    if moved_on and not tip:
        # The pull request shows appgen's change to what it published last, and merging
        # it keeps their commits: start from appgen's last commit when main still has it.
        run("fetch", "--quiet", "--unshallow", "origin", "refs/heads/main")
        if run.succeeds("merge-base", "--is-ancestor", str(expected_head), "FETCH_HEAD"):
            run("update-ref", "refs/heads/main", str(expected_head))
    if tip:
        run("fetch", "--quiet", "--depth=1", "origin", f"refs/heads/{branch}")
        run("update-ref", "refs/heads/main", "FETCH_HEAD")
        if not run.differs("diff", "--cached", "--quiet"):
            return PublishedRepo(
                name=remote.name,
                url=remote.url,
                commit_sha=tip,
                new_commit=False,
                branch=branch,
                main_moved_on=moved_on,
            )
    published = _commit_and_push_to(run, remote, branch, message)
    return published.model_copy(update={"main_moved_on": moved_on})


def _commit_and_push_to(
    run: _Git, remote: RemoteRepository, target: str, message: str
) -> PublishedRepo:
    """Commit the index on top of the local main and push it to ``target`` (never forced)."""
    run("commit", "--quiet", "--no-verify", "-m", message)
    run("push", "--quiet", "origin", f"refs/heads/main:refs/heads/{target}")
    return PublishedRepo(
        name=remote.name,
        url=remote.url,
        commit_sha=run("rev-parse", "HEAD"),
        new_commit=True,
        branch=None if target == "main" else target,
    )


# GitHub's push protection: "remote: error: GH013: Repository rule violations found
# for refs/heads/main.", then per secret type a "—— Type ———" heading and its
# locations ("path: config.js:3").
_GH013 = re.compile(r"^remote:\s*error: GH013\b", re.MULTILINE)
_GH013_TYPE = re.compile(r"^remote:\s*\u2014\u2014 (.+?) \u2014", re.MULTILINE)
_GH013_PATH = re.compile(r"^remote:\s*path: (.+?)\s*$", re.MULTILINE)


def push_protection_rejection(url: str, stderr: str) -> PushProtectionRejected | None:
    """The error for a push GitHub's push protection refused (GH013), naming the
    secret types and the paths it reported; None for any other failure."""
    if not _GH013.search(stderr):
        return None
    kinds = list(dict.fromkeys(_GH013_TYPE.findall(stderr)))
    paths = list(dict.fromkeys(display_path(p) for p in _GH013_PATH.findall(stderr)))
    found = f" ({', '.join(kinds)})" if kinds else ""
    where = f" at {', '.join(paths)}" if paths else ""
    return PushProtectionRejected(
        f"GitHub push protection (GH013) rejected the push to {url}: it found "
        f"secrets{found}{where}. Nothing was pushed. Remove them from the generated app "
        "and publish again (with APPGEN_SECRET_SCAN=block, appgen's own scan stops such "
        "keys before anything is created).",
        paths,
    )


class _Git:
    """Runs git in one directory with exactly the given environment, turning a
    failure into a PublishError without echoing the environment (where credentials
    are)."""

    def __init__(self, cwd: Path, remote: RemoteRepository, env: dict[str, str]) -> None:
        self._cwd = cwd
        self._remote = remote
        self._env = env

    def __call__(self, *args: str) -> str:
        """git's output, stripped; a PublishError if git fails."""
        return self._run(args, succeeded=(0,)).stdout.strip()

    def succeeds(self, *args: str) -> bool:
        """True if git exits 0; False on 1 or 128 (a yes/no question, or an object
        that is not there)."""
        return self._run(args, succeeded=(0, 1, 128)).returncode == 0

    def differs(self, *args: str) -> bool:
        """For a ``--quiet`` diff: True if it exits 1 (differences), False on 0."""
        return self._run(args, succeeded=(0, 1)).returncode == 1

    def _run(
        self, args: tuple[str, ...], succeeded: tuple[int, ...]
    ) -> subprocess.CompletedProcess[str]:
        try:
            completed = subprocess.run(
                ["git", *args],
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:  # no git on PATH, or the directory is gone
            raise PublishError(redact(f"cannot run git {args[0]}: {exc}")) from exc
        if completed.returncode in succeeded:
            return completed
        detail = completed.stderr.strip()
        if args[0] == "push" and (
            rejected := push_protection_rejection(self._remote.url, completed.stderr)
        ):
            raise rejected
        hint = (
            " appgen never force-pushes: if main moved on since it was fetched, run the "
            "publish again to land on top of it."
            if args[0] == "push"
            else ""
        )
        raise PublishError(
            redact(f"git {args[0]} for {self._remote.url} failed: {detail or 'no output'}.") + hint
        )


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def git_push(
    staged: StagedTree,
    request: PublishRequest,
    repository: RemoteRepository,
    host: GitHost,
    author: CommitAuthor,
    mode: PublishMode = "main",
) -> PublishedRepo:
    """Commit the staged tree on top of the repository's main and push it; in
    pull-request mode (or when main moved on), push the request's branch and open or
    update its pull request."""
    logger = get_run_logger()
    prompt = request.prompt.strip()[:_MAX_MESSAGE_PROMPT]
    branch = request_branch(request.request_id)
    published = commit_and_push(
        staged,
        repository,
        message=f"Publish request {request.request_id}: {repository.name}\n\n{prompt}\n",
        author=author,
        host_config=host.git_config(),
        expected_head=request.published_sha,
        mode=mode,
        branch=branch,
    )
    where = f"{published.url} ({published.branch})" if published.branch else published.url
    if published.main_moved_on:
        logger.warning(
            "main of %s holds commits appgen did not make: published to the branch %s for "
            "review instead",
            published.url,
            branch,
        )
    if published.new_commit:
        logger.info("pushed %s to %s", published.commit_sha[:12], where)
    else:
        logger.info(
            "%s already holds this tree at %s; nothing to push", where, published.commit_sha[:12]
        )
    if published.branch is None:
        return published
    pull = host.open_pull_request(
        repository,
        published.branch,
        title=f"appgen: request {request.request_id} ({repository.name})",
        body=f"Generated by appgen for request {request.request_id}.\n\n{prompt}\n",
    )
    if pull is None:
        logger.info("the host has no pull requests: the branch %s is recorded", branch)
        return published
    logger.info("%s pull request #%d: %s", pull.action, pull.number, pull.url)
    return published.model_copy(update={"pull_request_url": pull.url})
