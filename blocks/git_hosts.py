"""Git hosts: where published repositories live."""

from __future__ import annotations

import abc
import errno
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from core.errors import InvalidRequest, PublishError
from core.models import PullRequest, RemoteRepository, ReviewNote

MAX_NAME_ATTEMPTS = 50
_MARKER_KEY = "appgen.requestid"
# A random token written at creation; it is the repository's id (the row's repo_id),
# and a repository is reused only by a caller that presents it.
_TOKEN_KEY = "appgen.token"
# Repositories are built under this prefix, then renamed into place. Host-safe names
# never start with '.', so a temp dir can never be taken for a candidate.
_TEMP_PREFIX = ".tmp-"
# The renamed target exists: another request (or this one, concurrently) got there first.
_TARGET_EXISTS = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)


def candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``name-2``, ``name-3`` …: the deterministic order in which a
    request claims a repository name that someone else may already hold."""
    yield name
    for suffix in range(2, MAX_NAME_ATTEMPTS + 1):
        yield f"{name}-{suffix}"


class GitHost(Block, abc.ABC):
    """Creates repositories and tells git how to reach them."""

    @abc.abstractmethod
    def ensure_repository(
        self, name: str, request_id: int, known_id: str | None = None
    ) -> RemoteRepository:
        """The request's repository, created if needed. A name held by another
        request moves on to the next candidate name; one held by this request is reused.
        ``known_id`` is the ``RemoteRepository.id`` recorded for the request (its row's
        ``repo_id``), if any."""

    def git_config(self) -> dict[str, str]:
        """Git configuration for talking to this host, passed to git through the
        environment: credentials go here, never into a URL or onto disk."""
        return {}

    def open_pull_request(
        self, repository: RemoteRepository, branch: str, *, title: str, body: str
    ) -> PullRequest | None:
        """Open (or update, or reopen) the pull request of ``branch`` against main;
        None on a host without pull requests, where the pushed branch is the record."""
        return None

    def review_feedback(self, repository: RemoteRepository, branch: str) -> list[ReviewNote]:
        """The review comments and review bodies on the open pull request of
        ``branch``, oldest first, without appgen's own replies."""
        raise InvalidRequest(
            f"{repository.url} is on a Git host without pull requests, so there is no review "
            "feedback to read: --from-review needs APPGEN_GIT_HOST=github and a request "
            "published in pull-request mode (APPGEN_PUBLISH_MODE=pull-request)"
        )

    def reply_to_review(
        self, repository: RemoteRepository, branch: str, notes: list[ReviewNote], text: str
    ) -> None:
        """Answer each note with ``text``: in its thread for a review comment, and in
        one comment on the pull request for review bodies."""


class LocalGitHost(GitHost):
    """Bare repositories in a local directory, created on demand: the embedded
    stand-in for GitHub. Each repository records the request that owns it
    (``appgen.requestid``) and a random creation token (``appgen.token``, the
    repository's id) in its own config. A repository that is already there is reused
    only when both match, the token being the one recorded for the request
    (``known_id``): a marker alone, which anyone who can write here can forge, is not
    enough. Repositories run no hooks (``core.hooksPath=/dev/null`` in their config,
    which ``git receive-pack`` reads); an operator who wants hooks in one sets its
    ``core.hooksPath`` to a directory of them.

    Example:
        ```python
        from blocks.git_hosts import LocalGitHost

        host = LocalGitHost.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Appgen Local Git Host"
    _block_type_slug = "appgen-local-git-host"
    _description = "Publishes to bare Git repositories in a local directory."

    root: Path = Field(
        description="Directory holding one bare repository per app, as NAME.git.",
        examples=["/home/me/.appgen/repos"],
    )

    def ensure_repository(
        self, name: str, request_id: int, known_id: str | None = None
    ) -> RemoteRepository:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(
                f"cannot use {self.root} as the Git root ({exc.strerror}); point "
                "APPGEN_GIT_ROOT at a writable directory"
            ) from exc
        for candidate in candidate_names(name):
            path = self.root / f"{candidate}.git"
            token = secrets.token_hex(16)
            # Whatever is at the name already, or got there first, keeps it unless ours.
            if os.path.lexists(path) or not self._create(path, request_id, token):
                if known_id is None or not _is_ours(path, request_id, known_id):
                    continue
                token = known_id
            url = path.absolute().as_uri()
            return RemoteRepository(name=candidate, url=url, push_url=url, id=token)
        raise PublishError(
            f"the names {name!r} to {name}-{MAX_NAME_ATTEMPTS} are all taken in {self.root}; "
            "choose another --app-name"
        )

    def _create(self, path: Path, request_id: int, token: str) -> bool:
        """Create the bare repository ``path`` owned by ``request_id``, atomically:
        it is built complete (marker and token included) in a temp dir, then renamed into place,
        so no one ever sees it half made and of two racing requests exactly one wins.
        False when something was at ``path`` first."""
        temp = self.root / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            _init_bare(temp, request_id, token)
            try:
                os.rename(temp, path)
            except OSError as exc:
                if exc.errno in _TARGET_EXISTS:
                    return False
                raise
            return True
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            raise PublishError(f"cannot create the repository {path}: {detail}") from exc
        finally:
            shutil.rmtree(temp, ignore_errors=True)  # gone already after a rename


def _is_ours(path: Path, request_id: int, token: str) -> bool:
    """True when ``path`` is a directory (not a link) whose config names ``request_id``
    and holds ``token``."""
    if path.is_symlink() or not path.is_dir():
        return False
    return _config_value(path, _MARKER_KEY) == str(request_id) and secrets.compare_digest(
        _config_value(path, _TOKEN_KEY) or "", token
    )


def _git_env() -> dict[str, str]:
    """Neither the user's nor the system's git configuration is read."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }


def _config_value(path: Path, key: str) -> str | None:
    """``key`` from the repository's own config file (its includes are not followed)."""
    found = subprocess.run(
        ["git", "config", "--file", str(path / "config"), "--get", key],
        env=_git_env(),
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def _init_bare(path: Path, request_id: int, token: str) -> None:
    """A bare repository with ``main`` as its branch, the owner's marker and token,
    and no hooks: none is copied (no template; ``init.templateDir`` is not read) and
    none runs (``core.hooksPath=/dev/null``)."""

    def run(*args: str) -> None:
        subprocess.run(["git", *args], env=_git_env(), check=True, capture_output=True, text=True)

    run("init", "--quiet", "--bare", "--template=", "--initial-branch=main", str(path))
    config = str(path / "config")
    for key, value in (
        ("core.hooksPath", os.devnull),
        (_MARKER_KEY, str(request_id)),
        (_TOKEN_KEY, token),
    ):
        run("config", "--file", config, key, value)
    (path / "hooks").mkdir(exist_ok=True)  # empty; runs only if core.hooksPath points here
    (path / "description").write_text(f"appgen request {request_id}\n")
