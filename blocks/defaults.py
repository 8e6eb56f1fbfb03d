"""The blocks the settings describe, for runs that name no saved block."""

from __future__ import annotations

from blocks.artifact_stores import ArtifactStore, VolumeArtifactStore
from blocks.database import Database
from blocks.generators import GeneratorBlock, ProcessGenerator
from blocks.git_hosts import GitHost, LocalGitHost
from core.errors import InvalidRequest
from core.settings import Settings

_CLAUDE_KEYS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")


def generator(settings: Settings) -> GeneratorBlock:
    if settings.generator != "process":
        raise _not_available("APPGEN_GENERATOR", settings.generator)
    allowlist = list(settings.agent_env)
    if settings.agent == "claude":
        allowlist += [key for key in _CLAUDE_KEYS if key not in allowlist]
    return ProcessGenerator(
        workspace=settings.workspace,
        timeout_seconds=settings.generator_timeout,
        env_allowlist=allowlist,
    )


def artifact_store(settings: Settings) -> ArtifactStore:
    if settings.generator != "process":
        raise _not_available("APPGEN_GENERATOR", settings.generator)
    return VolumeArtifactStore(workspace=settings.workspace)


def git_host(settings: Settings) -> GitHost:
    if settings.git_host != "local":
        raise _not_available("APPGEN_GIT_HOST", settings.git_host)
    assert settings.git_root is not None  # derived from home by the settings
    return LocalGitHost(root=settings.git_root)


def database(settings: Settings) -> Database:
    assert settings.database_url is not None  # derived from home by the settings
    return Database(url=settings.database_url)


def _not_available(variable: str, value: str) -> InvalidRequest:
    return InvalidRequest(
        f"{variable}={value} is not available in this version of appgen; "
        "use the embedded default or save a block for it"
    )
