"""The launch plan: what a scanner found out about an app, and all the renderer needs.

A scanner returns one plan or nothing; ``core.launch.render`` turns a plan into
``fly.toml``, a Dockerfile and a README section without looking at the app again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Runtime = Literal["node", "bun", "python", "go", "static", "docker"]
PackageManager = Literal["npm", "yarn", "yarn-berry", "pnpm", "bun"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeBuild(_Frozen):
    """How to install (and build) one Node project folder."""

    folder: str = Field(description="The project's folder, relative to the repository root.")
    version: str = Field(default="22", description="Node major version (engines.node).")
    manager: PackageManager = "npm"
    lockfile: str | None = Field(default=None, description="The lockfile, in `folder`.")
    has_dependencies: bool = True
    build_script: bool = Field(default=False, description="package.json has scripts.build.")
    output: str | None = Field(
        default=None, description="Where the build writes its output, relative to `folder`."
    )


class LaunchPlan(_Frozen):
    """How to build and run one app as one Fly app."""

    stack: str = Field(description="What was recognised: 'express', 'nextjs', 'django', …")
    deployable: bool
    reason: str = Field(description="Why the app is (or is not) deployable, for people.")
    runtime: Runtime | None = None
    version: str | None = Field(default=None, description="Runtime version: '20', '3.12' …")
    port: int | None = None
    folder: str = Field(default="", description="The app's folder in the repository.")
    node: NodeBuild | None = Field(default=None, description="The Node project to install.")
    client: NodeBuild | None = Field(
        default=None, description="A client built separately and served by the server."
    )
    python_install: Literal["requirements", "pyproject", "uv", "poetry", "none"] | None = None
    python_extra: tuple[str, ...] = Field(
        default=(), description="Pinned packages the start command needs (gunicorn …)."
    )
    build_commands: tuple[str, ...] = ()
    start: tuple[str, ...] = Field(default=(), description="The container's command (argv).")
    shell_start: str | None = Field(
        default=None, description="A start command that needs a shell ($PORT in a Procfile)."
    )
    release_command: str | None = Field(
        default=None,
        description="A one-off step Fly runs before each deploy (fly.toml [deploy]).",
    )
    static_dir: str | None = Field(
        default=None, description="For static sites: the site's folder (built or as is)."
    )
    static_entries: tuple[str, ...] = Field(
        default=(),
        description="For an unbuilt static site: the entries that are the site "
        "(folders end in '/').",
    )
    spa: bool = Field(default=False, description="Serve index.html for unknown paths.")
    health_path: str | None = Field(
        default=None,
        description="A health route the app defines ('/healthz'): Fly's HTTP check and the "
        "smoke check ask it instead of '/'.",
    )
    runtime_copy: tuple[tuple[str, str], ...] = Field(
        default=(),
        description="(build-stage path, runtime path) pairs, relative to the app folder: "
        "copy only these from the build stage (else the whole folder).",
    )
    go_package: str = "."
    collectstatic: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    dockerfile: str | None = Field(
        default=None, description="The app's own Dockerfile, kept (relative to the root)."
    )
    notes: tuple[str, ...] = Field(default=(), description="Caveats for the README.")

    @property
    def owns_dockerfile(self) -> bool:
        return self.dockerfile is not None


def not_deployable(stack: str, reason: str, **fields: Any) -> LaunchPlan:
    return LaunchPlan(stack=stack, deployable=False, reason=reason, **fields)
