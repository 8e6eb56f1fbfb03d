"""Package the generated app as a gzipped tarball and upload it with a presigned PUT
URL (AWS mode: Fargate tasks share no volume with the orchestrator).

The tarball leaves out what is never published (the same defaults as the
orchestrator's ``core/excludes.py``; a test keeps the two in step) and holds only
regular files and directories: links and special files are skipped and named. It is
written to a temporary file and streamed from there, so memory stays flat however
large the app. Standard library only.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

CONTENT_TYPE = "application/gzip"
EXCLUDED_DIRECTORIES = (
    "node_modules",
    "dist",
    "build",
    ".next",
    ".cache",
    "coverage",
    "__pycache__",
    ".venv",
)
EXCLUDED_NAMES = (".git", "*.log", ".env", ".env.*", ".DS_Store")
KEPT_NAMES = (".env.example",)


class PackageError(Exception):
    """The app could not be packaged or uploaded."""


def excluded(name: str, is_dir: bool) -> bool:
    if name in KEPT_NAMES:
        return False
    if is_dir and name in EXCLUDED_DIRECTORIES:
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in EXCLUDED_NAMES)


def package_app(app_dir: Path, archive: Path) -> tuple[int, list[str]]:
    """Write app_dir's publishable files to a gzipped tarball; return the number of
    files packaged and the paths skipped for being links or special files."""
    files, skipped = 0, []
    with tarfile.open(archive, "w:gz") as tar:
        for directory, subdirectories, names in os.walk(app_dir):
            relative_dir = Path(directory).relative_to(app_dir)
            subdirectories[:] = sorted(
                d
                for d in subdirectories
                if not excluded(d, is_dir=True) and not os.path.islink(os.path.join(directory, d))
            )
            for name in subdirectories:
                tar.addfile(_info(relative_dir / name, tarfile.DIRTYPE, 0o755, 0))
            for name in sorted(names):
                path = Path(directory, name)
                info = path.lstat()
                relative = relative_dir / name
                if excluded(name, is_dir=False):
                    continue
                if not stat.S_ISREG(info.st_mode):
                    skipped.append(relative.as_posix())
                    continue
                mode = 0o755 if info.st_mode & 0o111 else 0o644
                with open(path, "rb") as handle:
                    tar.addfile(_info(relative, tarfile.REGTYPE, mode, info.st_size), handle)
                files += 1
    return files, skipped


def _info(relative: Path, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(relative.as_posix())
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    return info


def upload(archive: Path, url: str) -> None:
    """PUT the archive to a presigned URL, streaming it from disk."""
    size = archive.stat().st_size
    with open(archive, "rb") as body:
        request = urllib.request.Request(
            url,
            data=body,
            method="PUT",
            headers={"Content-Type": CONTENT_TYPE, "Content-Length": str(size)},
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", "replace")
            raise PackageError(
                f"the upload URL refused the archive (HTTP {exc.code}): {detail.strip()}; "
                "it may have expired"
            ) from exc
        except urllib.error.URLError as exc:
            raise PackageError(f"cannot reach the upload URL: {exc.reason}") from exc


def package_and_upload(app_dir: Path, url: str) -> str:
    """Package and upload; returns a one-line summary."""
    with tempfile.TemporaryDirectory(prefix="appgen-package-") as scratch:
        archive = Path(scratch) / "app.tar.gz"
        files, skipped = package_app(app_dir, archive)
        for path in skipped:
            print(f"generator: not packaged (not a regular file): {path}", flush=True)
        upload(archive, url)
        return f"uploaded {files} files ({archive.stat().st_size:,} bytes compressed)"


def download_and_unpack(url: str, app_dir: Path) -> int:
    """Download the base a revision starts from (a tarball the orchestrator packaged,
    regular files and directories only) and unpack it into ``app_dir``; returns the
    number of files. Anything else in it is refused."""
    with tempfile.TemporaryDirectory(prefix="appgen-base-") as scratch:
        archive = Path(scratch) / "base.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=300) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
        except urllib.error.HTTPError as exc:
            raise PackageError(
                f"the base URL answered HTTP {exc.code}; it may have expired"
            ) from exc
        except urllib.error.URLError as exc:
            raise PackageError(f"cannot reach the base URL: {exc.reason}") from exc
        return _unpack(archive, app_dir)


def _unpack(archive: Path, app_dir: Path) -> int:
    files = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            relative = Path(member.name)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise PackageError(f"the base holds a path outside the app: {member.name!r}")
            target = app_dir / relative
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file's member
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with source, os.fdopen(os.open(target, flags, member.mode & 0o755), "wb") as out:
                    shutil.copyfileobj(source, out)
                files += 1
            else:
                raise PackageError(f"the base holds {member.name!r}, which is not a file")
    return files
