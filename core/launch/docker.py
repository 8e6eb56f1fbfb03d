"""The app's own Dockerfile (kept as it is) and Procfile ``web:`` lines."""

from __future__ import annotations

import posixpath
import re

from core.launch.files import AppFiles, port_number
from core.launch.plan import LaunchPlan

_EXPOSE = re.compile(r"^\s*EXPOSE\s+(\d{2,5})", re.MULTILINE | re.IGNORECASE)
_COMMAND_PORT = re.compile(
    r"^\s*(?:CMD|ENTRYPOINT)\b.*?(?:--port[\"',\s=]+|-p[\"',\s]+|--bind[\"',\s=]+[\w.]*:|"
    r"-b[\"',\s]+[\w.]*:|0\.0\.0\.0:)(\d{2,5})",
    re.MULTILINE | re.IGNORECASE,
)
_ENV_PORT = re.compile(
    r"^\s*ENV\s+(?:.*\s)?PORT[=\s]+[\"']?(\d{2,5})", re.MULTILINE | re.IGNORECASE
)
_COPY = re.compile(r"^\s*(?:COPY|ADD)\s+(.+)$", re.MULTILINE | re.IGNORECASE)


def dockerfile_port(text: str) -> int | None:
    """The port a Dockerfile says its app listens on: EXPOSE, then the command, then ENV PORT."""
    for pattern in (_EXPOSE, _COMMAND_PORT, _ENV_PORT):
        match = pattern.search(text)
        if match and (port := port_number(match.group(1))) is not None:
            return port
    return None


def copy_sources(text: str) -> list[str]:
    """Sources of COPY/ADD lines that come from the build context."""
    sources = []
    for match in _COPY.finditer(text):
        words = [w for w in match.group(1).split() if not w.startswith("--")]
        if "--from" in match.group(1) or len(words) < 2 or words[0].startswith("["):
            continue
        sources += words[:-1]
    return sources


def scan_dockerfile(files: AppFiles, folder: str, fallback: LaunchPlan | None) -> LaunchPlan | None:
    """A Dockerfile in ``folder`` (any letter case): kept; the port from it, or else
    from what the other scanners found."""
    name = files.find(folder, "Dockerfile")
    if name is None or not files.is_file(name):
        return None
    if folder:  # the app sits in a wrapper folder; Fly builds from the repository root
        return _from_root(files, folder, name, "dockerfile")
    text = files.read_text(name) or ""
    port = dockerfile_port(text) or (fallback.port if fallback else None)
    if port is None:
        return LaunchPlan(
            stack="dockerfile",
            deployable=False,
            reason=f"the app's own {name} does not say which port it listens on: add EXPOSE",
            runtime="docker",
            folder=folder,
            dockerfile=name,
        )
    return LaunchPlan(
        stack="dockerfile",
        deployable=True,
        reason=f"the app's own {name} (port {port})",
        runtime="docker",
        port=port,
        folder=folder,
        dockerfile=name,
    )


def scan_service_dockerfile(files: AppFiles, folder: str) -> LaunchPlan | None:
    """Exactly one service folder with a Dockerfile: fly.toml points its build at it.
    Fly builds from the repository root, so every file it copies must be there."""
    found = []
    for entry in files.listdir(folder):
        sub = posixpath.join(folder, entry) if folder else entry
        if not entry.startswith(".") and files.is_dir(sub):
            name = files.find(sub, "Dockerfile")
            if name is not None and files.is_file(name):
                found.append(name)
    if len(found) != 1:
        return None
    return _from_root(files, folder, found[0], "service-dockerfile")


def _from_root(files: AppFiles, folder: str, name: str, stack: str) -> LaunchPlan:
    """A Dockerfile below the root, built with the root as its context: deployable when
    everything it copies is found from there."""
    text = files.read_text(name) or ""
    port = dockerfile_port(text)
    sources = copy_sources(text)
    missing = [s for s in sources if s not in (".", "./") and not _exists(files, s)]
    context_bound = "." in sources or "./" in sources or missing
    if port is None or context_bound:
        why = (
            f"{name} copies {', '.join(missing) or '.'} from its own folder, but Fly "
            "builds from the repository root: move the Dockerfile to the root or "
            "make its COPY paths relative to the root"
            if context_bound
            else f"{name} does not say which port it listens on (add EXPOSE)"
        )
        return LaunchPlan(
            stack=stack,
            deployable=False,
            reason=why,
            runtime="docker",
            folder=folder,
            port=port,
            dockerfile=name,
        )
    return LaunchPlan(
        stack=stack,
        deployable=True,
        reason=f"the app's own {name} (port {port}), built from the repository root",
        runtime="docker",
        port=port,
        folder=folder,
        dockerfile=name,
    )


def _exists(files: AppFiles, source: str) -> bool:
    """``source`` of a COPY exists in the build context, the repository root."""
    clean = files.relative(source.rstrip("/"))
    return clean is not None and (files.is_file(clean) or files.is_dir(clean) or "*" in source)


def procfile_command(files: AppFiles, folder: str, process: str = "web") -> str | None:
    """The command of the Procfile's line for ``process`` (``web``, ``release``)."""
    name = files.find(folder, "Procfile")
    text = files.read_text(name) if name else None
    for line in (text or "").splitlines():
        key, _, command = line.partition(":")
        if key.strip() == process and command.strip():
            return command.strip()
    return None
