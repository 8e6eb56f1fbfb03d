"""Adding files to the staged tree without touching what the generator wrote, and
taking back, in a revision, the ones appgen wrote last time and no one changed since."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from core.launch.files import MAX_MANIFEST_BYTES
from core.models import RenderedFiles

# The heading appgen's deploy section starts with (core.launch.render.readme).
_DEPLOY_HEADING = re.compile(r"^## Deploy\s*$", re.MULTILINE)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TreeWriter:
    """Adds files at the top of the staged tree: never over an existing entry (in any
    letter case), never through a link."""

    def __init__(self, app: Path, keep: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.keep = keep  # edited since appgen wrote them: nothing is added to these
        self.written: list[str] = []
        self.kept: list[str] = []
        self.rendered: dict[str, str] = {}
        self.sections: dict[str, str] = {}
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
        self.rendered[name] = digest(text.encode("utf-8"))
        return True

    def append(self, name: str, text: str) -> bool:
        """Append to a regular markdown file of the tree (not a link, not huge)."""
        if name in self.keep:
            self.kept.append(name)
            return True  # its section, edited since, stays the one there is
        existing = _read_regular(self.app / name)
        if existing is None:
            return False
        section = ("" if existing.endswith(b"\n") else "\n") + text
        fd = os.open(self.app / name, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        with os.fdopen(fd, "ab") as handle:
            handle.write(section.encode("utf-8"))
        self.written.append(f"{name} (deploy section)")
        self.sections[name] = section
        return True

    def record(self) -> RenderedFiles:
        return RenderedFiles(files=self.rendered, sections=self.sections)


def take_back(app: Path, earlier: RenderedFiles) -> list[str]:
    """Before rendering a revision: remove the deploy files appgen wrote last time
    that are still exactly as it wrote them, and its sections from READMEs, so that
    they are rendered again for the tree as it is now. Returns the ones someone
    changed since (a person on the repository, or the agent), which are kept."""
    edited = []
    for name, expected in earlier.files.items():
        content = _read_regular(app / name)
        if content is None:
            continue  # deleted since, or replaced by something that is not a file
        if digest(content) == expected:
            os.unlink(app / name)
        else:
            edited.append(name)
    for name, section in earlier.sections.items():
        content = _read_regular(app / name)
        if content is None:
            continue
        text = content.decode("utf-8", errors="surrogateescape")
        if (at := text.rfind(section)) >= 0:
            stripped = text[:at] + text[at + len(section) :]
            fd = os.open(app / name, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            with os.fdopen(fd, "wb") as handle:
                handle.write(stripped.encode("utf-8", errors="surrogateescape"))
        elif _DEPLOY_HEADING.search(text):
            edited.append(name)  # a deploy section someone rewrote
    return sorted(edited)


def _read_regular(path: Path) -> bytes | None:
    """The content of a regular file of the tree (not a link, not huge), else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()
