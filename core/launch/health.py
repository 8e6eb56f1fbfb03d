"""The health route an app defines, by the route calls of its own sources: Flask's
``@app.route("/healthz")``, FastAPI's ``@app.get("/health")``, Express's
``app.get('/healthz', …)``, Django's ``path("healthz/", …)``. Only the names
health checks go by; an app without one is checked at ``/``."""

from __future__ import annotations

import re

from core.launch.files import AppFiles
from core.launch.plan import LaunchPlan

_NAMES = ("healthz", "health", "livez", "up")  # preferred first
_ROUTE = re.compile(r"""\.(?:route|get|head|api_route)\(\s*(["'])/(healthz|health|livez|up)/?\1""")
_DJANGO_PATH = re.compile(r"""\b(?:re_)?path\(\s*r?(["'])\^?(healthz|health|livez|up)/?\$?\1""")
_SOURCES = {
    "python": (".py",),
    "node": (".js", ".mjs", ".cjs", ".ts", ".mts"),
    "bun": (".js", ".mjs", ".ts", ".tsx"),
}


def with_health_path(files: AppFiles, plan: LaunchPlan) -> LaunchPlan:
    """The plan naming the health route its app defines, if it defines one."""
    suffixes = _SOURCES.get(plan.runtime or "")
    if not plan.deployable or plan.owns_dockerfile or suffixes is None:
        return plan
    found: set[str] = set()
    for path in files.walk(plan.folder, suffixes):
        text = files.read_text(path)
        if text is None:
            continue
        # A commented-out route is no route: Fly would fail the app on its 404.
        code = "\n".join(line for line in text.splitlines() if not _is_comment(line))
        found.update(match.group(2) for match in _ROUTE.finditer(code))
        if plan.runtime == "python":
            found.update(f"{m.group(2)}/" for m in _DJANGO_PATH.finditer(code))
    for name in _NAMES:
        for route in (name, f"{name}/"):
            if route in found:
                return plan.model_copy(update={"health_path": f"/{route}"})
    return plan


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith(("#", "//", "/*", "*"))
