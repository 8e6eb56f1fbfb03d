"""The blocks the settings describe: what a run uses where no block is saved, and
what ``appgen setup`` saves. Each part's fields are read under its prefix
(``APPGEN_DOCKER_*`` …) with the block's own field names, so each block is built in
one call; only what the settings derive (paths under ``APPGEN_HOME``, the agent's
variables, the AWS endpoints) is put together here."""

from __future__ import annotations

from typing import Any, TypeVar

from prefect_aws import AwsClientParameters, AwsCredentials
from pydantic import ValidationError

from blocks.database import Database
from blocks.docker_generator import DockerGenerator
from blocks.ecs_generator import EcsGenerator
from blocks.generators import GeneratorBlock, ProcessGenerator
from blocks.git_hosts import GitHost, LocalGitHost
from blocks.github_host import GitHubHost
from blocks.s3_artifact_store import S3ArtifactStore
from core.errors import InvalidRequest
from core.options import ProcessOptions
from core.settings import Settings

B = TypeVar("B")

_CLAUDE_KEYS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
# The settings' variables of each block kind, as `appgen config` names them.
ENV_PREFIXES: dict[type, str] = {
    ProcessGenerator: "APPGEN_",
    DockerGenerator: "APPGEN_DOCKER_",
    EcsGenerator: "APPGEN_ECS_",
    S3ArtifactStore: "APPGEN_S3_",
    LocalGitHost: "APPGEN_GIT_",
    GitHubHost: "APPGEN_GITHUB_",
    Database: "APPGEN_DATABASE_",
}


def generator_kind(settings: Settings) -> type[GeneratorBlock]:
    return {"process": ProcessGenerator, "docker": DockerGenerator, "ecs": EcsGenerator}[
        settings.generator
    ]


def git_host_kind(settings: Settings) -> type[GitHost]:
    return {"local": LocalGitHost, "github": GitHubHost}[settings.git_host]


def generator(settings: Settings) -> GeneratorBlock:
    """The generator APPGEN_GENERATOR names, from the settings."""
    if settings.generator == "process":
        return ProcessGenerator(
            **settings.model_dump(include=set(ProcessOptions.model_fields)),
            workspace=settings.workspace,
            **_generator_fields(settings),
        )
    if settings.generator == "docker":
        return docker_generator(settings)
    return ecs_generator(settings)


def docker_generator(settings: Settings) -> DockerGenerator:
    return _build(
        DockerGenerator,
        settings.docker.model_dump(),
        workspace=settings.workspace,
        **_generator_fields(settings),
    )


def ecs_generator(settings: Settings, artifacts: S3ArtifactStore | None = None) -> EcsGenerator:
    return _build(
        EcsGenerator,
        settings.ecs.model_dump(),
        credentials=_aws_credentials(settings.aws_endpoint_url),
        artifacts=artifacts or s3_artifact_store(settings),
        **_generator_fields(settings),
    )


def s3_artifact_store(settings: Settings) -> S3ArtifactStore:
    return _build(
        S3ArtifactStore,
        settings.s3.model_dump(),
        credentials=_aws_credentials(settings.s3_endpoint_url),
    )


def git_host(settings: Settings) -> GitHost:
    """The Git host APPGEN_GIT_HOST names, from the settings."""
    if settings.git_host == "local":
        assert settings.git_root is not None  # derived from home by the settings
        return LocalGitHost(root=settings.git_root)
    return _build(GitHubHost, settings.github.model_dump())


def database(settings: Settings) -> Database:
    assert settings.database_url is not None  # derived from home by the settings
    return Database(url=settings.database_url)


def _generator_fields(settings: Settings) -> dict[str, Any]:
    """The fields every generator takes from the general settings."""
    return {
        "timeout_seconds": settings.generator_timeout,
        "env_allowlist": _agent_allowlist(settings),
    }


def _aws_credentials(endpoint_url: str | None) -> AwsCredentials:
    """Credentials from the standard AWS chain (environment, profile, task role)."""
    return AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url))


def _agent_allowlist(settings: Settings) -> list[str]:
    """The agent's own key is the one credential a generator may receive."""
    allowlist = list(settings.agent_env)
    if settings.agent == "claude":
        allowlist += [key for key in _CLAUDE_KEYS if key not in allowlist]
    return allowlist


def _build(kind: type[B], fields: dict[str, Any], **derived: Any) -> B:
    """``kind`` from a part's settings; a combination the block refuses (say a GitHub
    host with neither a token nor an App) is an ``InvalidRequest``."""
    try:
        return kind(**fields, **derived)
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
