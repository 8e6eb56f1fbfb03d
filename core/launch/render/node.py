"""The Dockerfile of a Node (or Bun) app, and the Node build stages other runtimes
use (a client built beside a server, a static site built with Node)."""

from __future__ import annotations

import posixpath

from core.launch import LaunchPlan, NodeBuild
from core.launch.render.instructions import (
    HOME,
    USER,
    app_workdir,
    copy_source,
    env_line,
    in_folder,
    json_list,
    prepare_workdir,
    start_command,
)


def node_image(node: NodeBuild) -> str:
    return "oven/bun:1" if node.manager == "bun" else f"node:{node.version}-slim"


def install_command(node: NodeBuild, production: bool) -> str | None:
    """The lockfile-exact install command of a Node project (None: nothing to install)."""
    if not node.has_dependencies:
        return None
    locked = node.lockfile is not None
    if node.manager == "npm":
        command = "npm ci" if locked else "npm install"
        return command + (" --omit=dev" if production else "") + " --no-audit --no-fund"
    flags = {
        "yarn": (" --frozen-lockfile", " --production"),
        "yarn-berry": (" --immutable", ""),
        "pnpm": (" --frozen-lockfile", " --prod"),
        "bun": (" --frozen-lockfile", " --production"),
    }[node.manager]
    tool = "yarn" if node.manager == "yarn-berry" else node.manager
    return f"{tool} install" + (flags[0] if locked else "") + (flags[1] if production else "")


def uses_corepack(node: NodeBuild) -> bool:
    """pnpm and yarn 2+ come through corepack (enabled as root)."""
    return node.manager in ("pnpm", "yarn-berry")


def root_install(node: NodeBuild, production: bool) -> list[str]:
    """RUN lines of an install in a build stage (as root)."""
    install = install_command(node, production)
    if install is None:
        return []
    return [f"RUN corepack enable && {install}" if uses_corepack(node) else f"RUN {install}"]


def copy_manifests(node: NodeBuild, chown: bool) -> list[str]:
    names = [in_folder(node.folder, "package.json")]
    if node.lockfile:
        names.append(in_folder(node.folder, node.lockfile))
    if node.manager == "yarn-berry":  # its settings (nodeLinker …), when there are any
        names.append(in_folder(node.folder, ".yarnrc.ym[l]"))
    owner = f"--chown={USER} " if chown else ""
    return [f"COPY {owner}{json_list([*names, './'])}"]


def client_stage(plan: LaunchPlan) -> tuple[list[str], list[str]]:
    """(build stage lines, runtime COPY lines) for the client of a client/server app."""
    client = plan.client
    if client is None:
        return [], []
    name = posixpath.basename(client.folder)
    if not client.build_script:
        return [], [f"COPY --chown={USER} {copy_source(client.folder)} /app/{name}/"]
    run = {"pnpm": "pnpm run build", "bun": "bun run build"}.get(client.manager)
    run = run or ("yarn build" if client.manager.startswith("yarn") else "npm run build")
    stage = [
        f"FROM {node_image(client)} AS client",
        f"WORKDIR /client/{name}",
        *copy_manifests(client, chown=False),
        *root_install(client, production=False),
        f"COPY {copy_source(client.folder)} ./",
        f"RUN {run}",
        "",
    ]
    output = posixpath.normpath(posixpath.join(name, client.output or "."))
    return stage, [f"COPY --from=client --chown={USER} /client/{output} /app/{output}"]


def node_dockerfile(plan: LaunchPlan) -> str:
    """Node (or Bun): a build stage when there is a build; the runtime stage installs
    (or copies) as the runtime user, so it owns the app folder and its home."""
    node = plan.node
    assert node is not None
    image = node_image(node)
    workdir = app_workdir(plan)
    monorepo = node.folder != plan.folder  # installed from the workspace root
    client_lines, client_copy = client_stage(plan)
    env = {"NODE_ENV": "production", "HOME": HOME, **plan.env}
    runs_tool = plan.start[:1] in (("pnpm",), ("yarn",))
    lines = list(client_lines)
    if plan.build_commands:
        lines += [f"FROM {image} AS build", f"WORKDIR {workdir}"]
        if monorepo:
            lines += [f"COPY {copy_source(node.folder)} ./", *root_install(node, production=False)]
        else:
            lines += copy_manifests(node, chown=False) if install_command(node, False) else []
            lines += [*root_install(node, production=False), f"COPY {copy_source(node.folder)} ./"]
        lines += [f"RUN {command}" for command in plan.build_commands]
        if node.manager == "npm" and not plan.runtime_copy and install_command(node, False):
            lines.append("RUN npm prune --omit=dev --no-audit --no-fund")
        lines += ["", f"FROM {image}", env_line(env), *prepare_workdir(workdir)]
        lines += ["RUN corepack enable"] if uses_corepack(node) and runs_tool else []
        lines.append(f"USER {USER}")
        if plan.runtime_copy:
            lines += [
                f"COPY --from=build --chown={USER} {posixpath.join(workdir, src)} "
                f"{posixpath.normpath(posixpath.join(workdir, dst))}"
                for src, dst in plan.runtime_copy
            ]
        else:
            lines.append(f"COPY --from=build --chown={USER} {workdir} {workdir}")
    else:
        install = install_command(node, production=True)
        lines += [f"FROM {image}", env_line(env), *prepare_workdir(workdir)]
        lines += ["RUN corepack enable"] if uses_corepack(node) and install else []
        lines.append(f"USER {USER}")
        if monorepo:
            lines.append(f"COPY --chown={USER} {copy_source(node.folder)} ./")
            lines += [f"RUN {install}"] if install else []
        else:
            lines += [*copy_manifests(node, chown=True), f"RUN {install}"] if install else []
            lines.append(f"COPY --chown={USER} {copy_source(node.folder)} ./")
    lines += client_copy
    if monorepo:
        lines.append(f"WORKDIR /app/{plan.folder}")
    lines += [f"EXPOSE {plan.port}", start_command(plan)]
    return "\n".join(lines) + "\n"
