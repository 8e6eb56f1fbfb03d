"""Python apps: Django, FastAPI, Flask (app objects and factories, in packages too)
and standard-library servers; installs from requirements.txt, uv, poetry or a plain
pyproject; the version from ``.python-version`` / ``requires-python``."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from core.launch.files import (
    AppFiles,
    field_dict,
    field_str,
    field_str_list,
    port_number,
)
from core.launch.plan import LaunchPlan, not_deployable
from core.launch.versions import python_minor

PORT = 8080
GUNICORN = "gunicorn==23.0.0"
UVICORN = "uvicorn==0.32.1"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_ASSIGNED = "^(\\w+)\\s*(?::\\s*\\w+\\s*)?=\\s*(?:\\w+\\.)?{cls}\\("
_FACTORY = re.compile(r"^def\s+(create_app|make_app|app_factory|get_app)\s*\(", re.MULTILINE)
_STDLIB_SERVER = re.compile(r"\b(?:HTTPServer|ThreadingHTTPServer|TCPServer)\s*\(")
_PORT_ENV = re.compile(
    r"environ(?:\.get\(|\[)\s*['\"]PORT['\"]\s*(?:\]|,\s*['\"]?(\d{2,5}))|getenv\(\s*['\"]PORT['\"]"
    r"\s*(?:,\s*['\"]?(\d{2,5}))?"
)
_PORT_LITERAL = re.compile(r"(?:\(\s*['\"][\w.]*['\"]\s*,\s*|port\s*=\s*)(\d{2,5})", re.IGNORECASE)


@dataclass
class PythonProject:
    files: AppFiles
    folder: str
    install: Literal["requirements", "pyproject", "uv", "poetry", "none"] = "none"
    dependencies: set[str] = field(default_factory=set)
    raw: str = ""
    version: str = "3.12"

    def path(self, relative: str) -> str:
        return posixpath.join(self.folder, relative) if self.folder else relative

    def has(self, name: str) -> bool:
        return name in self.dependencies


def read_project(files: AppFiles, folder: str = "") -> PythonProject | None:
    """The folder's Python project (dependencies, installer, version), or None."""
    project = PythonProject(files, folder)
    requirements = files.read_text(project.path("requirements.txt"))
    pyproject = files.toml(project.path("pyproject.toml"))
    is_python = requirements is not None or pyproject is not None
    spec = None
    if pyproject is not None:
        where = project.path("pyproject.toml")
        table = field_dict(pyproject, "project", files, where)
        spec = field_str(table, "requires-python", files, f"{where} [project]")
        names = field_str_list(table, "dependencies", files, f"{where} [project]")
        poetry = field_dict(field_dict(pyproject, "tool", files, where), "poetry", files, where)
        poetry_deps = field_dict(poetry, "dependencies", files, f"{where} [tool.poetry]")
        if spec is None and isinstance(poetry_deps.get("python"), str):
            spec = poetry_deps["python"].replace("^", ">=")
        names += [name for name in poetry_deps if isinstance(name, str) and name != "python"]
        project.dependencies |= {_name(n) for n in names if _name(n)}
        project.raw += "\n".join(names)
        if files.is_file(project.path("uv.lock")):
            project.install = "uv"
        elif poetry or files.is_file(project.path("poetry.lock")):
            project.install = "poetry"
        elif table:
            project.install = "pyproject"
    if requirements is not None:
        lines = [ln for ln in requirements.splitlines() if not ln.strip().startswith(("#", "-"))]
        project.dependencies |= {_name(ln) for ln in lines if _name(ln)}
        project.raw += "\n" + requirements
        if project.install in ("none", "pyproject"):  # an app's pins beat a plain pyproject
            project.install = "requirements"
    pinned = files.read_text(project.path(".python-version")) or ""
    runtime_txt = files.read_text(project.path("runtime.txt")) or ""
    explicit = (pinned.strip().splitlines() or [""])[0] or runtime_txt.strip() or spec
    project.version, note = python_minor(explicit)
    if note:
        files.note(note)
    if not is_python and not any(files.walk(folder, (".py",))):
        return None
    return project


def _name(requirement: str) -> str:
    match = _REQUIREMENT_NAME.match(requirement)
    return match.group(1).lower().replace("_", "-") if match else ""


def scan_python(files: AppFiles, folder: str = "") -> LaunchPlan | None:
    project = read_project(files, folder)
    if project is None:
        return None
    for scanner in (_django, _fastapi, _flask, _stdlib):
        plan = scanner(project)
        if plan is not None:
            return plan
    if project.install != "none":
        return not_deployable(
            "python",
            "a Python project, but no Django, FastAPI, Flask or http.server app was found",
            runtime="python",
            folder=folder,
        )
    return None


def _plan(project: PythonProject, stack: str, start: tuple[str, ...], **fields: Any) -> LaunchPlan:
    return LaunchPlan(
        stack=stack,
        deployable=True,
        reason=fields.pop("reason"),
        runtime="python",
        version=project.version,
        port=fields.pop("port", PORT),
        folder=project.folder,
        python_install=project.install,
        start=start,
        **fields,
    )


def _server_extra(project: PythonProject, server: str, pinned: str) -> tuple[str, ...]:
    return () if project.has(server) or f"{server}" in project.raw.lower() else (pinned,)


def _module_of(project: PythonProject, path: str) -> tuple[str, str | None]:
    """The import path of a source file, and the folder to run from when it sits
    under ``src/`` (a src layout that is not installed)."""
    relative = posixpath.relpath(path, project.folder or ".")
    chdir = None
    if relative.startswith("src/") and project.install not in ("pyproject", "uv", "poetry"):
        relative, chdir = relative.removeprefix("src/"), "src"
    module = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return module, chdir


def _find(project: PythonProject, pattern: re.Pattern[str]) -> tuple[str, str] | None:
    """(file, first group) of the first Python file matching ``pattern``; files at the
    top come first, tests last."""
    sources = sorted(
        project.files.walk(project.folder, (".py",)),
        key=lambda p: ("test" in p, p.count("/"), p),
    )
    for path in sources:
        text = project.files.read_text(path)
        if text and (match := pattern.search(text)):
            return path, match.group(1)
    return None


def _django(project: PythonProject) -> LaunchPlan | None:
    manage = project.files.read_text(project.path("manage.py"))
    if manage is None and not project.has("django"):
        return None
    settings = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", manage or "")
    if settings is None:
        return not_deployable(
            "django",
            "a Django project without a manage.py that names DJANGO_SETTINGS_MODULE",
            runtime="python",
            folder=project.folder,
        )
    module = settings.group(1)
    base = module.replace(".", "/")
    text = project.files.read_text(project.path(base + ".py")) or project.files.read_text(
        project.path(base + "/__init__.py")
    )
    wsgi = re.search(r"WSGI_APPLICATION\s*=\s*['\"]([\w.]+)['\"]", text or "")
    if wsgi:
        target = wsgi.group(1).rsplit(".", 1)
        app = f"{target[0]}:{target[1]}"
    else:
        app = f"{module.rsplit('.', 1)[0]}.wsgi:application"
    collectstatic = bool(re.search(r"^STATIC_ROOT\s*=", text or "", re.MULTILINE))
    notes = ["Django: add the Fly host (APP.fly.dev) to ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS"]
    if not collectstatic:
        notes.append("Django: STATIC_ROOT is not set, so static files are not collected")
    return _plan(
        project,
        "django",
        ("gunicorn", "--bind", f"0.0.0.0:{PORT}", app),
        reason=f"Django project ({module}), served by gunicorn",
        python_extra=_server_extra(project, "gunicorn", GUNICORN),
        collectstatic=collectstatic,
        env={"PORT": str(PORT), "DJANGO_SETTINGS_MODULE": module},
        notes=tuple(notes),
    )


def _fastapi(project: PythonProject) -> LaunchPlan | None:
    if not project.has("fastapi"):
        return None
    found = _find(project, re.compile(_ASSIGNED.format(cls="FastAPI"), re.MULTILINE))
    factory = False
    if found is None:
        found, factory = _find(project, _FACTORY), True
    if found is None:
        return not_deployable(
            "fastapi", "FastAPI is a dependency, but no FastAPI() app was found", runtime="python"
        )
    module, chdir = _module_of(project, found[0])
    start: tuple[str, ...] = (
        "uvicorn",
        f"{module}:{found[1]}",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
    )
    start += ("--proxy-headers",) + (("--factory",) if factory else ())
    start += ("--app-dir", chdir) if chdir else ()
    return _plan(
        project,
        "fastapi",
        start,
        reason=f"FastAPI app {module}:{found[1]}, served by uvicorn",
        python_extra=_server_extra(project, "uvicorn", UVICORN),
        env={"PORT": str(PORT)},
    )


def _flask(project: PythonProject) -> LaunchPlan | None:
    if not project.has("flask"):
        return None
    found = _find(project, re.compile(_ASSIGNED.format(cls="Flask"), re.MULTILINE))
    call = ""
    factory = _find(project, _FACTORY)
    if factory is not None and (found is None or ("/" not in factory[0] and "/" in found[0])):
        found, call = factory, "()"
    elif found is not None and factory is not None and found[0] == factory[0]:
        found, call = factory, "()"  # `app = Flask(...)` inside create_app()
    if found is None:
        return not_deployable(
            "flask", "Flask is a dependency, but no Flask() app was found", runtime="python"
        )
    module, chdir = _module_of(project, found[0])
    target = f"{module}:{found[1]}{call}"
    start: tuple[str, ...] = ("gunicorn", "--bind", f"0.0.0.0:{PORT}")
    start += ("--chdir", chdir) if chdir else ()
    # `flask` commands (`flask init-db`, `flask shell` over fly ssh) find the app; a
    # src/ layout is a path to import from, as gunicorn's --chdir is.
    flask_app = f"{chdir}/{target}" if chdir else target
    return _plan(
        project,
        "flask",
        (*start, target),
        reason=f"Flask app {target}, served by gunicorn",
        python_extra=_server_extra(project, "gunicorn", GUNICORN),
        env={"PORT": str(PORT), "FLASK_APP": flask_app},
    )


def _stdlib(project: PythonProject) -> LaunchPlan | None:
    # Whatever the script is called: the usual names first, then any other top-level one.
    usual = ("app.py", "main.py", "server.py", "serve.py")
    others = [n for n in project.files.listdir(project.folder) if n.endswith(".py")]
    for name in dict.fromkeys([*usual, *others]):
        source = project.files.read_text(project.path(name))
        if not source or not _STDLIB_SERVER.search(source):
            continue
        env_port = _PORT_ENV.search(source)
        literal = _PORT_LITERAL.search(source)
        if env_port:
            port = port_number(env_port.group(1) or env_port.group(2)) or PORT
            env = {"PORT": str(port)}
        elif literal and (found := port_number(literal.group(1))) is not None:
            port, env = found, {}
        else:
            continue
        return _plan(
            project,
            "python-http",
            ("python", name),
            reason=f"a standard-library HTTP server ({name}) on port {port}",
            port=port,
            env=env,
        )
    return None
