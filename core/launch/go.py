"""Go apps: ``go.mod`` → a build stage on ``golang:<go version>`` and a slim runtime."""

from __future__ import annotations

import posixpath
import re

from core.launch.files import AppFiles, port_number
from core.launch.plan import LaunchPlan, not_deployable
from core.launch.versions import go_version

DEFAULT_PORT = 8080
_LISTEN = re.compile(r"""["'`](?:0\.0\.0\.0|localhost|127\.0\.0\.1)?:(\d{2,5})["'`]""")
_PACKAGE = re.compile(r"^package\s+(\w+)", re.MULTILINE)
# A constraint that leaves a file out of every build (`go run gen.go` tools).
_BUILD_IGNORE = re.compile(r"^//go:build\s+ignore\b|^// \+build\s+ignore\b", re.MULTILINE)
_READS_PORT = re.compile(r"""Getenv\(\s*"PORT"\s*\)|LookupEnv\(\s*"PORT"\s*\)""")


def _is_main_package(files: AppFiles, folder: str) -> bool:
    """Go's rule: a folder is a main package when its Go files say ``package main``,
    whatever they are called; tests and files built only on request do not count."""
    for name in files.listdir(folder):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        text = files.read_text(posixpath.join(folder, name) if folder else name) or ""
        clause = _PACKAGE.search(text)
        if clause is not None and not _BUILD_IGNORE.search(text, 0, clause.start()):
            return clause[1] == "main"
    return False


def scan_go(files: AppFiles, folder: str = "") -> LaunchPlan | None:
    def path(relative: str) -> str:
        return posixpath.join(folder, relative) if folder else relative

    go_mod = files.read_text(path("go.mod"))
    if go_mod is None:
        return None
    main_packages = [
        candidate
        for candidate in ["", *(f"cmd/{d}" for d in files.listdir(path("cmd")))]
        if _is_main_package(files, path(candidate))
    ]
    if len(main_packages) != 1:
        return not_deployable(
            "go",
            "a Go module with "
            + ("no main package" if not main_packages else f"{len(main_packages)} main packages")
            + " (package main in the module's root or in exactly one cmd/NAME)",
            runtime="go",
            folder=folder,
        )
    package = main_packages[0] or "."
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
