"""Running git for appgen: an environment built from scratch, credentials only
through ``GIT_CONFIG_*`` variables, and failures as errors that never echo them.

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

from core.errors import PublishError, PushProtectionRejected
from core.models import CommitAuthor, RemoteRepository
from core.paths import display_path
from core.redaction import redact

BASE_CONFIG = {
    "gc.auto": "0",  # no detached `git gc` left running in a temp dir we delete
    "commit.gpgSign": "false",
    "credential.helper": "",
    "core.hooksPath": os.devnull,
}
# What git may take from the orchestrator's environment: where programs are, the
# locale, the temp dir, and how to reach the host through a proxy or an intercepting
# TLS proxy's CA bundle (a push over HTTPS fails without them where they are needed).
INHERITED = (
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


def git_environment(config: dict[str, str], author: CommitAuthor | None = None) -> dict[str, str]:
    """The whole environment git runs with (commits by ``author``). HOME is /dev/null:
    nothing of the user's is read (no ~/.gitconfig, ~/.config/git/ignore or
    attributes, no ~/.netrc)."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env |= {
        "HOME": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    if author is not None:
        env |= {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": author.name,
            "GIT_COMMITTER_EMAIL": author.email,
        }
    for index, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


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


class GitRunner:
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
