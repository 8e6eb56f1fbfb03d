"""The fields of each configurable part, declared once.

A block inherits its part's fields (``DockerGenerator(GeneratorBlock, DockerOptions)``)
and the settings read the same fields from the environment under the part's prefix
(``APPGEN_DOCKER_IMAGE`` is ``DockerOptions.image``), so a block is built from the
settings in one call and a field added here is at once a block field, a setting and
a field of ``appgen config``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from core.egress import DEFAULT_MODEL_PRICES, EgressPreset
from core.excludes import MAX_FILE_BYTES

DEFAULT_GENERATOR_TIMEOUT = 1800.0
DEFAULT_DOCKER_IMAGE = "appgen-generator:local"
DEFAULT_PIDS_LIMIT = 1024
DEFAULT_MODEL_API_URL = "https://api.anthropic.com"
DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITHUB_GIT_URL = "https://github.com"


class ProcessOptions(BaseModel):
    """The process generator's own fields (top-level setting: ``APPGEN_TRUST_AGENT``)."""

    trust_agent: bool = Field(
        default=False,
        description="Run the agent unconfined, without the bubblewrap sandbox: it then "
        "sees everything this user can. Only for agents you trust.",
    )


class EgressOptions(BaseModel):
    """What every generator's agent may reach and spend, enforced by its egress gateway
    (top-level settings: ``APPGEN_AGENT_EGRESS``, ``APPGEN_MODEL_API_URL``, ...)."""

    agent_egress: EgressPreset | list[str] = Field(
        default="registries",
        description="What the agent may reach through the egress gateway, its only way "
        "out: `none`, `model` (its model API only), `registries` (the model API and PyPI, "
        "npm, the Go proxy and crates.io) or a JSON list of host patterns besides the "
        'model API (`["pypi.org", "*.example.com"]`). HTTPS is tunnelled to ports 80 and '
        "443, never decrypted; anything else gets a 403 naming this setting.",
        examples=["registries", '["pypi.org", "files.pythonhosted.org"]'],
    )
    agent_egress_methods: list[str] = Field(
        default_factory=list,
        description="JSON list of the HTTP methods plain-HTTP and model requests may use "
        '(`["GET", "HEAD", "OPTIONS"]`); empty: any.',
    )
    agent_max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Model tokens (input and output) after which the gateway refuses "
        'further model calls and the generation fails with "budget exhausted".',
    )
    agent_max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        description="Estimated model cost in US dollars after which the gateway refuses "
        "further model calls (priced by APPGEN_MODEL_PRICES).",
    )
    model_api_url: str = Field(
        default=DEFAULT_MODEL_API_URL,
        description="The model API the gateway relays the agent's calls to, with the key "
        "(ANTHROPIC_API_KEY, or CLAUDE_CODE_OAUTH_TOKEN, of the orchestrator) attached.",
    )
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_PRICES),
        description="JSON object of US dollars per million input and output tokens by "
        'model name prefix (`{"claude-sonnet-4": [3, 15], "default": [15, 75]}`); cache '
        "reads and writes are priced as input.",
    )


class DockerOptions(BaseModel):
    """The Docker generator's own fields (``APPGEN_DOCKER_*``)."""

    image: str = Field(
        default=DEFAULT_DOCKER_IMAGE,
        description="Generator image; its entrypoint is `python3 -m generator` "
        "(`appgen build-image` builds one without a registry).",
        examples=[DEFAULT_DOCKER_IMAGE, "123456789012.dkr.ecr.us-east-1.amazonaws.com/gen:1"],
    )
    host_workspace: Path | None = Field(
        default=None,
        description="The workspace as the Docker engine sees it, when that differs "
        "(for example an orchestrator that itself runs in a container).",
    )
    container_workspace: str = Field(
        default="/workspace", description="Where the workspace is mounted in the container."
    )
    user: str | None = Field(
        default=None,
        description="uid:gid the container runs as; default: the orchestrator's own, so "
        "the files it writes belong to the orchestrator.",
        examples=["1000:1000", "0:0"],
    )
    cpus: float | None = Field(default=2.0, gt=0, description="CPU limit (cores).")
    memory: str | None = Field(default="4g", description="Memory limit.", examples=["4g"])
    network_mode: str | None = Field(
        default=None,
        description="Docker network of the generator container; default `none`: its only "
        "way out is the egress gateway's socket. Another network lets the agent reach it "
        "around the gateway.",
        examples=["none", "bridge"],
    )
    read_only_root: bool = Field(
        default=True,
        description="Mount the image's root filesystem read-only: the agent writes only "
        "its app directory and a private /tmp (its HOME). Turn off for an agent that must "
        "install into the image (for example `npm install -g`).",
    )
    pids_limit: int | None = Field(
        default=DEFAULT_PIDS_LIMIT,
        gt=0,
        description=f"Most processes the container may run at once (default "
        f"{DEFAULT_PIDS_LIMIT}); None: the engine's default.",
    )


class EcsOptions(BaseModel):
    """The ECS generator's own fields (``APPGEN_ECS_*``)."""

    cluster: str = Field(description="ECS cluster name or ARN.", examples=["appgen"])
    task_definition: str = Field(
        description="Task definition family[:revision] or ARN; its container runs "
        "`python3 -m generator` and logs with the awslogs driver.",
        examples=["appgen-generator:3"],
    )
    container_name: str = Field(default="generator", description="The generator container.")
    subnets: list[str] = Field(
        description="Subnets for the task's network interface (a JSON list).",
        examples=[["subnet-0abc"]],
    )
    security_groups: list[str] = Field(
        default_factory=list, description="Security groups (a JSON list)."
    )
    assign_public_ip: bool = Field(
        default=True, description="Give the task a public IP (needed without a NAT gateway)."
    )
    container_app_dir: str = Field(
        default="/home/generator/app", description="Where the app is written in the task."
    )
    poll_seconds: float = Field(
        default=5.0, gt=0, description="First interval between task status checks."
    )


class S3Options(BaseModel):
    """The S3 artifact store's own fields (``APPGEN_S3_*``)."""

    bucket: str = Field(description="Bucket for generator tarballs.", examples=["appgen-artifacts"])
    prefix: str = Field(default="generations", description="Key prefix of the tarballs.")
    retention_days: int = Field(default=30, gt=0, description="Lifecycle expiry of tarballs.")
    max_members: int = Field(default=50_000, gt=0, description="Most entries in a tarball.")
    max_file_bytes: int = Field(
        default=MAX_FILE_BYTES, gt=0, description="Largest file accepted from a tarball."
    )
    max_total_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Most bytes extracted from one tarball."
    )


class GitHubOptions(BaseModel):
    """The GitHub host's own fields (``APPGEN_GITHUB_*``)."""

    owner: str = Field(
        description="User or organisation that owns the repositories.", examples=["acme-apps"]
    )
    token: SecretStr | None = Field(
        default=None,
        description="Token with the `repo` scope (classic) or Administration and Contents "
        "write (fine-grained). Leave empty to authenticate as a GitHub App.",
    )
    app_id: str | None = Field(default=None, description="GitHub App id (App authentication).")
    app_private_key: SecretStr | None = Field(
        default=None, description="The GitHub App's PEM private key."
    )
    installation_id: int | None = Field(
        default=None, description="The App's installation id on the owner."
    )
    private: bool = Field(default=True, description="Create repositories as private.")
    api_url: str = Field(
        default=DEFAULT_GITHUB_API_URL,
        description="REST API base URL.",
        examples=[DEFAULT_GITHUB_API_URL, "https://github.example.com/api/v3"],
    )
    git_url: str = Field(
        default=DEFAULT_GITHUB_GIT_URL,
        description="Base URL git pushes to.",
        examples=[DEFAULT_GITHUB_GIT_URL, "https://github.example.com"],
    )
    max_rate_limit_wait_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Longest total wait for GitHub rate limits before giving up.",
    )
