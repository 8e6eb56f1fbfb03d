"""Adding files to the staged tree without touching what the generator wrote."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.launch.files import MAX_MANIFEST_BYTES


class TreeWriter:
    """Adds files at the top of the staged tree: never over an existing entry (in any
    letter case), never through a link."""

    def __init__(self, app: Path) -> None:
        self.app = app
        self.written: list[str] = []
        self.kept: list[str] = []
        try:
            self.names = {name.lower(): name for name in os.listdir(app)}
        except OSError:
            self.names = {}

    def existing(self, name: str) -> str | None:
        return self.names.get(name.lower())

    def add(self, name: str, text: str) -> bool:
        if (found := self.existing(name)) is not None:
            self.kept.append(found)
            return False
        fd = os.open(self.app / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.names[name.lower()] = name
        self.written.append(name)
        return True

    def append(self, name: str, text: str) -> bool:
        """Append to a regular markdown file of the tree (not a link, not huge)."""
        path = self.app / name
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
            return False
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        with os.fdopen(fd, "r+b") as handle:
            existing = handle.read()
            handle.seek(0, os.SEEK_END)
            handle.write((b"" if existing.endswith(b"\n") else b"\n") + text.encode("utf-8"))
        self.written.append(f"{name} (deploy section)")
        return True
