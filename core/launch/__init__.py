"""Launch scanners: what an app is and how to run it, in the spirit of ``fly launch``.

``scan(root)`` tries the scanners from the most to the least specific and returns one
``LaunchPlan``; ``core.launch.render`` renders it. Scanners read the app only
through ``AppFiles`` (regular files inside the tree, size caps, typed fields), and
run nothing.

Order: the app's own Dockerfile → client/server layout → one service folder with a
Dockerfile → workspaces (monorepo) → Node → Python → Go → static site; a Procfile
``web:`` line replaces the start command of the Node or Python plan; otherwise the
one-off steps the app needs before serving (``core.launch.steps``) are added.
"""

from __future__ import annotations

from pathlib import Path

from core.launch.docker import procfile_command, scan_dockerfile, scan_service_dockerfile
from core.launch.files import AppFiles, reads_database_url
from core.launch.go import scan_go
from core.launch.health import with_health_path
from core.launch.layout import app_folder, scan_client_server, scan_workspaces
from core.launch.node import NodeProject, scan_node
from core.launch.plan import LaunchPlan, NodeBuild, not_deployable
from core.launch.python import GUNICORN, UVICORN, read_project, scan_python
from core.launch.shell import ShellCommand, before_serving
from core.launch.static import scan_static
from core.launch.steps import with_steps_before_serving

__all__ = ["LaunchPlan", "NodeBuild", "scan"]


def scan(root: Path) -> LaunchPlan:
    """The launch plan of the app in ``root`` (never raises on what the app contains)."""
    files = AppFiles(root)
    folder = app_folder(files)
    plan = _scan(files, folder)
    notes = tuple(dict.fromkeys((*plan.notes, *files.notes)))
    return plan.model_copy(update={"notes": notes})


def _scan(files: AppFiles, folder: str) -> LaunchPlan:
    family = _family(files, folder)
    own = scan_dockerfile(files, folder, family)
    if own is not None:
        return own
    for scanner in (scan_client_server, scan_service_dockerfile, scan_workspaces):
        plan = scanner(files, folder)
        if plan is not None:
            return plan
    if family is not None:
        return family
    return not_deployable(
        "unknown",
        "no scanner matched: appgen found no Dockerfile, package.json, requirements.txt, "
        "pyproject.toml, go.mod or index.html it could run" + (f" in {folder}/" if folder else ""),
        folder=folder,
    )


def _family(files: AppFiles, folder: str) -> LaunchPlan | None:
    plan = scan_node(files, folder) or scan_python(files, folder) or scan_go(files, folder)
    web = procfile_command(files, folder)
    if web is not None and (plan is None or plan.runtime in ("node", "python")):
        procfile = _with_procfile(files, folder, plan, web)
        if procfile is not None:
            return with_health_path(files, procfile)
    if plan is not None:
        return with_health_path(files, with_steps_before_serving(files, plan))
    return scan_static(files, folder)


def _with_procfile(
    files: AppFiles, folder: str, plan: LaunchPlan | None, web: str
) -> LaunchPlan | None:
    """The plan (or just the app's runtime and installs) with the Procfile's web
    command as its start command."""
    if plan is None or (plan.node is None and plan.python_install is None):
        plan = _runtime_base(files, folder)
        if plan is None:
            return None
    notes = plan.notes
    release_command = None
    if (release := procfile_command(files, folder, "release")) is not None:
        step = before_serving(
            "the Procfile's release step",
            web,
            command=release,
            external_database=reads_database_url(files, folder),
        )
        release_command, web, notes = step.release_command, step.start, (*notes, step.note)
    command = ShellCommand.parse(web)
    extra = plan.python_extra
    if plan.runtime == "python":
        project = read_project(files, folder)
        server = command.server.removeprefix("exec ").split()[0] if command.server else ""
        pinned = {"gunicorn": GUNICORN, "uvicorn": UVICORN}.get(server)
        if pinned and project is not None and not project.has(server) and pinned not in extra:
            extra = (*extra, pinned)
    port = plan.port or 8080
    if command.keeps_shell:
        notes = (
            *notes,
            "the Procfile's web command has a pipe, `||` or a background job, so it runs "
            "under `sh`, which does not pass the stop signal on: a stop waits for Fly's "
            "kill timeout",
        )
    return plan.model_copy(
        update={
            "stack": f"procfile/{plan.stack}",
            "deployable": True,
            "reason": f"Procfile web: {web}",
            "start": (),
            "shell_start": web,
            "port": port,
            "python_extra": extra,
            "env": {**plan.env, "PORT": str(port)},
            "notes": notes,
            "release_command": release_command,
        }
    )


def _runtime_base(files: AppFiles, folder: str) -> LaunchPlan | None:
    """Only the runtime and the installs of a Node or Python project."""
    node = NodeProject(files, folder)
    if node.exists:
        return LaunchPlan(
            stack="node",
            deployable=False,
            reason="",
            runtime="node",
            version=node.version,
            folder=folder,
            node=node.build(),
        )
    python = read_project(files, folder)
    if python is not None:
        return LaunchPlan(
            stack="python",
            deployable=False,
            reason="",
            runtime="python",
            version=python.version,
            folder=folder,
            python_install=python.install,
        )
    return None
