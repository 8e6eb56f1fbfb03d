"""The Dockerfile and .dockerignore of a launch plan, and the check that every
app-derived name in them is safe to write there."""

from __future__ import annotations

import re

from core.launch import LaunchPlan
from core.launch.render.go import go_dockerfile
from core.launch.render.node import node_dockerfile
from core.launch.render.python import python_dockerfile
from core.launch.render.static import static_dockerfile

DOCKERIGNORE = (
    ".git",
    "**/node_modules",
    "**/.venv",
    "**/__pycache__",
    "**/*.pyc",
    "**/.env",
    "**/.env.*",
    "!**/.env.example",
    "**/*.log",
    "**/.DS_Store",
    "**/.next",
    "**/.nuxt",
    "**/.output",
    "**/.svelte-kit",
    "**/coverage",
    "fly.toml",
    "Dockerfile",
    ".dockerignore",
)

# App-derived names that appear outside JSON strings in a Dockerfile (WORKDIR, COPY,
# RUN go build) must be plain: a folder called "x\nRUN curl … | sh" must not become a
# Dockerfile instruction.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._@+/-]*")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")


def dockerfile(plan: LaunchPlan) -> str | None:
    """The Dockerfile for the plan, or None (the app brings its own, or none can run)."""
    if not plan.deployable or plan.owns_dockerfile:
        return None
    render = {
        "node": node_dockerfile,
        "bun": node_dockerfile,
        "python": python_dockerfile,
        "go": go_dockerfile,
        "static": static_dockerfile,
    }.get(plan.runtime or "")
    return render(plan) if render else None


def unsafe_name(plan: LaunchPlan) -> str | None:
    """The first app-derived name the Dockerfile cannot carry safely, or None."""
    plain = [plan.folder, plan.static_dir or "", plan.go_package, plan.dockerfile or ""]
    plain += [build.folder for build in (plan.node, plan.client) if build is not None]
    plain += [build.output or "" for build in (plan.node, plan.client) if build is not None]
    plain += [path for pair in plan.runtime_copy for path in pair]
    for name in plain:
        if not _PLAIN_PATH.fullmatch(name):
            return name
    for name in (*plan.static_entries, *plan.start):
        if not _PRINTABLE.fullmatch(name):
            return name
    return None
