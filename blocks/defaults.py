"""The blocks the settings describe, for runs that name no saved block."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block
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
from core.settings import Settings

B = TypeVar("B", bound=Block)

_CLAUDE_KEYS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")


def generator(settings: Settings, saved: str | None = None) -> GeneratorBlock:
    """The saved generator block named ``saved`` ("type-slug/name"), or the one the
    settings describe."""
    if saved:
        return _load(saved, GeneratorBlock)
    if settings.generator == "process":
        return ProcessGenerator(
            workspace=settings.workspace,
            timeout_seconds=settings.generator_timeout,
            env_allowlist=_agent_allowlist(settings),
            trust_agent=settings.trust_agent,
            network=settings.agent_network == "on",
        )
    if settings.generator == "docker":
        return docker_generator(settings)
    return ecs_generator(settings)


def docker_generator(settings: Settings) -> DockerGenerator:
    return DockerGenerator(
        image=settings.docker_image,
        workspace=settings.workspace,
        host_workspace=settings.docker_host_workspace,
        env_allowlist=_agent_allowlist(settings),
        user=settings.docker_user,
        cpus=settings.docker_cpus,
        memory=settings.docker_memory,
        network_mode=settings.docker_network,
        timeout_seconds=settings.generator_timeout,
    )


def ecs_generator(settings: Settings) -> EcsGenerator:
    missing = [
        name
        for name, value in (
            ("APPGEN_ECS_CLUSTER", settings.ecs_cluster),
            ("APPGEN_ECS_TASK_DEFINITION", settings.ecs_task_definition),
            ("APPGEN_ECS_SUBNETS", settings.ecs_subnets),
        )
        if not value
    ]
    if missing:
        raise InvalidRequest(f"APPGEN_GENERATOR=ecs needs {', '.join(missing)}")
    return EcsGenerator(
        credentials=_aws_credentials(settings.aws_endpoint_url),
        artifacts=s3_artifact_store(settings),
        cluster=settings.ecs_cluster,
        task_definition=settings.ecs_task_definition,
        container_name=settings.ecs_container,
        subnets=settings.ecs_subnets,
        security_groups=settings.ecs_security_groups,
        assign_public_ip=settings.ecs_assign_public_ip,
        env_allowlist=_agent_allowlist(settings),
        timeout_seconds=settings.generator_timeout,
        poll_seconds=settings.ecs_poll_seconds,
    )


def s3_artifact_store(settings: Settings) -> S3ArtifactStore:
    if not settings.s3_bucket:
        raise InvalidRequest("AWS mode needs APPGEN_S3_BUCKET: the bucket for generator tarballs")
    return S3ArtifactStore(
        credentials=_aws_credentials(settings.s3_endpoint_url),
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        max_file_bytes=settings.max_file_bytes,
    )


def _aws_credentials(endpoint_url: str | None) -> AwsCredentials:
    """Credentials from the standard AWS chain (environment, profile, task role)."""
    return AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url))


def _agent_allowlist(settings: Settings) -> list[str]:
    """The agent's own key is the one credential a generator may receive."""
    allowlist = list(settings.agent_env)
    if settings.agent == "claude":
        allowlist += [key for key in _CLAUDE_KEYS if key not in allowlist]
    return allowlist


def git_host(settings: Settings) -> GitHost:
    if settings.git_host == "local":
        assert settings.git_root is not None  # derived from home by the settings
        return LocalGitHost(root=settings.git_root)
    if not settings.github_owner:
        raise InvalidRequest("APPGEN_GIT_HOST=github needs APPGEN_GITHUB_OWNER (user or org)")
    try:
        return GitHubHost(
            owner=settings.github_owner,
            token=settings.github_token,
            app_id=settings.github_app_id,
            app_private_key=settings.github_app_private_key,
            installation_id=settings.github_installation_id,
            private=settings.github_private,
            api_url=settings.github_api_url,
            git_url=settings.github_git_url,
        )
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def database(settings: Settings) -> Database:
    assert settings.database_url is not None  # derived from home by the settings
    return Database(url=settings.database_url)


def _load(slug: str, kind: type[B]) -> B:
    try:
        block = Block.load(slug)
    except ValueError as exc:
        raise InvalidRequest(
            f"no saved block {slug!r} (use 'block-type-slug/name'; `prefect block ls` lists them)"
        ) from exc
    if not isinstance(block, kind):
        raise InvalidRequest(
            f"the saved block {slug!r} is a {type(block).__name__}, not a {kind.__name__}"
        )
    return block
