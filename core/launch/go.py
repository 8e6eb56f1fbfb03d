"""Go apps: ``go.mod`` → a build stage on ``golang:<go version>`` and a slim runtime."""

from __future__ import annotations

import posixpath
import re

from core.launch.files import AppFiles, port_number
from core.launch.plan import LaunchPlan, not_deployable
from core.launch.versions import go_version

DEFAULT_PORT = 8080
_LISTEN = re.compile(r"""["'`](?:0\.0\.0\.0|localhost|127\.0\.0\.1)?:(\d{2,5})["'`]""")
_READS_PORT = re.compile(r"""Getenv\(\s*"PORT"\s*\)|LookupEnv\(\s*"PORT"\s*\)""")


def scan_go(files: AppFiles, folder: str = "") -> LaunchPlan | None:
    def path(relative: str) -> str:
        return posixpath.join(folder, relative) if folder else relative

    go_mod = files.read_text(path("go.mod"))
    if go_mod is None:
        return None
    main_packages = []
    for candidate in ["main.go", *(f"cmd/{d}/main.go" for d in files.listdir(path("cmd")))]:
        text = files.read_text(path(candidate))
        if text and re.search(r"^package\s+main\b", text, re.MULTILINE):
            main_packages.append(posixpath.dirname(candidate) or ".")
    if len(main_packages) != 1:
        return not_deployable(
            "go",
            "a Go module with "
            + ("no main package" if not main_packages else f"{len(main_packages)} main packages")
            + " (main.go or exactly one cmd/NAME/main.go)",
            runtime="go",
            folder=folder,
        )
    package = main_packages[0]
    port, reads_env = None, False
    for source in files.walk(path(package if package != "." else ""), (".go",)):
        text = files.read_text(source) or ""
        reads_env = reads_env or bool(_READS_PORT.search(text))
        if port is None and (match := _LISTEN.search(text)):
            port = port_number(match.group(1))
    if port is None and not reads_env:
        return not_deployable(
            "go",
            'could not tell which port the Go server listens on: read os.Getenv("PORT")',
            runtime="go",
            folder=folder,
        )
    port = port or DEFAULT_PORT
    return LaunchPlan(
        stack="go",
        deployable=True,
        reason=f"Go module, main package {package}, on port {port}",
        runtime="go",
        version=go_version(go_mod),
        port=port,
        folder=folder,
        go_package="./" + package.removeprefix("./") if package != "." else ".",
        start=("/app/server",),
        env={"PORT": str(port)} if reads_env else {},
    )
