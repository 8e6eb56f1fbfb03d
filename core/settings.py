"""Settings: environment variables with the ``APPGEN_`` prefix, then ``.env``, then defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.excludes import MAX_FILE_BYTES

GeneratorKind = Literal["process", "docker", "ecs"]
AgentKind = Literal["template", "command", "claude"]
GitHostKind = Literal["local", "github"]


class Settings(BaseSettings):
    """Everything the orchestrator reads from its environment.

    Paths left unset are derived from ``home`` so that one variable
    (``APPGEN_HOME``) moves the whole embedded setup.
    """

    model_config = SettingsConfigDict(
        env_prefix="APPGEN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    home: Path = Field(
        default=Path("~/.appgen"),
        description="Root of the embedded defaults: workspace/, repos/ and the SQLite DB.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to sqlite:///$APPGEN_HOME/appgen.db.",
    )
    generator: GeneratorKind = Field(default="process", description="Where the generator runs.")
    generator_timeout: float = Field(
        default=1800.0, gt=0, description="Seconds before a generation is killed."
    )
    generator_slots: int = Field(
        default=4,
        gt=0,
        description="Generations that may run at once across all workers (a Prefect global "
        "concurrency limit, set by `appgen setup`).",
    )
    agent: AgentKind = Field(default="template", description="The coding agent to run.")
    agent_command: str | None = Field(
        default=None, description="Shell command run by the `command` agent in the app dir."
    )
    agent_env: list[str] = Field(
        default_factory=list,
        description="Extra environment variable names passed through to the generator "
        "(for example an agent's API key). Nothing else of the orchestrator's "
        "environment reaches it.",
    )
    docker_image: str = Field(
        default="appgen-generator:local",
        description="Generator image for APPGEN_GENERATOR=docker (`appgen build-image`).",
    )
    docker_cpus: float | None = Field(default=2.0, gt=0, description="CPU limit per container.")
    docker_memory: str | None = Field(default="4g", description="Memory limit per container.")
    docker_network: str | None = Field(
        default=None, description="Docker network mode of generator containers."
    )
    docker_user: str | None = Field(
        default=None, description="uid:gid of generator containers (default: the orchestrator's)."
    )
    docker_host_workspace: Path | None = Field(
        default=None,
        description="The workspace as the Docker engine sees it, when that differs from here.",
    )
    git_host: GitHostKind = Field(default="local", description="Where repositories live.")
    git_root: Path | None = Field(
        default=None, description="Directory of bare repositories for the local Git host."
    )
    ecs_cluster: str | None = Field(default=None, description="ECS cluster of generator tasks.")
    ecs_task_definition: str | None = Field(
        default=None, description="Task definition of the generator (family[:revision] or ARN)."
    )
    ecs_container: str = Field(default="generator", description="The generator container name.")
    ecs_subnets: list[str] = Field(default_factory=list, description="Subnets of generator tasks.")
    ecs_security_groups: list[str] = Field(
        default_factory=list, description="Security groups of generator tasks."
    )
    ecs_assign_public_ip: bool = Field(default=True, description="Public IP for generator tasks.")
    ecs_poll_seconds: float = Field(
        default=5.0, gt=0, description="First interval between ECS task status checks."
    )
    aws_endpoint_url: str | None = Field(
        default=None, description="ECS and CloudWatch Logs endpoint (a local stand-in)."
    )
    s3_bucket: str | None = Field(default=None, description="Bucket of generator tarballs.")
    s3_prefix: str = Field(default="generations", description="Key prefix of the tarballs.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint (an S3-compatible server)."
    )
    github_owner: str | None = Field(
        default=None, description="User or organisation that owns published repositories."
    )
    github_token: SecretStr | None = Field(default=None, description="GitHub token.")
    github_app_id: str | None = Field(default=None, description="GitHub App id.")
    github_app_private_key: SecretStr | None = Field(
        default=None, description="GitHub App private key (PEM)."
    )
    github_installation_id: int | None = Field(
        default=None, description="GitHub App installation id."
    )
    github_private: bool = Field(default=True, description="Create private repositories.")
    github_api_url: str = Field(default="https://api.github.com", description="REST API base.")
    github_git_url: str = Field(default="https://github.com", description="git base URL.")
    git_author_name: str = Field(default="appgen", description="Author of published commits.")
    git_author_email: str = Field(
        default="appgen@localhost", description="Author e-mail of published commits."
    )
    staging_dir: Path | None = Field(
        default=None,
        description="Where staged copies are made (default: the system temp dir). A tmpfs "
        "such as /dev/shm makes staging several times faster on a slow disk.",
    )
    fly_region: str = Field(default="iad", description="primary_region written to fly.toml.")
    max_file_bytes: int = Field(
        default=MAX_FILE_BYTES,
        gt=0,
        description="Files larger than this are left out of the repository "
        "(GitHub refuses files over 100 MB).",
    )

    @field_validator("home", "git_root", "staging_dir")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.git_root is None:
            self.git_root = self.home / "repos"
        if self.database_url is None:
            self.database_url = SecretStr(f"sqlite:///{self.home / 'appgen.db'}")
        if self.agent == "command" and not self.agent_command:
            raise ValueError(
                "APPGEN_AGENT=command needs APPGEN_AGENT_COMMAND: the shell command that "
                "writes the app (it runs with the app directory as its working directory)"
            )
        return self

    @property
    def workspace(self) -> Path:
        """Shared workspace: the generator writes ``workspace/{id}/app``."""
        return self.home / "workspace"
