"""Reading a generated app without trusting it.

The app was written by an agent that runs model-written commands: its files are
hostile input. ``AppFiles`` reads only regular files that are inside the tree once
every link is resolved, never more than a cap, never a FIFO or device, and turns
every field of ``package.json`` / ``pyproject.toml`` that has the wrong type into a
note instead of a crash. Scanners read the app only through it.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A manifest (package.json, pyproject.toml …) or a source file worth reading for a port
# is small; anything bigger is not read at all.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_SOURCE_BYTES = 256 * 1024
# Bounds of the walks a scanner may make (looking for an app object, say).
MAX_WALK_FILES = 2000
MAX_WALK_DEPTH = 4
MAX_LISTED = 500

_SKIPPED_DIRS = frozenset(
    {"node_modules", ".git", ".venv", "venv", "__pycache__", "dist", "build", ".next", ".cache"}
)


class AppFiles:
    """A read-only, bounded view of an app directory; ``notes`` collects what was ignored."""

    def __init__(self, root: Path, *, notes: list[str] | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.notes: list[str] = notes if notes is not None else []

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ---------------------------------------------------------------- paths
    def relative(self, path: str, *, base: str = "") -> str | None:
        """``path`` (as written in an app file) as a clean path relative to the root,
        or None when it is absolute or climbs out of the tree."""
        if not isinstance(path, str) or not path or "\0" in path or path.startswith("/"):
            return None
        joined = posixpath.normpath(posixpath.join(base, path))
        if joined == ".":
            return ""
        if joined.startswith("../") or joined == "..":
            return None
        return joined

    def _inside(self, relative: str) -> Path | None:
        """The real path of ``relative`` if it exists inside the tree, else None."""
        clean = self.relative(relative) if relative else ""
        if clean is None:
            return None
        real = Path(os.path.realpath(self.root / clean))
        if real != self.root and self.root not in real.parents:
            return None
        return real

    def is_file(self, relative: str) -> bool:
        real = self._inside(relative)
        try:
            return real is not None and stat.S_ISREG(os.lstat(real).st_mode)
        except OSError:
            return False

    def is_dir(self, relative: str) -> bool:
        real = self._inside(relative)
        try:
            return real is not None and stat.S_ISDIR(os.lstat(real).st_mode)
        except OSError:
            return False

    def listdir(self, relative: str = "") -> list[str]:
        """Names in a directory of the tree (sorted, at most ``MAX_LISTED``)."""
        real = self._inside(relative)
        if real is None:
            return []
        try:
            with os.scandir(real) as entries:
                names = []
                for entry in entries:
                    names.append(entry.name)
                    if len(names) >= MAX_LISTED:
                        break
        except OSError:
            return []
        return sorted(names)

    def find(self, relative: str, name: str) -> str | None:
        """The entry of ``relative`` called ``name`` in any letter case (``readme.md``
        for ``README.md``), as it is spelled in the tree."""
        lowered = name.lower()
        for entry in self.listdir(relative):
            if entry.lower() == lowered:
                return posixpath.join(relative, entry) if relative else entry
        return None

    def walk(self, relative: str = "", suffixes: tuple[str, ...] = ()) -> Iterator[str]:
        """Regular files under ``relative`` (not links, not dependency or build
        folders), breadth first, bounded in depth and count."""
        queue = [(relative, 0)]
        seen = 0
        while queue:
            folder, depth = queue.pop(0)
            for name in self.listdir(folder):
                path = posixpath.join(folder, name) if folder else name
                try:
                    mode = os.lstat(self.root / path).st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode):
                    if depth + 1 < MAX_WALK_DEPTH and name not in _SKIPPED_DIRS:
                        queue.append((path, depth + 1))
                elif stat.S_ISREG(mode) and (not suffixes or name.endswith(suffixes)):
                    seen += 1
                    if seen > MAX_WALK_FILES:
                        return
                    yield path

    # ---------------------------------------------------------------- contents
    def read_text(self, relative: str, limit: int = MAX_SOURCE_BYTES) -> str | None:
        """The text of a regular file inside the tree, or None (with a note) when it
        is missing, outside, special or larger than ``limit``."""
        real = self._inside(relative)
        if real is None:
            clean = self.relative(relative)
            if clean is None or os.path.lexists(self.root / clean):  # a link out of the tree
                self.note(f"{relative}: outside the app, not read")
            return None
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self.note(f"{relative}: not a regular file, not read")
                return None
            if info.st_size > limit:
                self.note(f"{relative}: {info.st_size:,} bytes, over the {limit:,}-byte cap")
                return None
            data = os.read(fd, limit + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(data) > limit:  # grew since fstat
            self.note(f"{relative}: over the {limit:,}-byte cap")
            return None
        return data.decode("utf-8", errors="replace")

    def json(self, relative: str) -> dict[str, Any] | None:
        """A JSON object file, or None (with a note if it exists but is not one)."""
        text = self.read_text(relative, MAX_MANIFEST_BYTES)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            self.note(f"{relative}: not valid JSON, ignored")
            return None
        if not isinstance(data, dict):
            self.note(f"{relative}: not a JSON object, ignored")
            return None
        return data

    def toml(self, relative: str) -> dict[str, Any] | None:
        text = self.read_text(relative, MAX_MANIFEST_BYTES)
        if text is None:
            return None
        try:
            return tomllib.loads(text)
        except (tomllib.TOMLDecodeError, ValueError, RecursionError):
            self.note(f"{relative}: not valid TOML, ignored")
            return None


def port_number(text: str | None) -> int | None:
    """A TCP port an app could listen on (1-65535), or None."""
    if text is None or not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number < 65536 else None


# ------------------------------------------------------------------- typed fields
def field_str(data: dict[str, Any] | None, key: str, notes: AppFiles, where: str) -> str | None:
    """``data[key]`` if it is a string; anything else is ignored with a note."""
    if not isinstance(data, dict) or key not in data or data[key] is None:
        return None
    value = data[key]
    if isinstance(value, str):
        return value
    notes.note(f"{where}: {key} is {_kind(value)}, not a string: ignored")
    return None


def field_dict(
    data: dict[str, Any] | None, key: str, notes: AppFiles, where: str
) -> dict[str, Any]:
    """``data[key]`` if it is an object/table, else {} (with a note if present)."""
    if not isinstance(data, dict) or key not in data or data[key] is None:
        return {}
    value = data[key]
    if isinstance(value, dict):
        return value
    notes.note(f"{where}: {key} is {_kind(value)}, not an object: ignored")
    return {}


def field_str_list(data: dict[str, Any] | None, key: str, notes: AppFiles, where: str) -> list[str]:
    """``data[key]`` as a list of strings; other items (or another type) are ignored."""
    if not isinstance(data, dict) or key not in data or data[key] is None:
        return []
    value = data[key]
    if not isinstance(value, list):
        notes.note(f"{where}: {key} is {_kind(value)}, not a list: ignored")
        return []
    strings = [item for item in value if isinstance(item, str)]
    if len(strings) != len(value):
        notes.note(f"{where}: {key} has items that are not strings: ignored them")
    return strings


def string_keys(mapping: dict[str, Any]) -> set[str]:
    return {key for key in mapping if isinstance(key, str)}


def _kind(value: object) -> str:
    return {
        list: "a list",
        dict: "an object",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def reads_database_url(files: AppFiles, folder: str) -> bool:
    """Whether the app's own sources read DATABASE_URL: its database lives elsewhere,
    not in a file of the image."""
    sources = files.walk(folder, (".py", ".js", ".mjs", ".cjs", ".ts", ".prisma", ".env.example"))
    return any("DATABASE_URL" in (files.read_text(path) or "") for path in sources)
