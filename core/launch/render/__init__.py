"""Render an app's launch plan as the files Fly.io and Docker need: pure code, no Prefect.

``core.launch.scan`` says what the app is; this module only renders: ``fly.toml``
(tomlkit), and when the app has none of its own a ``Dockerfile`` (multi-stage where
there is a build, a non-root user that owns the app folder, lockfile-exact installs)
and a ``.dockerignore``; a ``.gitignore``; and a deploy section appended to the
README (or ``DEPLOY.md`` beside a README that is not markdown). A file the generator
wrote is never overwritten, and no file is added beside one whose name differs only
in letter case; in a revision, those appgen wrote last time are rendered again
unless someone edited them since. An app no scanner recognises is still published, with
``deployable=False`` and the reason, and deploy files that claim nothing.
"""

from __future__ import annotations

from pathlib import Path

from core.excludes import DEFAULT_EXCLUDES
from core.launch import scan
from core.launch.render.dockerfile import DOCKERIGNORE, dockerfile, unsafe_name
from core.launch.render.fly import fly_app_name, fly_toml
from core.launch.render.readme import add_deploy_section, deploy_section
from core.launch.render.writer import TreeWriter, take_back
from core.models import DeployFiles, RenderedFiles

__all__ = ["fly_app_name", "render_into"]


def render_into(
    app: Path, app_name: str, region: str, earlier: RenderedFiles | None = None
) -> DeployFiles:
    """Scan the staged app and add its deploy files in place. In a revision,
    ``earlier`` is what appgen rendered for the revision before: those files are
    rendered again unless someone edited them since, and those are kept."""
    edited = take_back(app, earlier) if earlier else []
    plan = scan(app)
    if plan.deployable and (name := unsafe_name(plan)) is not None:
        plan = plan.model_copy(
            update={
                "deployable": False,
                "reason": f"the name {name!r} has characters appgen does not write into "
                "a Dockerfile: rename it to letters, digits, '.', '_' and '-'",
            }
        )
    writer = TreeWriter(app, keep=frozenset(edited))
    if plan.dockerfile is not None:
        writer.kept.append(plan.dockerfile)
    text = dockerfile(plan)
    if text is not None and not writer.add("Dockerfile", text):
        # A Dockerfile-like name already exists; the scanner would have used a real one.
        plan = plan.model_copy(
            update={
                "deployable": False,
                "reason": f"{writer.existing('Dockerfile')} is in the way of the Dockerfile",
            }
        )
    if plan.deployable:
        ignore = plan.dockerfile is None or "/" not in plan.dockerfile
        if ignore:
            writer.add(".dockerignore", "\n".join(DOCKERIGNORE) + "\n")
    writer.add("fly.toml", fly_toml(app_name, region, plan))
    writer.add(".gitignore", "\n".join(DEFAULT_EXCLUDES) + "\n")
    add_deploy_section(writer, app_name, deploy_section(app_name, plan))
    built = plan.dockerfile or ("Dockerfile" if plan.deployable else None)
    return DeployFiles(
        framework=plan.stack,
        internal_port=plan.port if plan.deployable else None,
        health_path=plan.health_path if plan.deployable else None,
        written=writer.written,
        kept_from_generator=writer.kept,
        deployable=plan.deployable,
        deploy_reason=plan.reason,
        notes=list(plan.notes),
        dockerfile=built,
        rendered=writer.record(),
        kept_edited=edited,
    )
