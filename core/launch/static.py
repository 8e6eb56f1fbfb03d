"""Static sites: an ``index.html`` served by Caddy, with only the site's own files
in the image (never README, fly.toml, Dockerfile or dotfiles)."""

from __future__ import annotations

import posixpath

from core.launch.files import AppFiles
from core.launch.plan import LaunchPlan

PORT = 8080
SITE_FOLDERS = ("public", "site", "www", "docs", "static")
# Repository files that are not part of a site at its root.
_NOT_SITE = frozenset(
    {
        "readme",
        "license",
        "licence",
        "changelog",
        "contributing",
        "fly.toml",
        "dockerfile",
        "procfile",
        "package.json",
        "package-lock.json",
        "node_modules",
        "makefile",
        "deploy.md",
    }
)
_NOT_SITE_SUFFIXES = (".md", ".rst", ".toml", ".yml", ".yaml", ".lock", ".sh", ".py", ".txt")
_KEEP = ("robots.txt", "humans.txt", "security.txt", "ads.txt")


def site_entries(files: AppFiles, folder: str) -> list[str]:
    """The entries of ``folder`` that belong to the site."""
    entries = []
    for name in files.listdir(folder):
        lower = name.lower()
        stem = lower.split(".", 1)[0]
        if name.startswith(".") or lower in _NOT_SITE or stem in _NOT_SITE:
            continue
        if lower.endswith(_NOT_SITE_SUFFIXES) and lower not in _KEEP:
            continue
        entries.append(name + "/" if files.is_dir(posixpath.join(folder, name)) else name)
    return entries


def scan_static(files: AppFiles, folder: str = "") -> LaunchPlan | None:
    def path(relative: str) -> str:
        return posixpath.join(folder, relative) if folder else relative

    if files.is_file(path("index.html")):
        entries = site_entries(files, folder)
        return LaunchPlan(
            stack="static",
            deployable=True,
            reason=f"a static site ({len(entries)} entries at {folder or 'the root'}), "
            "served by Caddy",
            runtime="static",
            port=PORT,
            folder=folder,
            static_entries=tuple(entries),
        )
    for site in SITE_FOLDERS:
        if files.is_file(path(f"{site}/index.html")):
            return LaunchPlan(
                stack="static",
                deployable=True,
                reason=f"a static site in {path(site)}/, served by Caddy",
                runtime="static",
                port=PORT,
                folder=folder,
                static_dir=site,
            )
    return None
