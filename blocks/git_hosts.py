"""Git hosts: where published repositories live."""

from __future__ import annotations

import abc
import errno
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import git
from prefect.blocks.core import Block
from pydantic import Field

from core.errors import PublishError
from core.models import RemoteRepository

MAX_NAME_ATTEMPTS = 50
_MARKER_SECTION, _MARKER_OPTION = "appgen", "requestid"
# Repositories are built under this prefix, then renamed into place. Host-safe names
# never start with '.', so a temp dir can never be taken for a candidate.
_TEMP_PREFIX = ".tmp-"
# The renamed target exists: another request (or this one, concurrently) got there first.
_TARGET_EXISTS = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)


def candidate_names(name: str):
    """``name``, then ``name-2``, ``name-3`` …: the deterministic order in which a
    request claims a repository name that someone else may already hold."""
    yield name
    for suffix in range(2, MAX_NAME_ATTEMPTS + 1):
        yield f"{name}-{suffix}"


class GitHost(Block, abc.ABC):
    """Creates repositories and tells git how to reach them."""

    @abc.abstractmethod
    def ensure_repository(self, name: str, request_id: int) -> RemoteRepository:
        """The request's repository, created if needed. A name held by another
        request moves on to the next candidate name; one held by this request is reused."""

    def git_config(self) -> dict[str, str]:
        """Git configuration for talking to this host, passed to git through the
        environment: credentials go here, never into a URL or onto disk."""
        return {}


class LocalGitHost(GitHost):
    """Bare repositories in a local directory, created on demand: the embedded
    stand-in for GitHub. Each repository records the request that owns it in its
    config (``appgen.requestid``).

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

    def ensure_repository(self, name: str, request_id: int) -> RemoteRepository:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(
                f"cannot use {self.root} as the Git root ({exc.strerror}); point "
                "APPGEN_GIT_ROOT at a writable directory"
            ) from exc
        for candidate in candidate_names(name):
            path = self.root / f"{candidate}.git"
            # Whatever is at the name already, or got there first, keeps it unless ours.
            there_first = os.path.lexists(path) or not self._create(path, request_id)
            if there_first and self._owner(path) != str(request_id):
                continue
            url = path.absolute().as_uri()
            return RemoteRepository(name=candidate, url=url, push_url=url)
        raise PublishError(
            f"the names {name!r} to {name}-{MAX_NAME_ATTEMPTS} are all taken in {self.root}; "
            "choose another --app-name"
        )

    def _create(self, path: Path, request_id: int) -> bool:
        """Create the bare repository ``path`` owned by ``request_id``, atomically:
        it is built complete (marker included) in a temp dir, then renamed into place,
        so no one ever sees it half made and of two racing requests exactly one wins.
        False when something was at ``path`` first."""
        temp = self.root / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            _init_bare(temp, request_id)
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

    @staticmethod
    def _owner(path: Path) -> str | None:
        try:
            reader = git.Repo(path).config_reader("repository")
            return str(reader.get_value(_MARKER_SECTION, _MARKER_OPTION, default="")) or None
        except (git.InvalidGitRepositoryError, git.NoSuchPathError, OSError):
            return None


def _init_bare(path: Path, request_id: int) -> None:
    """A bare repository with ``main`` as its branch, the owner's marker and no hooks:
    neither the user's nor the system's git configuration (``init.templateDir``
    included) is read, and no template is copied."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }

    def run(*args: str) -> None:
        subprocess.run(["git", *args], env=env, check=True, capture_output=True, text=True)

    run("init", "--quiet", "--bare", "--template=", "--initial-branch=main", str(path))
    run(
        "config",
        "--file",
        str(path / "config"),
        f"{_MARKER_SECTION}.{_MARKER_OPTION}",
        str(request_id),
    )
    (path / "hooks").mkdir(exist_ok=True)  # empty: where an operator may add their own
    (path / "description").write_text(f"appgen request {request_id}\n")
