"""The blocks the settings describe: what a run uses where no block is saved, and
what ``appgen setup`` saves. Each part's fields are read under its prefix
(``APPGEN_DOCKER_*`` …) with the block's own field names, so each block is built in
one call; only what the settings derive (paths under ``APPGEN_HOME``, the agent's
variables, the AWS endpoints) is put together here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from blocks.database import Database
from blocks.generators import GeneratorBlock, ProcessGenerator
from blocks.git_hosts import GitHost, LocalGitHost
from core.errors import InvalidRequest
from core.options import EgressOptions, ProcessOptions
from core.settings import HomeSettings, ReapSettings, Settings

B = TypeVar("B")

if TYPE_CHECKING:  # the backends are imported by the runs that use them
    from prefect_aws import AwsCredentials

    from blocks.docker_generator import DockerGenerator
    from blocks.ecs_generator import EcsGenerator
    from blocks.s3_artifact_store import S3ArtifactStore

# Each block type: its module (imported on first use: the AWS, Docker and GitHub
# libraries cost a second of start-up to runs that use none of them) and class, and
# the prefix of its settings.
BLOCK_TYPES: dict[str, tuple[str, str, str]] = {
    "appgen-process-generator": ("blocks.generators", "ProcessGenerator", "APPGEN_"),
    "appgen-docker-generator": ("blocks.docker_generator", "DockerGenerator", "APPGEN_DOCKER_"),
    "appgen-ecs-generator": ("blocks.ecs_generator", "EcsGenerator", "APPGEN_ECS_"),
    "appgen-volume-artifact-store": ("blocks.artifact_stores", "VolumeArtifactStore", "APPGEN_"),
    "appgen-s3-artifact-store": ("blocks.s3_artifact_store", "S3ArtifactStore", "APPGEN_S3_"),
    "appgen-local-git-host": ("blocks.git_hosts", "LocalGitHost", "APPGEN_GIT_"),
    "appgen-github-host": ("blocks.github_host", "GitHubHost", "APPGEN_GITHUB_"),
    "appgen-database": ("blocks.database", "Database", "APPGEN_DATABASE_"),
}
_GENERATOR_TYPES = {
    "process": "appgen-process-generator",
    "docker": "appgen-docker-generator",
    "ecs": "appgen-ecs-generator",
}
_GIT_HOST_TYPES = {"local": "appgen-local-git-host", "github": "appgen-github-host"}


def block_type(slug: str) -> type | None:
    """The class of an appgen block type, its module imported (None for another type)."""
    if slug not in BLOCK_TYPES:
        return None
    module, name, _ = BLOCK_TYPES[slug]
    kind: type = getattr(importlib.import_module(module), name)
    return kind


def env_prefix(slug: str) -> str:
    return BLOCK_TYPES[slug][2]


def generator_kind(settings: Settings) -> type[GeneratorBlock]:
    return block_type(_GENERATOR_TYPES[settings.generator])  # type: ignore[return-value]


def git_host_kind(settings: Settings) -> type[GitHost]:
    return block_type(_GIT_HOST_TYPES[settings.git_host])  # type: ignore[return-value]


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


def docker_generator(settings: ReapSettings) -> DockerGenerator:
    """The Docker generator the settings describe. From ``ReapSettings`` alone (what
    ``appgen reap`` reads) it has the block's default deadline and allow-list: enough
    to find and remove the containers of dead runs, which is all ``reap`` does."""
    from blocks.docker_generator import DockerGenerator

    return _build(
        DockerGenerator,
        settings.docker.model_dump(),
        workspace=settings.workspace,
        **(_generator_fields(settings) if isinstance(settings, Settings) else {}),
    )


def ecs_generator(settings: Settings, artifacts: S3ArtifactStore | None = None) -> EcsGenerator:
    from blocks.ecs_generator import EcsGenerator

    return _build(
        EcsGenerator,
        settings.ecs.model_dump(),
        credentials=_aws_credentials(settings.aws_endpoint_url),
        artifacts=artifacts or s3_artifact_store(settings),
        **_generator_fields(settings),
    )


def s3_artifact_store(settings: Settings) -> S3ArtifactStore:
    from blocks.s3_artifact_store import S3ArtifactStore

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
    from blocks.github_host import GitHubHost

    return _build(GitHubHost, settings.github.model_dump())


def database(settings: HomeSettings) -> Database:
    assert settings.database_url is not None  # derived from home by the settings
    return Database(url=settings.database_url)


def _generator_fields(settings: Settings) -> dict[str, Any]:
    """The fields every generator takes from the general settings."""
    return {
        "timeout_seconds": settings.generator_timeout,
        "env_allowlist": list(settings.agent_env),
        **settings.model_dump(include=set(EgressOptions.model_fields)),
    }


def _aws_credentials(endpoint_url: str | None) -> AwsCredentials:
    """Credentials from the standard AWS chain (environment, profile, task role)."""
    from prefect_aws import AwsClientParameters, AwsCredentials

    return AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url))


def _build(kind: type[B], fields: dict[str, Any], **derived: Any) -> B:
    """``kind`` from a part's settings; a combination the block refuses (say a GitHub
    host with neither a token nor an App) is an ``InvalidRequest``."""
    try:
        return kind(**fields, **derived)
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
