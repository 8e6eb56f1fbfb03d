"""One-off steps an app needs before it serves: database migrations and the init
commands apps register. Django's ``migrate``, a Flask ``init-db`` command, Alembic's
``upgrade head`` and Prisma's ``migrate deploy`` are found here; a Procfile's own
``release:`` line is the app's word and is read in ``core.launch``.

Where a step goes follows the database (``core.launch.shell.before_serving``): Fly's
release machine for one that is external, the start command for a file in the image.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from core.launch.files import AppFiles, reads_database_url
from core.launch.node import NodeProject
from core.launch.plan import LaunchPlan
from core.launch.python import read_project
from core.launch.shell import before_serving

# A CLI command the app registers to create its database (Flask's tutorial, flaskr).
_INIT_DB = re.compile(r"""\.command\(\s*(["'])(init-db)\1""")
_SERVER_DATABASE = re.compile(r"postgres|mysql|mariadb|oracle|mssql|sqlserver|cockroach|mongodb")
_DJANGO_ENGINE = re.compile(r"""['"]ENGINE['"]\s*:\s*['"]([\w.]+)['"]""")
_ALEMBIC_URL = re.compile(r"^sqlalchemy\.url\s*=\s*(\S*)", re.MULTILINE)
_PRISMA_PROVIDER = re.compile(r"datasource\s+\w+\s*\{[^}]*?provider\s*=\s*\"(\w+)\"", re.DOTALL)


@dataclass(frozen=True)
class Step:
    """A command to run once before serving; it needs no shell quoting, so Fly's
    release_command and a shell read it alike."""

    what: str
    command: str
    external_database: bool
    note: str | None = None


def with_steps_before_serving(files: AppFiles, plan: LaunchPlan) -> LaunchPlan:
    """The plan with the one-off step its app needs (if any) put where its database is."""
    if not plan.deployable or plan.owns_dockerfile:
        return plan
    step = _python_step(files, plan) if plan.runtime == "python" else None
    if plan.runtime in ("node", "bun"):
        step = _prisma_step(files, plan.folder)
    if step is None:
        return plan
    server = plan.shell_start or shlex.join(plan.start)
    placed = before_serving(
        step.what, server, command=step.command, external_database=step.external_database
    )
    notes = (*plan.notes, placed.note, *((step.note,) if step.note else ()))
    if placed.release_command is not None:
        return plan.model_copy(update={"release_command": placed.release_command, "notes": notes})
    return plan.model_copy(update={"shell_start": placed.start, "start": (), "notes": notes})


def _python_step(files: AppFiles, plan: LaunchPlan) -> Step | None:
    folder = plan.folder
    project = read_project(files, folder)
    if project is None:
        return None
    external = reads_database_url(files, folder)
    if plan.stack == "django":
        settings = plan.env.get("DJANGO_SETTINGS_MODULE", "").replace(".", "/")
        text = files.read_text(project.path(settings + ".py")) or ""
        engines = _DJANGO_ENGINE.findall(text)
        external = external or any(_SERVER_DATABASE.search(engine) for engine in engines)
        return Step("Django's migrate", "python manage.py migrate --no-input", external)
    alembic = files.read_text(project.path("alembic.ini"))
    if alembic is not None and project.has("alembic"):
        url = _ALEMBIC_URL.search(alembic)
        external = external or bool(url and _SERVER_DATABASE.match(url.group(1)))
        return Step("Alembic's upgrade", "alembic upgrade head", external)
    if plan.stack == "flask" and "FLASK_APP" in plan.env:
        sources = files.walk(folder, (".py",))
        if any(_INIT_DB.search(files.read_text(path) or "") for path in sources):
            return Step("Flask's init-db command", "flask init-db", external)
    return None


def _prisma_step(files: AppFiles, folder: str) -> Step | None:
    project = NodeProject(files, folder)
    schema = files.read_text(project.path("prisma/schema.prisma"))
    if schema is None or not files.is_dir(project.path("prisma/migrations")):
        return None
    provider = _PRISMA_PROVIDER.search(schema)
    external = provider is None or provider.group(1) != "sqlite"
    note = None
    if "prisma" not in project.deps:
        # The image installs production dependencies only; npx would fetch the CLI.
        note = (
            "Prisma: the prisma CLI is not in dependencies, so `npx prisma migrate deploy` "
            "downloads it at each run: move prisma from devDependencies to dependencies"
        )
    return Step("Prisma's migrate deploy", "npx prisma migrate deploy", external, note)
