"""A strict extractor for generator tarballs, which are hostile until proven otherwise,
and the writer of the tarballs that go the other way (a revision's base, on ECS).

Member names are relative to the app directory and may start with ``./`` (as
``tar -C app -czf - .`` and ``tarfile.add(app, arcname=".")`` write them): a ``.``
directory member is the app directory itself, and ``./x`` is ``x``. Only regular
files and directories are accepted, by name checks of our own (no absolute paths,
no ``..`` anywhere, not even after a ``./``, no setuid/setgid/sticky bits, no file
twice once normalised) on top of tarfile's
``data`` filter semantics — Python 3.11.7 has known bypasses of that filter
(CVE-2025-4517 family), so nothing here relies on it. Member count, per-file size
and total size are capped, and the bytes actually written are counted (a header
cannot lie its way past the caps). Extraction goes into a fresh directory beside
the destination, renamed into place only when the whole archive was accepted: a
rejected archive leaves nothing behind. The archive is read as a stream, so memory
stays flat whatever its size.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from core.errors import ArtifactError

_CHUNK = 1024 * 1024
_FORBIDDEN_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


@dataclass(frozen=True)
class Limits:
    max_members: int = 50_000
    max_file_bytes: int = 100 * 1024 * 1024
    max_total_bytes: int = 2 * 1024**3


@dataclass(frozen=True)
class Extracted:
    files: int
    directories: int
    bytes: int


def write_tarball(root: Path, archive: Path) -> None:
    """A gzipped tarball of ``root``'s regular files and directories, the shape this
    extractor and the generator accept (links and special files are left out)."""

    def files_and_directories(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (member.isreg() or member.isdir()):
            return None
        member.mode &= 0o755  # no setuid, setgid or sticky bits
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        return member

    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name, filter=files_and_directories)


def extract_tarball(stream: BinaryIO, destination: Path, limits: Limits = Limits()) -> Extracted:
    """Extract a gzipped tar stream into ``destination`` (absent or an empty directory)."""
    partial = Path(tempfile.mkdtemp(prefix=".appgen-extract-", dir=destination.parent))
    try:
        counts = _extract_into(stream, partial, limits)
        os.rename(partial, destination)  # replaces an empty destination directory
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return counts


def _extract_into(stream: BinaryIO, root: Path, limits: Limits) -> Extracted:
    files = directories = total = members = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as archive:
            for member in archive:
                members += 1
                if members > limits.max_members:
                    raise _rejected(member, f"more than {limits.max_members:,} members")
                relative = _safe_relative(member)
                if not relative.parts:  # "." or "./": the app directory itself
                    if not member.isdir():
                        raise _rejected(member, f"{_kind(member)} in place of the app directory")
                    continue
                target = root.joinpath(*relative.parts)
                if member.isdir():
                    _make_directories(root, relative.parts, member)
                    directories += 1
                    continue
                if not member.isfile():
                    raise _rejected(
                        member, f"{_kind(member)} (only regular files and directories are accepted)"
                    )
                if member.size > limits.max_file_bytes:
                    raise _rejected(
                        member,
                        f"{member.size:,} bytes, over the "
                        f"{limits.max_file_bytes:,}-byte limit per file",
                    )
                _make_directories(root, relative.parts[:-1], member)
                budget = min(limits.max_file_bytes, limits.max_total_bytes - total)
                total += _write_file(archive.extractfile(member), target, member, budget)
                files += 1
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise ArtifactError(f"the generator's archive is not a valid gzipped tar: {exc}") from exc
    except OSError as exc:
        raise ArtifactError(f"the generator's archive could not be extracted: {exc}") from exc
    return Extracted(files=files, directories=directories, bytes=total)


def _safe_relative(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path relative to the app, normalised: PurePosixPath drops "."
    segments and repeated slashes, so "./x" and ".//x" are "x" and "." or "./" has no
    parts (the app directory). ".." is never collapsed, so "./../x" still leaves."""
    path = PurePosixPath(member.name)
    # tarfile strips a directory's trailing "/", so an absolute "/" arrives as "".
    if not member.name or path.is_absolute() or ".." in path.parts or "\x00" in member.name:
        raise _rejected(member, "its path leaves the app (absolute, empty or with '..')")
    if member.mode & _FORBIDDEN_BITS:
        raise _rejected(member, "it has setuid, setgid or sticky bits")
    return path


def _make_directories(root: Path, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
    current = root
    for part in parts:
        current = current / part
        try:
            current.mkdir(mode=0o755)
        except FileExistsError:
            if current.is_symlink() or not current.is_dir():
                raise _rejected(member, f"{part!r} is already a file") from None


def _write_file(
    source: IO[bytes] | None, target: Path, member: tarfile.TarInfo, budget: int
) -> int:
    if source is None:
        raise _rejected(member, "it has no data")
    mode = 0o755 if member.mode & 0o111 else 0o644
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise _rejected(member, "its path appears twice") from None
    written = 0
    with os.fdopen(descriptor, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > budget:
                raise _rejected(member, "it holds more data than the size limits allow")
            out.write(chunk)
    os.chmod(target, mode)
    return written


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.isfile():
        return "a regular file"
    return f"an entry of type {member.type!r}"


def _rejected(member: tarfile.TarInfo, why: str) -> ArtifactError:
    return ArtifactError(f"rejected the generator's archive at member {member.name!r}: {why}")
