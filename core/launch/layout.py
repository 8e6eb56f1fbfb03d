"""Layouts around the app: one wrapper folder (``counter-app/``), the seed's
client/server pair, and JavaScript workspaces (monorepos)."""

from __future__ import annotations

import posixpath
import re

from core.launch.files import AppFiles, field_str_list
from core.launch.node import NodeProject, _spa_output, scan_node
from core.launch.plan import LaunchPlan, NodeBuild, not_deployable
from core.launch.python import scan_python

# Files whose presence says "the app is here", not in a folder below.
MANIFESTS = (
    "package.json",
    "requirements.txt",
    "pyproject.toml",
    "manage.py",
    "go.mod",
    "index.html",
    "dockerfile",
    "procfile",
)
PAIRS = (
    ("client", "server"),
    ("frontend", "backend"),
    ("frontend", "server"),
    ("client", "api"),
    ("web", "api"),
)


def app_folder(files: AppFiles) -> str:
    """The folder the app is in: the root, or its only folder when the root holds
    nothing but that folder and repository files (README, LICENSE, dotfiles)."""
    names = files.listdir("")
    if any(name.lower() in MANIFESTS for name in names):
        return ""
    folders = [n for n in names if not n.startswith(".") and files.is_dir(n)]
    if len(folders) == 1 and folders[0] not in ("src", "app", "public", "docs"):
        return folders[0]
    if folders == ["app"] and any(files.is_dir(f"app/{n}") for n in ("client", "server")):
        return "app"
    return ""


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if folder else name


def scan_client_server(files: AppFiles, folder: str) -> LaunchPlan | None:
    """A client folder and a server folder: one Fly app whose server listens on the
    internal port and serves the client's build, copied to ``<client>/<output>``
    beside the server as in the repository."""
    for client_name, server_name in PAIRS:
        client_dir, server_dir = _join(folder, client_name), _join(folder, server_name)
        if not (files.is_dir(client_dir) and files.is_dir(server_dir)):
            continue
        client = NodeProject(files, client_dir)
        if not client.exists and not files.is_file(_join(client_dir, "index.html")):
            continue
        server = scan_node(files, server_dir) or scan_python(files, server_dir)
        if server is None:
            return not_deployable(
                "client-server",
                f"{server_dir}/ has no Node or Python server that appgen recognises",
                folder=server_dir,
            )
        if not server.deployable:
            return server.model_copy(
                update={
                    "stack": f"client-server/{server.stack}",
                    "reason": f"server: {server.reason}",
                }
            )
        notes = list(server.notes)
        if client.exists and "build" in client.scripts:
            spa = _spa_output(client)
            output = spa[1] if spa else "dist"
            build = client.build(output=output)
        elif client.exists and not client.config_text("vite.config"):
            build = NodeBuild(folder=client_dir, has_dependencies=False, output=".")
            notes.append(f"{client_dir} has no build script: its files are served as they are")
        elif client.exists:
            return not_deployable(
                "client-server",
                f'{client_dir}/package.json has no build script (add "build": "vite build")',
                folder=server_dir,
            )
        else:
            build = NodeBuild(folder=client_dir, has_dependencies=False, output=".")
        served = posixpath.normpath(posixpath.join(client_name, build.output or "."))
        if not _server_mentions(files, server_dir, client_name):
            notes.append(
                f"the server does not seem to serve the client: make it serve ../{served} "
                "(the client's build sits there in the image)"
            )
        return server.model_copy(
            update={
                "stack": f"client-server/{server.stack}",
                "reason": f"client/server app: {server.reason}; the client's build "
                f"({served}/) is served by the server",
                "client": build,
                "notes": tuple(notes),
            }
        )
    return None


def _server_mentions(files: AppFiles, server_dir: str, client_name: str) -> bool:
    for path in files.walk(server_dir, (".js", ".mjs", ".cjs", ".ts", ".py")):
        text = files.read_text(path) or ""
        if client_name in text and re.search(r"static|sendFile|StaticFiles|send_from", text):
            return True
    return False


def scan_workspaces(files: AppFiles, folder: str) -> LaunchPlan | None:
    """npm/yarn/pnpm workspaces: one deployable app among them is deployed, installed
    from the root; several are not (one Fly app per repository)."""
    root = NodeProject(files, folder)
    if not root.exists:
        return None
    workspaces = root.package.get("workspaces")
    if isinstance(workspaces, dict):
        patterns = field_str_list(workspaces, "packages", files, f"{root.where} workspaces")
    else:
        patterns = field_str_list(root.package, "workspaces", files, root.where)
    pnpm = files.read_text(_join(folder, "pnpm-workspace.yaml")) or ""
    patterns += re.findall(r"^\s*-\s*['\"]?([\w./*-]+)['\"]?\s*$", pnpm, re.MULTILINE)
    if not patterns:
        return None
    members = []
    for pattern in patterns:
        base = pattern.rstrip("/").removesuffix("/*").removesuffix("/**")
        clean = files.relative(base, base=folder)
        if clean is None:
            continue
        if pattern.rstrip("/").endswith("*"):
            members += [
                _join(clean, d) for d in files.listdir(clean) if files.is_dir(_join(clean, d))
            ]
        else:
            members.append(clean)
    apps = [plan for member in members if (plan := scan_node(files, member)) and plan.deployable]
    if len(apps) != 1:
        names = ", ".join(p.folder for p in apps) or "none"
        return not_deployable(
            "monorepo",
            f"a workspace monorepo with {len(apps)} deployable apps ({names}): appgen "
            "deploys one app per repository; add a root Dockerfile for the one to run",
            runtime="node",
            folder=folder,
        )
    app = apps[0]
    manager, lockfile = root.lockfile()
    if manager != "npm" or app.runtime != "node":
        return not_deployable(
            "monorepo",
            f"a {manager} workspace with one app ({app.folder}): appgen renders npm "
            "workspaces only; add a root Dockerfile",
            runtime="node",
            folder=folder,
        )
    builds = tuple(
        f"npm run build --workspace={app.folder} --if-present" for _ in app.build_commands
    )
    return app.model_copy(
        update={
            "stack": f"monorepo/{app.stack}",
            "reason": f"npm workspaces; the app is {app.folder}: {app.reason}",
            "node": NodeBuild(folder=folder, manager="npm", lockfile=lockfile, build_script=False),
            "build_commands": builds,
        }
    )
