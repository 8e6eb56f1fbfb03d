"""Settings: environment variables with the ``APPGEN_`` prefix, then ``.env``, then defaults."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Self, TypeVar, get_origin

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import InvalidRequest
from core.excludes import MAX_FILE_BYTES
from core.models import (
    AgentKind,
    GeneratorKind,
    GitHostKind,
    PublishMode,
    SecretScanMode,
    VerifyMode,
)
from core.options import (
    DEFAULT_GENERATOR_TIMEOUT,
    DockerOptions,
    EcsOptions,
    EgressOptions,
    GitHubOptions,
    ProcessOptions,
    S3Options,
)
from core.paths import display_path

# The database backends blocks/database.py implements.
DATABASE_BACKENDS = ("sqlite", "postgresql")
# A list setting is JSON, decoded by _decode_json_list.
JsonList = Annotated[list[str], NoDecode]


def _decode_json_list(value: object) -> object:
    """A list setting is JSON; decoded here so that bad JSON is a validation error
    naming the variable rather than pydantic-settings' SettingsError."""
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


class _PartSettings(BaseSettings):
    """A configurable part's fields (declared once in ``core.options``) read from the
    environment under the part's prefix. Read only when the part is used, so that a
    part's required fields are required only then."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", enable_decoding=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _json_lists(cls, value: object, info: ValidationInfo) -> object:
        field = cls.model_fields[info.field_name] if info.field_name else None
        if field is not None and get_origin(field.annotation) is list:
            return _decode_json_list(value)
        return value


class DockerSettings(DockerOptions, _PartSettings):
    model_config = SettingsConfigDict(env_prefix="APPGEN_DOCKER_")


class EcsSettings(EcsOptions, _PartSettings):
    model_config = SettingsConfigDict(env_prefix="APPGEN_ECS_")


class S3Settings(S3Options, _PartSettings):
    model_config = SettingsConfigDict(env_prefix="APPGEN_S3_")


class GitHubSettings(GitHubOptions, _PartSettings):
    model_config = SettingsConfigDict(env_prefix="APPGEN_GITHUB_")


P = TypeVar("P", bound=_PartSettings)


def _read_part(part: type[P]) -> P:
    """``part`` read from the environment; a missing or bad value is an
    ``InvalidRequest`` naming its variable."""
    try:
        return part()
    except ValidationError as exc:
        raise InvalidRequest(
            describe_settings_error(exc, part.model_config["env_prefix"])
        ) from None


def describe_settings_error(error: ValidationError, prefix: str = "APPGEN_") -> str:
    """One line naming each bad variable and what is wrong with it."""
    problems = "; ".join(
        f"{prefix}{'_'.join(map(str, e['loc'])).upper()}: "
        + ("not set" if e["type"] == "missing" else e["msg"].removeprefix("Value error, "))
        for e in error.errors()
    )
    return f"invalid settings: {problems}"


class HomeSettings(BaseSettings):
    """Where appgen keeps its state: all that ``appgen status`` and ``appgen server``
    read, so that they run whatever the rest of the settings say (an agent setting
    being wrong does not keep anyone from stopping the server)."""

    model_config = SettingsConfigDict(
        env_prefix="APPGEN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    home: Path = Field(
        default=Path("~/.appgen"),
        description="Root of the embedded defaults: workspace/, repos/, the SQLite DB and "
        "the local Prefect server's state (server/).",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the appgen database (requests, claims, generator "
        "slots): sqlite:/// or postgresql+psycopg:// (the `postgres` extra); default "
        "sqlite:///$APPGEN_HOME/appgen.db.",
    )
    server_start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds `appgen server start` (or a first publish) waits for the "
        "local Prefect server to answer.",
    )
    server_idle_minutes: float = Field(
        default=120.0,
        ge=0,
        description="The local Prefect server stops itself after this many minutes with no "
        "client connected, no flow run in progress and no `appgen` command using it (0: "
        "never); it also stops when its APPGEN_HOME is deleted. Read when it starts.",
    )

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _derive_database_url(self) -> Self:
        if self.database_url is None:
            self.database_url = SecretStr(f"sqlite:///{self.home / 'appgen.db'}")
        return self

    @property
    def workspace(self) -> Path:
        """Shared workspace: the generator writes ``workspace/{id}/app``."""
        return self.home / "workspace"

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


class ReapSettings(HomeSettings):
    """What ``appgen reap`` reads besides the home: which generator runs (and its
    Docker engine), how long a lease lasts and where runs stage; an agent setting
    being wrong does not keep anyone from repairing what dead runs left."""

    generator: GeneratorKind = Field(
        default="process",
        description="Where the generator runs: `process` (a child process, sandboxed unless "
        "APPGEN_TRUST_AGENT), `docker` (a container on the local engine) or `ecs` (an ECS "
        "Fargate task); chooses the generator block a run uses when none is named.",
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request's claim or a generator slot whose holder has not renewed it "
        "for this long is taken over (a holder killed on this host is noticed at once).",
    )
    staging_dir: Path | None = Field(
        default=None,
        description="Where staged copies are made (default: the system temp dir). A tmpfs "
        "such as /dev/shm makes staging several times faster on a slow disk.",
    )

    @field_validator("staging_dir")
    @classmethod
    def _expand_staging_dir(cls, value: Path | None) -> Path | None:
        return _absolute(value)

    @cached_property
    def docker(self) -> DockerSettings:
        """The Docker generator's fields (``APPGEN_DOCKER_*``)."""
        return _read_part(DockerSettings)


class Settings(ProcessOptions, EgressOptions, ReapSettings):
    """Everything the orchestrator reads from its environment.

    Paths left unset are derived from ``home`` so that one variable
    (``APPGEN_HOME``) moves the whole embedded setup.
    """

    generator_timeout: float = Field(
        default=DEFAULT_GENERATOR_TIMEOUT,
        gt=0,
        description="Seconds a generation may run before it is stopped; the generator keeps "
        "this deadline itself too (it exits 124). For generators built from the settings; a "
        "saved generator block has its own timeout_seconds.",
    )
    generator_slots: int = Field(
        default=4,
        gt=0,
        description="Generations that may run at once across every worker sharing the appgen "
        "database. Slots are leases in that database (its generator_slots table), not a "
        "Prefect concurrency limit: a run takes one before its generator starts, renews it by "
        "heartbeat and releases it when the generator ends; a dead holder's slot is taken "
        "over (APPGEN_LEASE_SECONDS).",
    )
    crash_resubmits: int = Field(
        default=2,
        ge=0,
        description="How many times a deployment run whose worker or host was lost "
        "(marked Crashed) is scheduled again by `appgen setup`'s automation; after that "
        "it fails instead of running.",
    )
    agent: AgentKind = Field(
        default="template",
        description="The coding agent: `template` (an offline scaffold, no model), `command` "
        "(APPGEN_AGENT_COMMAND) or `claude` (Claude Code).",
    )
    agent_command: str | None = Field(
        default=None,
        description="With APPGEN_AGENT=command: the shell command that writes the app, run "
        "with the app directory as its working directory and APPGEN_REQUEST_ID, "
        "APPGEN_PROMPT and APPGEN_APP_DIR in its environment.",
    )
    agent_env: JsonList = Field(
        default_factory=list,
        description="JSON list of extra environment variable names passed through to the "
        "generator (settings an agent reads). Nothing else of the orchestrator's "
        "environment reaches it, and never a model key (ANTHROPIC_API_KEY, "
        "CLAUDE_CODE_OAUTH_TOKEN): the egress gateway attaches that outside the generator.",
    )
    git_host: GitHostKind = Field(
        default="local",
        description="Where repositories live: `local` (bare repositories under "
        "APPGEN_GIT_ROOT) or `github` (APPGEN_GITHUB_*).",
    )
    git_root: Path | None = Field(
        default=None,
        description="Directory of bare repositories for the local Git host; default "
        "$APPGEN_HOME/repos.",
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of the ECS generator's AWS clients (ECS, CloudWatch Logs) when "
        "it is not AWS itself, such as a local stand-in; default: AWS.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of the S3 artifact store when it is not AWS S3, such as an "
        "S3-compatible server; default: AWS.",
    )
    git_author_name: str = Field(default="appgen", description="Author of published commits.")
    git_author_email: str = Field(
        default="appgen@localhost", description="Author e-mail of published commits."
    )
    fly_region: str = Field(default="iad", description="primary_region written to fly.toml.")
    require_deployable: bool = Field(
        default=False,
        description="Fail the publish, before anything is pushed, when no launch scanner "
        "knows how to run the app (deployable: false).",
    )
    verify: VerifyMode = Field(
        default="off",
        description="Check the deploy files before pushing: `build` the image with the "
        "local Docker engine, or `smoke`: build, run it and wait for an answer at `/` "
        "(a 5xx fails the check).",
    )
    verify_timeout: float = Field(
        default=900.0, gt=0, description="Seconds a deploy check's image build may go silent."
    )
    verify_answer_seconds: float = Field(
        default=60.0, gt=0, description="Seconds a smoke check waits for an HTTP answer."
    )
    publish_mode: PublishMode = Field(
        default="main",
        description="`pull-request`: the first publish of a request creates main, every later "
        "one pushes the branch appgen/request-N and opens or updates its pull request. In "
        "`main` mode a main that moved on gets the same branch and pull request.",
    )
    secret_scan: SecretScanMode = Field(
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

    @field_validator("agent_env", mode="before")
    @classmethod
    def _json_list(cls, value: object) -> object:
        return _decode_json_list(value)

    @field_validator("git_root")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return _absolute(value)

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.git_root is None:
            self.git_root = self.home / "repos"
        if self.agent == "command" and not self.agent_command:
            raise ValueError(
                "APPGEN_AGENT=command needs APPGEN_AGENT_COMMAND: the shell command that "
                "writes the app (it runs with the app directory as its working directory)"
            )
        return self

    @cached_property
    def ecs(self) -> EcsSettings:
        """The ECS generator's fields (``APPGEN_ECS_*``); raises ``InvalidRequest``
        naming what is missing."""
        return _read_part(EcsSettings)

    @cached_property
    def s3(self) -> S3Settings:
        """The S3 artifact store's fields (``APPGEN_S3_*``)."""
        return _read_part(S3Settings)

    @cached_property
    def github(self) -> GitHubSettings:
        """The GitHub host's fields (``APPGEN_GITHUB_*``)."""
        return _read_part(GitHubSettings)

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


def _absolute(path: Path | None) -> Path | None:
    return path.expanduser().absolute() if path is not None else None


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


_PARTS: tuple[type[_PartSettings], ...] = (DockerSettings, EcsSettings, S3Settings, GitHubSettings)


def ignored_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each variable under a part's prefix (``APPGEN_DOCKER_*`` …) that is
    no setting, such as a misspelt or renamed one, with the nearest real name."""
    top_level = {f"APPGEN_{name.upper()}" for name in Settings.model_fields}
    lines = []
    for part in _PARTS:
        prefix = part.model_config["env_prefix"]
        known = {f"{prefix}{name.upper()}" for name in part.model_fields}
        for name in sorted(environ):
            if name.startswith(prefix) and name not in known | top_level:
                near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {near[0]}?" if near else ""
                lines.append(f"{name} is not a setting{hint}")
    return lines
