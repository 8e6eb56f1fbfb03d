"""Node apps: package manager by lockfile, version by ``engines.node``, framework by
dependency, port from the file ``scripts.start`` runs."""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Any

from core.launch.files import AppFiles, field_dict, field_str, port_number, string_keys
from core.launch.plan import LaunchPlan, NodeBuild, PackageManager, not_deployable
from core.launch.versions import node_major

_LOCKFILES: tuple[tuple[str, PackageManager], ...] = (
    ("pnpm-lock.yaml", "pnpm"),
    ("bun.lockb", "bun"),
    ("bun.lock", "bun"),
    ("yarn.lock", "yarn"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
)
_SERVER_FILES = (
    "server.js",
    "index.js",
    "app.js",
    "main.js",
    "server.mjs",
    "index.mjs",
    "src/server.js",
    "src/index.js",
    "src/app.js",
    "src/main.js",
    "bin/www",
)
_SERVER_FRAMEWORKS = ("express", "fastify", "koa", "@hapi/hapi", "hono", "@nestjs/core")
_PORT_ENV_DEFAULT = re.compile(
    r"process\.env(?:\.PORT|\[['\"]PORT['\"]\])\s*\)?\s*(?:\|\||\?\?)\s*['\"]?(\d{2,5})"
)
_LISTEN_LITERAL = re.compile(r"\.listen\(\s*\{?\s*(?:port\s*:\s*)?['\"]?(\d{2,5})")
_PORT_CONSTANT = re.compile(r"\b(?:const|let|var)\s+port\s*=\s*['\"]?(\d{2,5})", re.IGNORECASE)
_READS_PORT = re.compile(r"process\.env(?:\.PORT\b|\[['\"]PORT['\"]\])|\{\s*PORT\s*[,}=]")
_ENV_FILE_PORT = re.compile(r"^\s*PORT\s*=\s*['\"]?(\d{2,5})", re.MULTILINE)
_NODE_RUNNERS = ("node", "nodemon", "ts-node", "tsx", "bun")
DEFAULT_PORT = 3000
# adapter-node's release line for SvelteKit 2, the SvelteKit `npx sv create` makes.
ADAPTER_NODE = "@sveltejs/adapter-node@5"


class NodeProject:
    """One package.json folder, read defensively."""

    def __init__(self, files: AppFiles, folder: str) -> None:
        self.files = files
        self.folder = folder
        self.where = self.path("package.json")
        self.package: dict[str, Any] = files.json(self.where) or {}
        self.scripts = {
            k: v
            for k, v in field_dict(self.package, "scripts", files, self.where).items()
            if isinstance(v, str)
        }
        self.deps = string_keys(field_dict(self.package, "dependencies", files, self.where))
        self.dev_deps = string_keys(field_dict(self.package, "devDependencies", files, self.where))
        self.all_deps = self.deps | self.dev_deps
        self.main = field_str(self.package, "main", files, self.where)
        if self.main is not None and files.relative(self.main, base=folder) is None:
            files.note(f"{self.where}: main {self.main!r} points outside the app: ignored")
            self.main = None
        engines = field_dict(self.package, "engines", files, self.where)
        self.version, note = node_major(field_str(engines, "node", files, f"{self.where} engines"))
        if note:
            files.note(note)

    @property
    def exists(self) -> bool:
        return self.files.is_file(self.where)

    def path(self, relative: str) -> str:
        return posixpath.join(self.folder, relative) if self.folder else relative

    def has(self, *names: str) -> bool:
        return any(name in self.all_deps for name in names)

    def lockfile(self) -> tuple[PackageManager, str | None]:
        declared = field_str(self.package, "packageManager", self.files, self.where) or ""
        for name, manager in _LOCKFILES:
            if self.files.is_file(self.path(name)):
                if manager == "yarn" and (
                    self.files.is_file(self.path(".yarnrc.yml"))
                    or re.match(r"yarn@[2-9]", declared)
                ):
                    return "yarn-berry", name
                return manager, name
        for manager in ("pnpm", "yarn", "bun"):
            if declared.startswith(f"{manager}@"):
                return manager, None
        return "npm", None

    def build(self, output: str | None = None) -> NodeBuild:
        manager, lockfile = self.lockfile()
        if lockfile is None and self.deps | self.dev_deps:
            self.files.note(
                f"{self.where}: no lockfile, so installs are not reproducible; commit one"
            )
        return NodeBuild(
            folder=self.folder,
            version=self.version,
            manager=manager,
            lockfile=lockfile,
            has_dependencies=bool(self.all_deps) or lockfile is not None,
            build_script="build" in self.scripts,
            output=output,
        )

    def config_file(self, stem: str) -> str | None:
        """The first of ``stem.{js,mjs,cjs,ts,mts}`` that exists, relative to the project."""
        for suffix in (".js", ".mjs", ".cjs", ".ts", ".mts"):
            if self.files.is_file(self.path(stem + suffix)):
                return stem + suffix
        return None

    def config_text(self, stem: str) -> str:
        """The text of ``config_file(stem)`` ('' if none)."""
        name = self.config_file(stem)
        return (self.files.read_text(self.path(name)) or "") if name else ""

    def add_dev(self, package: str) -> tuple[str, ...]:
        """Install one more development package in a build, leaving the manifest's
        declared dependencies as the lockfile has them."""
        manager, _ = self.lockfile()
        return {
            "bun": ("bun", "add", "--dev", package),
            "yarn": ("yarn", "add", "--dev", package),
            "yarn-berry": ("yarn", "add", "--dev", package),
            "pnpm": ("pnpm", "add", "--save-dev", package),
        }.get(manager, ("npm", "install", "--no-save", "--no-audit", "--no-fund", package))

    def start_file(self) -> str | None:
        """The file ``scripts.start`` runs with node (``node bin/www``), relative to the
        project; also looks at a dev script or ``scripts/start.sh`` that does only that."""
        candidates = [self.scripts.get("start", ""), self.scripts.get("dev", "")]
        start_sh = self.files.read_text(self.path("scripts/start.sh"))
        if start_sh:
            candidates.append(start_sh.splitlines()[-1])
        for command in candidates:
            file = _node_file(command)
            if file is not None:
                clean = self.files.relative(file, base=self.folder)
                if clean is None:
                    self.files.note(f"{self.where}: start script runs {file!r}, outside the app")
                    continue
                return posixpath.relpath(clean, self.folder or ".")
        return None

    def port(self, start_file: str | None) -> tuple[int | None, bool]:
        """(port, reads $PORT) from the start file, ``main``, the usual server files,
        then ``.env.example`` and ``config/default.json``."""
        names = [n for n in (start_file, self.main) if n] + list(_SERVER_FILES)
        reads_env = False
        for name in dict.fromkeys(names):
            source = self.files.read_text(self.path(name))
            if source is None:
                continue
            reads_env = reads_env or bool(_READS_PORT.search(source))
            for pattern in (_PORT_ENV_DEFAULT, _LISTEN_LITERAL, _PORT_CONSTANT):
                match = pattern.search(source)
                if match and (port := port_number(match.group(1))) is not None:
                    return port, reads_env
        for name in (".env.example", ".env.sample", "../.env.example"):
            text = self.files.read_text(self.path(name))
            match = _ENV_FILE_PORT.search(text or "")
            if match and (port := port_number(match.group(1))) is not None:
                return port, True
        config = self.files.json(self.path("config/default.json"))
        port = config.get("port") if config else None
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            return port, reads_env
        return None, reads_env

    def run(self, script: str) -> tuple[str, ...]:
        manager, _ = self.lockfile()
        if manager == "bun":
            return ("bun", "run", script)
        if manager in ("yarn", "yarn-berry"):
            return ("yarn", script)
        if manager == "pnpm":
            return ("pnpm", "run", script)
        return ("npm", "run", script) if script != "start" else ("npm", "start")


def _node_file(command: str) -> str | None:
    command = command.strip().removeprefix("exec ").strip()
    if not command or any(sep in command for sep in ("&&", "||", ";", "|")):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or words[0] not in _NODE_RUNNERS or words[0] == "nodemon":
        return None
    if words[0] == "bun" and words[1:2] == ["run"]:
        words = words[1:]
    for word in words[1:]:
        if word.startswith("-"):
            continue
        return word
    return None


def scan_node(files: AppFiles, folder: str = "") -> LaunchPlan | None:
    """The most specific Node plan for ``folder``, or None when it is no Node project."""
    project = NodeProject(files, folder)
    if not project.exists:
        return None
    for scanner in (_next, _nuxt, _sveltekit, _remix, _astro, _nest, _spa, _server):
        plan = scanner(project)
        if plan is not None:
            return plan
    if "start" in project.scripts:
        return not_deployable(
            "node",
            f"{project.where} has a start script, but no server file that listens on a port "
            "was found",
            runtime="node",
            folder=folder,
        )
    return None


def _plan(project: NodeProject, stack: str, port: int, **fields: Any) -> LaunchPlan:
    runtime = "bun" if project.lockfile()[0] == "bun" else "node"
    return LaunchPlan(
        stack=stack,
        deployable=True,
        reason=fields.pop("reason", f"{stack} app in {project.folder or 'the repository root'}"),
        runtime=runtime,
        version=project.version,
        port=port,
        folder=project.folder,
        node=fields.pop("node", None) or project.build(),
        **fields,
    )


def _static_plan(
    project: NodeProject,
    stack: str,
    reason: str,
    output: str,
    build: tuple[str, ...],
    *,
    spa: bool = False,
) -> LaunchPlan:
    """A Node build whose output (``output``/) is a static site, served by Caddy."""
    return LaunchPlan(
        stack=stack,
        deployable=True,
        reason=reason,
        runtime="static",
        version=project.version,
        port=8080,
        folder=project.folder,
        node=project.build(output=output),
        build_commands=build,
        static_dir=output,
        spa=spa,
    )


def _next(project: NodeProject) -> LaunchPlan | None:
    if not project.has("next"):
        return None
    config = project.config_text("next.config")
    env = {"PORT": "3000", "HOSTNAME": "0.0.0.0", "NEXT_TELEMETRY_DISABLED": "1"}
    if re.search(r"output\s*:\s*['\"]standalone['\"]", config):
        copies = [(".next/standalone", "."), (".next/static", ".next/static")]
        if project.files.is_dir(project.path("public")):
            copies.append(("public", "public"))
        return _plan(
            project,
            "nextjs",
            3000,
            reason="Next.js app with standalone output",
            build_commands=(" ".join(project.run("build")),),
            start=("node", "server.js"),
            runtime_copy=tuple(copies),
            env=env,
        )
    return _plan(
        project,
        "nextjs",
        3000,
        reason="Next.js app (next start; set output: 'standalone' for a smaller image)",
        build_commands=(" ".join(project.run("build")),),
        start=("node_modules/.bin/next", "start"),
        env=env,
    )


def _nuxt(project: NodeProject) -> LaunchPlan | None:
    if not project.has("nuxt", "nuxt3"):
        return None
    return _plan(
        project,
        "nuxt",
        3000,
        build_commands=(" ".join(project.run("build")),),
        start=("node", ".output/server/index.mjs"),
        runtime_copy=((".output", ".output"),),
        env={"PORT": "3000", "HOST": "0.0.0.0"},
    )


def _sveltekit(project: NodeProject) -> LaunchPlan | None:
    if not project.has("@sveltejs/kit"):
        return None
    config = project.config_text("svelte.config")
    adapter = re.search(r"@sveltejs/adapter-([a-z-]+)", config)
    name = adapter.group(1) if adapter else "auto"
    build = (" ".join(project.run("build")),)
    if name == "node":
        return _plan(
            project,
            "sveltekit-node",
            3000,
            reason="SvelteKit app with adapter-node",
            build_commands=build,
            start=("node", "build"),
            env={"PORT": "3000", "HOST": "0.0.0.0"},
        )
    if name == "static":
        spa = bool(re.search(r"fallback\s*:", config))
        return _static_plan(
            project,
            "sveltekit-static",
            "SvelteKit app with adapter-static, served by Caddy",
            "build",
            build,
            spa=spa,
        )
    if name == "auto":
        # adapter-auto builds only where it recognises a host (Vercel, Netlify,
        # Cloudflare …), Fly not among them: the image builds the app with adapter-node.
        config_file = project.config_file("svelte.config")
        if config_file is not None:
            return _plan(
                project,
                "sveltekit-auto",
                3000,
                reason="SvelteKit app with adapter-auto, built with adapter-node",
                build_commands=(
                    " ".join(project.add_dev(ADAPTER_NODE)),
                    f"sed -i 's#@sveltejs/adapter-auto#@sveltejs/adapter-node#' {config_file}",
                    *build,
                ),
                start=("node", "build"),
                env={"PORT": "3000", "HOST": "0.0.0.0"},
                notes=(
                    "adapter-auto has no Fly.io target, so the image installs "
                    f"{ADAPTER_NODE} and builds with it in place of adapter-auto; to build "
                    "the same way elsewhere, install it and use it in svelte.config.js",
                ),
            )
    return not_deployable(
        f"sveltekit-{name}",
        f"SvelteKit with adapter-{name}, which has no Fly.io target: install "
        "@sveltejs/adapter-node and use it in svelte.config.js (or adapter-static for a "
        "site without server code)",
        runtime="node",
        folder=project.folder,
    )


def _remix(project: NodeProject) -> LaunchPlan | None:
    serve = project.has("@remix-run/serve", "@react-router/serve")
    if not serve or "start" not in project.scripts:
        return None
    stack = "react-router" if project.has("@react-router/serve") else "remix"
    return _plan(
        project,
        stack,
        3000,
        build_commands=(" ".join(project.run("build")),),
        start=project.run("start"),
        env={"PORT": "3000"},
    )


def _astro(project: NodeProject) -> LaunchPlan | None:
    if not project.has("astro"):
        return None
    config = project.config_text("astro.config")
    build = (" ".join(project.run("build")),)
    if "@astrojs/node" in config or project.has("@astrojs/node"):
        return _plan(
            project,
            "astro-node",
            4321,
            reason="Astro app with the Node adapter",
            build_commands=build,
            start=("node", "./dist/server/entry.mjs"),
            env={"PORT": "4321", "HOST": "0.0.0.0"},
        )
    return _static_plan(
        project, "astro-static", "Astro static site, served by Caddy", "dist", build
    )


def _nest(project: NodeProject) -> LaunchPlan | None:
    if not project.has("@nestjs/core"):
        return None
    port, _ = project.port("src/main.ts")
    return _plan(
        project,
        "nestjs",
        port or DEFAULT_PORT,
        build_commands=(" ".join(project.run("build")),),
        start=("node", "dist/main"),
        env={"PORT": str(port or DEFAULT_PORT)},
    )


def _spa_output(project: NodeProject) -> tuple[str, str] | None:
    """(stack, build output folder) of a single-page app."""
    if project.has("@angular/core"):
        angular = project.files.json(project.path("angular.json")) or {}
        projects = field_dict(angular, "projects", project.files, "angular.json")
        for name, entry in projects.items():
            architect = field_dict(
                entry if isinstance(entry, dict) else {}, "architect", project.files, "angular.json"
            )
            build = field_dict(architect, "build", project.files, "angular.json")
            options = field_dict(build, "options", project.files, "angular.json")
            output = options.get("outputPath")
            if isinstance(output, dict):
                output = output.get("base")
            out = output if isinstance(output, str) else f"dist/{name}"
            builder = field_str(build, "builder", project.files, "angular.json") or ""
            if builder.endswith(":application"):
                out = posixpath.join(out, "browser")
            clean = project.files.relative(out)
            return ("angular", clean) if clean else None
        return "angular", "dist"
    if project.has("react-scripts"):
        return "create-react-app", "build"
    if project.has("@vue/cli-service"):
        return "vue-cli", "dist"
    if project.has("vite") or project.config_text("vite.config"):
        out_dir = re.search(r"outDir\s*:\s*['\"]([^'\"]+)['\"]", project.config_text("vite.config"))
        clean = project.files.relative(out_dir.group(1)) if out_dir else "dist"
        return "vite", clean or "dist"
    return None


def _spa(project: NodeProject) -> LaunchPlan | None:
    spa = _spa_output(project)
    if spa is None or _server_file(project) is not None:
        return None
    stack, output = spa
    if "build" not in project.scripts:
        return not_deployable(
            stack, f"{project.where} has no build script", runtime="node", folder=project.folder
        )
    return _static_plan(
        project,
        stack,
        f"{stack} single-page app: its build ({output}/) served by Caddy",
        output,
        (" ".join(project.run("build")),),
        spa=True,
    )


def _server_file(project: NodeProject) -> str | None:
    start = project.start_file()
    if start is not None:
        return start
    for name in [project.main] if project.main else []:
        source = project.files.read_text(project.path(name)) or ""
        if ".listen(" in source:
            return name
    for name in _SERVER_FILES:
        source = project.files.read_text(project.path(name)) or ""
        if ".listen(" in source and (project.has(*_SERVER_FRAMEWORKS) or "createServer" in source):
            return name
    return None


def _server(project: NodeProject) -> LaunchPlan | None:
    file = _server_file(project)
    if file is None:
        return None
    framework = next((f for f in _SERVER_FRAMEWORKS if f in project.deps), None)
    stack = (framework or "node").removeprefix("@hapi/")
    if not project.files.is_file(project.path(file)):
        return not_deployable(
            stack,
            f"the start file {project.path(file)} does not exist",
            runtime="node",
            folder=project.folder,
        )
    port, reads_env = project.port(file)
    if port is None and not reads_env:
        return not_deployable(
            stack,
            f"could not tell which port {project.path(file)} listens on: make it listen on "
            "process.env.PORT",
            runtime="node",
            folder=project.folder,
        )
    port = port or DEFAULT_PORT
    simple_start = project.start_file() == file or "start" not in project.scripts
    runner = "bun" if project.lockfile()[0] == "bun" else "node"
    start = (runner, file) if simple_start else project.run("start")
    builds = (" ".join(project.run("build")),) if "build" in project.scripts else ()
    return _plan(
        project,
        stack,
        port,
        reason=f"{stack} server {project.path(file)} on port {port}",
        build_commands=builds,
        start=start,
        env={"PORT": str(port)} if reads_env else {},
    )
