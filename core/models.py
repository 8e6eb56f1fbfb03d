"""Typed values passed between the flow, its tasks and the blocks."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidRequest

# GitHub's rule for repository names, which the local host follows too so that a
# request publishes under the same name wherever it goes.
_REPO_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_FILLER_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "me",
        "us",
        "my",
        "our",
        "please",
        "build",
        "make",
        "create",
        "write",
        "generate",
        "give",
        "i",
        "want",
        "need",
        "that",
        "which",
        "with",
        "for",
        "to",
        "of",
        "and",
        "simple",
        "small",
        "little",
        "new",
    }
)
_MAX_DERIVED_WORDS = 4


def check_prompt(prompt: str) -> str:
    """Return ``prompt`` if it asks for something, else raise ``InvalidRequest``."""
    if not prompt.strip():
        raise InvalidRequest("the prompt is empty: describe the app to build")
    return prompt


def check_app_name(name: str) -> str:
    """Return ``name`` if a Git host accepts it as a repository name, else raise."""
    if not _REPO_NAME.fullmatch(name) or name.startswith(".") or name.lower().endswith(".git"):
        raise InvalidRequest(
            f"app name {name!r} is not a safe repository name: use 1-100 letters, digits, "
            "'-', '_' or '.', not starting with '.' and not ending in '.git' "
            "(for example 'counter-app')"
        )
    return name


def derive_app_name(prompt: str) -> str:
    """A short, safe repository name from a prompt: 'Build me a counter app' → 'counter-app'."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    meaningful = [word for word in words if word not in _FILLER_WORDS] or words
    name = "-".join(meaningful[:_MAX_DERIVED_WORDS])[:60].strip("-")
    return name or "app"


GeneratorKind = Literal["process", "docker", "ecs"]
AgentKind = Literal["template", "command", "claude"]
GitHostKind = Literal["local", "github"]

# What get_run_logger() returns, and what the steps below a task log to.
RunLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class PublishRequest(Frozen):
    """One user request, validated: what the flow is asked to build."""

    request_id: int = Field(gt=0)
    prompt: str
    app_name: str
    registered_at: datetime = Field(description="When the request's row was created.")
    published_sha: str | None = Field(
        default=None, description="The commit appgen last pushed for this request, if any."
    )
    repo_id: str | None = Field(
        default=None,
        description="The Git host's id of the repository recorded for this request, if any: "
        "what proves a repository already at its name is its own.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str) -> str:
        return check_prompt(prompt)

    @field_validator("app_name")
    @classmethod
    def _safe_name(cls, app_name: str) -> str:
        return check_app_name(app_name)


class GenerationSpec(Frozen):
    """Everything that decides what the generator writes, and nothing else: the cache
    key of a generation. Limits, poll intervals and timeouts are not part of it, so
    changing them between a failure and its re-run never generates again."""

    request_id: int
    # A request id can come round again (a new database); its row's creation time
    # cannot, so a cached generation is never mistaken for a new request's.
    registered_at: datetime
    prompt: str
    agent: AgentKind
    agent_command: str | None = None
    agent_env: tuple[str, ...] = Field(
        default=(), description="Names of the variables the agent is given (not their values)."
    )
    output: str = Field(
        default="", description="Where the generator leaves its output (a workspace, a bucket)."
    )
    revision: int = Field(default=1, description="Which revision of the request this is.")
    base_commit: str | None = Field(
        default=None,
        description="The commit whose tree the agent starts from (a revision); None: empty.",
    )
    earlier_prompts: tuple[str, ...] = Field(
        default=(), description="The prompts of the revisions the base is built from, oldest first."
    )


class ArtifactRef(Frozen):
    """Where a finished generation left the app: a directory, or (on AWS) an S3 object."""

    kind: Literal["volume", "s3"]
    location: str


class ModelUsage(Frozen):
    """What the model API reported using, summed over a generation's calls."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_model: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="Input and output tokens per model."
    )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, model: str, input_tokens: int, output_tokens: int) -> ModelUsage:
        """This usage with one more call's."""
        before = self.by_model.get(model, (0, 0))
        return ModelUsage(
            requests=self.requests + 1,
            input_tokens=self.input_tokens + input_tokens,
            output_tokens=self.output_tokens + output_tokens,
            by_model=self.by_model | {model: (before[0] + input_tokens, before[1] + output_tokens)},
        )


class GenerationReceipt(Frozen):
    """What a generation contacted, what was refused and what it cost, as measured by
    its egress gateway (outside the generator, where the agent cannot change it)."""

    egress: str = Field(description="The egress policy (APPGEN_AGENT_EGRESS).")
    confinement: str = ""
    image: str | None = Field(default=None, description="The generator image's digest.")
    duration_seconds: float = 0.0
    contacted: dict[str, int] = Field(
        default_factory=dict, description="Requests or tunnels per allowed host:port."
    )
    refused: dict[str, int] = Field(
        default_factory=dict, description="Refused attempts per host:port (and why)."
    )
    usage: ModelUsage = Field(default_factory=ModelUsage)
    cost_usd: float = 0.0
    budget_exhausted: str | None = Field(
        default=None, description="Which budget stopped further model calls, if one did."
    )
    attempts_dropped: bool = Field(
        default=False,
        description="The agent tried so many connections that later ones went unrecorded.",
    )


class GeneratorRun(Frozen):
    """A finished, successful generation."""

    request_id: int
    artifact: ArtifactRef
    duration_seconds: float
    log_tail: list[str] = Field(default_factory=list)
    confinement: str = Field(
        default="", description="How the agent was confined, for the run log and summary."
    )
    receipt: GenerationReceipt | None = Field(
        default=None, description="What the agent contacted and spent (None without a gateway)."
    )


class SourceTree(Frozen):
    """A readable copy of the generated app; ``temporary`` ones are removed after use."""

    path: Path
    temporary: bool


ExclusionKind = Literal["ignored", "outside-link", "special-file", "too-large", "hardlink"]


class ExcludedPath(Frozen):
    """A path left out of the repository, and why. ``size`` is None for directories,
    which are skipped without being walked."""

    path: str
    kind: ExclusionKind
    detail: str
    size: int | None = None


class StagedTree(Frozen):
    """The filtered copy of the app that will be committed."""

    path: Path
    kept_files: int
    kept_links: int
    kept_bytes: int
    excluded: list[ExcludedPath]

    @property
    def excluded_bytes(self) -> int:
        """Bytes of the excluded files; excluded directories are not walked, so not counted."""
        return sum(item.size or 0 for item in self.excluded)

    def largest_excluded(self, count: int = 10) -> list[ExcludedPath]:
        """Excluded directories first (their size is unknown), then files by size."""
        return sorted(
            self.excluded, key=lambda item: (item.size is not None, -(item.size or 0), item.path)
        )[:count]

    def skipped(self) -> list[ExcludedPath]:
        """Paths left out for safety or size rather than by an ignore rule."""
        return [item for item in self.excluded if item.kind != "ignored"]


class RenderedFiles(Frozen):
    """What appgen wrote into a tree as deploy files, to tell later whether someone
    changed them: each whole file's SHA-256, and each section appended to a README."""

    files: dict[str, str] = Field(default_factory=dict)
    sections: dict[str, str] = Field(default_factory=dict)


class DeployFiles(Frozen):
    """What render_deploy_files found and wrote. ``deployable`` is False when no launch
    scanner knew how to run the app; ``deploy_reason`` says why either way."""

    framework: str
    internal_port: int | None
    health_path: str | None = Field(
        default=None, description="The app's health route, which checks ask instead of '/'."
    )
    written: list[str]
    kept_from_generator: list[str]
    deployable: bool = True
    deploy_reason: str = ""
    notes: list[str] = Field(default_factory=list)
    dockerfile: str | None = Field(
        default=None, description="The Dockerfile a deploy builds, relative to the app root."
    )
    rendered: RenderedFiles = Field(default_factory=RenderedFiles)
    kept_edited: list[str] = Field(
        default_factory=list,
        description="Deploy files appgen wrote before that were edited since, so kept as they are.",
    )


VerifyMode = Literal["off", "build", "smoke"]
Verified = Literal["built", "served", "failed"]


class DeployCheck(Frozen):
    """The outcome of the build-and-smoke check (APPGEN_VERIFY); ``verified`` is None
    when nothing was checked."""

    mode: VerifyMode
    verified: Verified | None = None
    seconds: float = 0.0
    detail: str = ""
    log_tail: list[str] = Field(default_factory=list)


class BaseTree(Frozen):
    """The tree a revision starts from: a checkout of ``commit``, the tip of ``branch``
    on the Git host when it was fetched."""

    path: Path
    commit: str
    branch: str


class RemoteRepository(Frozen):
    """A repository on a Git host. ``url`` is for people and the database;
    ``push_url`` is what git talks to. Neither ever carries a credential."""

    name: str
    url: str
    push_url: str
    id: str | None = None


PublishMode = Literal["main", "pull-request"]


class PublishedRepo(Frozen):
    """The repository a request was published to, and the commit now on ``main`` — or
    on ``branch``, when the commit went to the request's pull-request branch."""

    name: str
    url: str
    commit_sha: str
    new_commit: bool
    branch: str | None = Field(
        default=None, description="The branch pushed instead of main (pull-request mode)."
    )
    main_moved_on: bool = Field(
        default=False,
        description="main held commits appgen did not make, so the branch was pushed instead.",
    )
    pull_request_url: str | None = None


class PullRequest(Frozen):
    """The request's pull request on the Git host, and what publishing did to it."""

    number: int
    url: str
    action: Literal["opened", "updated", "reopened"]


class CommitAuthor(Frozen):
    name: str
    email: str


SecretScanMode = Literal["block", "warn", "off"]


class SecretFinding(Frozen):
    """A secret found in the staged tree: where, and by which rule — never the secret."""

    path: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.rule})"


class SecretScan(Frozen):
    """The outcome of the secret scan (APPGEN_SECRET_SCAN) of a staged tree."""

    mode: SecretScanMode
    scanned_files: int = 0
    findings: list[SecretFinding] = Field(default_factory=list)


class RequestStatus(StrEnum):
    PENDING = "pending"
    GENERATING = "generating"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RequestStatus.PUBLISHED, RequestStatus.FAILED, RequestStatus.CANCELLED)


class LeaseHolder(Frozen):
    """Who holds a request's claim or a generator slot: a flow run, in a process
    (``host:pid:start``, see ``core.processes``)."""

    flow_run_id: str
    process: str


@dataclass(frozen=True)
class Column:
    """How a request field is stored: its SQL size (None: unbounded text). Every
    field of ``RequestRecord`` is a column of the requests table, derived from the
    model by ``core.database``."""

    length: int | None = None


class RequestOutcome(BaseModel):
    """What a publish records about a request: each field is a column of the requests
    table, and a field of ``appgen status --json`` and ``appgen publish --json``. A new
    one is a field here and a migration (tests/test_database.py compares the two)."""

    app_name: Annotated[str | None, Column(100)] = None
    repo_url: str | None = None
    repo_id: Annotated[str | None, Column(64)] = Field(
        default=None, description="The Git host's id of the repository."
    )
    commit_sha: Annotated[str | None, Column(64)] = None
    error: str | None = None
    deployable: bool | None = Field(
        default=None, description="What the launch scanners said (None until rendered)."
    )
    deploy_reason: str | None = None
    verified: Annotated[Verified | None, Column(16)] = Field(
        default=None, description="What the deploy check (APPGEN_VERIFY) found."
    )
    verify_detail: str | None = Field(
        default=None,
        description="What the deploy check saw: the answer that served, or why it failed.",
    )
    branch: Annotated[str | None, Column(255)] = Field(
        default=None, description="The branch pushed instead of main (its pull request's head)."
    )
    pull_request_url: str | None = None
    agent_tokens: int | None = Field(
        default=None, description="Model tokens the generation used (input and output)."
    )
    agent_cost_usd: float | None = Field(
        default=None, description="The generation's estimated model cost in US dollars."
    )
    receipt: GenerationReceipt | None = Field(
        default=None,
        description="The generation's receipt: hosts contacted and refused, tokens, cost, "
        "duration, confinement and image.",
    )
    revision: int | None = Field(
        default=None,
        description="The revision of the request the latest run worked on (the first is 1).",
    )


class Timestamped(BaseModel):
    """A row's creation and last change."""

    created_at: datetime
    updated_at: datetime

    @field_validator("created_at", "updated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # SQLite keeps no time zone; every timestamp we write is UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class RequestRecord(RequestOutcome, Timestamped):
    """One row of the requests table, as the CLI and the flow see it."""

    request_id: int
    prompt: str
    status: Annotated[RequestStatus, Column(20)]
    flow_run_id: Annotated[str | None, Column(64)] = Field(
        default=None, description="The flow run that registered or holds the request."
    )
    claimed_by: Annotated[str | None, Column(64)] = Field(
        default=None, description="The flow run holding the right to work on the request."
    )


class RequestUpdate(RequestOutcome, Frozen):
    """A change to a request's row; fields left unset are not touched."""

    request_id: int
    status: RequestStatus
    prompt: str | None = None
    flow_run_id: str | None = None

    def changes(self) -> dict[str, Any]:
        """The columns this update writes: the fields it was given."""
        return self.model_dump(exclude_unset=True, exclude={"request_id"})


class ReviewNote(Frozen):
    """One piece of review feedback on a request's pull request: a review comment on a
    line (``path``, ``line``) or the body of a review."""

    kind: Literal["comment", "review"]
    id: int
    author: str
    body: str
    path: str | None = None
    line: int | None = None

    def quoted(self) -> str:
        """The note as the prompt quotes it."""
        where = (
            f"`{self.path}:{self.line}`"
            if self.path and self.line
            else (f"`{self.path}`" if self.path else "the pull request")
        )
        text = "\n   ".join(self.body.strip().splitlines())
        return f"On {where}, {self.author} wrote:\n   {text}"


class RevisionOutcome(BaseModel):
    """What a revision records: each field is a column of the revisions table."""

    base_commit: Annotated[str | None, Column(64)] = Field(
        default=None, description="The commit the revision's agent started from."
    )
    commit_sha: Annotated[str | None, Column(64)] = Field(
        default=None, description="The commit that published the revision."
    )
    changed: bool | None = Field(
        default=None, description="False when the revision changed nothing (no commit)."
    )
    error: str | None = None
    agent_tokens: int | None = None
    agent_cost_usd: float | None = None
    rendered: RenderedFiles | None = Field(
        default=None, description="The deploy files appgen wrote for this revision."
    )
    review: list[ReviewNote] | None = Field(
        default=None, description="The review feedback this revision addresses (--from-review)."
    )


class RevisionRecord(RevisionOutcome, Timestamped):
    """One row of the revisions table: revision ``revision`` of request ``request_id``
    (the first publish is revision 1)."""

    request_id: int
    revision: int
    prompt: str
    status: Annotated[RequestStatus, Column(20)]
    flow_run_id: Annotated[str | None, Column(64)] = None


class RevisionUpdate(RevisionOutcome, Frozen):
    """A change to a revision's row; fields left unset are not touched."""

    status: RequestStatus

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class PublishOutcome(RequestOutcome, Frozen):
    """What ``generate_and_publish`` returns, and what ``appgen publish --json`` prints
    (with the flow run's id)."""

    request_id: int | None
    status: RequestStatus
    secret_findings: list[SecretFinding] = Field(
        default_factory=list,
        description="Secrets found and published anyway (APPGEN_SECRET_SCAN=warn).",
    )
    changed: bool | None = Field(
        default=None, description="False when the run published no new commit (nothing changed)."
    )

    @classmethod
    def of_record(cls, record: RequestRecord, **changes: object) -> PublishOutcome:
        """The outcome a row records, with ``changes``."""
        fields = record.model_dump(include=set(cls.model_fields))
        return cls.model_validate(fields | changes)


class ConfiguredPart(Frozen):
    """Where a run's part (generator, git host, artifact store, database) came from: a
    saved block, or the settings when none is saved."""

    part: str
    kind: str  # the block class, e.g. DockerGenerator
    block: str | None = None  # "block-type-slug/name" of a saved block
    env_prefix: str | None = None  # the settings' variables, e.g. APPGEN_DOCKER_

    @property
    def source(self) -> str:
        if self.block:
            return f"saved block {self.block}"
        return f"settings ({self.env_prefix}*)" if self.env_prefix else "settings"

    def field_label(self, field: str) -> str:
        """How a field of this part is named to people: ``APPGEN_GITHUB_TOKEN`` for
        settings, ``appgen-github-host/default: token`` for a saved block."""
        if self.block:
            return f"{self.block}: {field}"
        return f"{self.env_prefix or 'APPGEN_'}{field.replace('.', '_').upper()}"
