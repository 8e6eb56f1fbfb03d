"""Settings: environment variables with the ``APPGEN_`` prefix, then ``.env``, then defaults."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import InvalidRequest
from core.excludes import MAX_FILE_BYTES
from core.paths import display_path

GeneratorKind = Literal["process", "docker", "ecs"]
AgentKind = Literal["template", "command", "claude"]
GitHostKind = Literal["local", "github"]
# The database backends blocks/database.py implements.
DATABASE_BACKENDS = ("sqlite", "postgresql")
# A list setting is JSON; this field decodes it itself, so that bad JSON is a
# validation error naming the variable rather than pydantic-settings' SettingsError.
JsonList = Annotated[list[str], NoDecode]


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
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request's claim or a generator slot whose holder has not renewed it "
        "for this long is taken over (a holder killed on this host is noticed at once).",
    )
    agent: AgentKind = Field(default="template", description="The coding agent to run.")
    trust_agent: bool = Field(
        default=False,
        description="Run a process-mode agent unconfined, without the bubblewrap sandbox: "
        "only for agents you trust.",
    )
    agent_network: Literal["on", "none"] = Field(
        default="on", description="`none` cuts a process-mode agent off the network."
    )
    agent_command: str | None = Field(
        default=None, description="Shell command run by the `command` agent in the app dir."
    )
    agent_env: JsonList = Field(
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
    ecs_subnets: JsonList = Field(default_factory=list, description="Subnets of generator tasks.")
    ecs_security_groups: JsonList = Field(
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
    require_deployable: bool = Field(
        default=False,
        description="Fail the publish, before anything is pushed, when no launch scanner "
        "knows how to run the app (deployable: false).",
    )
    verify: Literal["off", "build", "smoke"] = Field(
        default="off",
        description="Check the deploy files before pushing: `build` the image with the "
        "local Docker engine, or `smoke`: build, run it and wait for an HTTP answer.",
    )
    verify_timeout: float = Field(
        default=900.0, gt=0, description="Seconds a deploy check's image build may go silent."
    )
    verify_answer_seconds: float = Field(
        default=60.0, gt=0, description="Seconds a smoke check waits for an HTTP answer."
    )
    publish_mode: Literal["main", "pull-request"] = Field(
        default="main",
        description="`pull-request`: the first publish of a request creates main, every later "
        "one pushes the branch appgen/request-N and opens or updates its pull request. In "
        "`main` mode a main that moved on gets the same branch and pull request.",
    )
    secret_scan: Literal["block", "warn", "off"] = Field(
        default="block",
        description="Scan the staged app for secrets before anything is created or pushed: "
        "`block` fails the publish when one is found, `warn` publishes and lists them, "
        "`off` skips the scan.",
    )
    max_file_bytes: int = Field(
        default=MAX_FILE_BYTES,
        gt=0,
        description="Files larger than this are left out of the repository "
        "(GitHub refuses files over 100 MB).",
    )

    @field_validator("agent_env", "ecs_subnets", "ecs_security_groups", mode="before")
    @classmethod
    def _json_list(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return []
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(
                'not valid JSON: give a JSON list of strings, such as ["A", "B"]'
            ) from None

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

    def check_usable(self) -> None:
        """Refuse settings that name a place appgen cannot use, before anything is
        created: raises ``InvalidRequest`` naming the setting and what to do. Checks
        without side effects; opening the database is the caller's next step."""
        _check_directory("APPGEN_HOME", self.home)
        if self.git_host == "local":
            assert self.git_root is not None  # derived from home
            _check_directory("APPGEN_GIT_ROOT", self.git_root)
        if self.staging_dir is not None:
            _check_directory("APPGEN_STAGING_DIR", self.staging_dir, must_exist=True)
        self.check_database_url()

    def check_database_url(self) -> None:
        """Refuse a database URL that cannot work whatever the server says: not a URL,
        a backend appgen does not support, a driver that is not installed, or a SQLite
        file that cannot be created. Raises ``InvalidRequest``."""
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        setting = "APPGEN_DATABASE_URL"
        assert self.database_url is not None  # derived from home
        try:
            url = sa.make_url(self.database_url.get_secret_value())
        except ArgumentError:
            raise InvalidRequest(
                f"{setting} is not a database URL: give an SQLAlchemy URL such as "
                "sqlite:////path/to/appgen.db or postgresql+psycopg://user@host/appgen"
            ) from None
        shown = url.render_as_string(hide_password=True)
        if url.get_backend_name() not in DATABASE_BACKENDS:
            raise InvalidRequest(
                f"{setting}={shown}: appgen supports SQLite and PostgreSQL databases; "
                "give a sqlite:/// or postgresql+psycopg:// URL"
            )
        try:
            url.get_dialect().import_dbapi()
        except NoSuchModuleError:
            raise InvalidRequest(
                f"{setting}={shown}: SQLAlchemy has no driver {url.get_driver_name()!r} "
                f"for {url.get_backend_name()}; use postgresql+psycopg://"
            ) from None
        except ImportError as exc:
            raise InvalidRequest(
                f"{setting}={shown}: its driver is not installed ({exc.name}); for "
                "PostgreSQL: pip install 'appgen-orchestrator[postgres]'"
            ) from None
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            database = Path(url.database).absolute()
            if os.path.lexists(database):
                if not database.is_file() or not os.access(database, os.R_OK | os.W_OK):
                    raise InvalidRequest(
                        f"{setting}: {display_path(str(database))} is not a writable file; "
                        f"point {setting} at a SQLite file appgen may write"
                    )
            else:
                _check_directory(setting, database.parent, what="the SQLite file's directory")


def _check_directory(
    setting: str, path: Path, *, must_exist: bool = False, what: str | None = None
) -> None:
    """``path`` is a writable directory or, unless ``must_exist``, can be made one."""
    shown = display_path(str(path))
    what = f"{what} {shown}" if what else f"{setting}={shown}"
    fix = f"point {setting} at a writable directory"
    try:
        if os.path.lexists(path):
            if not path.is_dir():
                raise InvalidRequest(f"{what} is not a directory; {fix}")
            if not os.access(path, os.W_OK | os.X_OK):
                raise InvalidRequest(f"{what} is not writable; {fix}")
            return
        if must_exist:
            raise InvalidRequest(f"{what} does not exist; create it or {fix}")
        ancestor = next(p for p in path.parents if os.path.lexists(p))
        if not ancestor.is_dir():
            raise InvalidRequest(
                f"{what} cannot be created: {display_path(str(ancestor))} is not a directory; {fix}"
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise InvalidRequest(
                f"{what} cannot be created: {display_path(str(ancestor))} is not writable; {fix}"
            )
    except OSError as exc:
        raise InvalidRequest(f"{what} cannot be checked ({exc.strerror}); {fix}") from None
