"""Git hosts: where published repositories live."""

from __future__ import annotations

import abc
from pathlib import Path

import git
from prefect.blocks.core import Block
from pydantic import Field

from core.errors import PublishError
from core.models import RemoteRepository

MAX_NAME_ATTEMPTS = 50
_MARKER_SECTION, _MARKER_OPTION = "appgen", "requestid"


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
            if not path.exists():
                self._create(path, request_id)
            elif self._owner(path) != str(request_id):
                continue
            url = path.absolute().as_uri()
            return RemoteRepository(name=candidate, url=url, push_url=url)
        raise PublishError(
            f"the names {name!r} to {name}-{MAX_NAME_ATTEMPTS} are all taken in {self.root}; "
            "choose another --app-name"
        )

    @staticmethod
    def _create(path: Path, request_id: int) -> None:
        try:
            repo = git.Repo.init(path, mkdir=True, bare=True, initial_branch="main")
            with repo.config_writer() as config:
                config.set_value(_MARKER_SECTION, _MARKER_OPTION, str(request_id))
            (path / "description").write_text(f"appgen request {request_id}\n")
        except (OSError, git.GitCommandError) as exc:
            raise PublishError(f"cannot create the repository {path}: {exc}") from exc

    @staticmethod
    def _owner(path: Path) -> str | None:
        try:
            reader = git.Repo(path).config_reader("repository")
            return str(reader.get_value(_MARKER_SECTION, _MARKER_OPTION, default="")) or None
        except (git.InvalidGitRepositoryError, git.NoSuchPathError, OSError):
            return None
