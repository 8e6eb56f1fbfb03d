"""filtered_stage: copy the generated app into a fresh temp dir, leaving out what must
never be published.

The walk is a pruning ``os.scandir`` walk: an excluded directory is never entered,
so the cost follows the size of what is kept, not of ``node_modules``. Ignore rules
have git's semantics (pathspec's ``GitIgnoreSpec``), including nested ``.gitignore``
files and directory-only patterns. The default rules always apply; the app's own
``.gitignore`` files can leave out more but cannot re-include a default.

File names are untrusted bytes: they are copied as they are (``str`` paths decoded
with ``surrogateescape``) and recorded or reported only through ``display_path``.
The tree itself is untrusted too: links leaving it, special files and files with more
than one hard link (another name may be the database) are left out and reported.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.errors import ArtifactError
from core.excludes import DEFAULT_EXCLUDES, MAX_FILE_BYTES
from core.models import ExcludedPath, StagedTree
from core.paths import display_path
from core.processes import temp_prefix
from tasks.step_timings import remember_timing

_DEFAULT_RULES = GitIgnoreSpec.from_lines(DEFAULT_EXCLUDES)


def _hardlink_detail(links: int) -> str:
    return (
        f"a hard link ({links} names for one file): its other names may be outside the "
        "app (the database, another request's files)"
    )


@dataclass(frozen=True)
class _Rules:
    """Ignore rules in force in one directory: (base, spec, where they came from),
    outermost first."""

    layers: tuple[tuple[str, GitIgnoreSpec, str], ...] = ()

    def with_gitignore(self, base: str, path: str, label: str) -> _Rules:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                spec = GitIgnoreSpec.from_lines(handle.read().splitlines())
        except OSError:
            return self
        return _Rules((*self.layers, (base, spec, label)))

    def exclusion(self, relative: str, is_dir: bool) -> str | None:
        """Why ``relative`` is excluded, or None if it is kept."""
        probe = relative + "/" if is_dir else relative
        verdict = _DEFAULT_RULES.check_file(probe)
        if verdict.include and verdict.index is not None:
            return f"default rule {_DEFAULT_RULES.patterns[verdict.index].pattern!r}"
        # The deepest .gitignore with a matching pattern decides, as in git.
        for base, spec, label in reversed(self.layers):
            verdict = spec.check_file(probe[len(base) :])
            if verdict.include is not None:
                if verdict.include and verdict.index is not None:
                    return f"{label} rule {spec.patterns[verdict.index].pattern!r}"
                return None
        return None


@dataclass
class _Tally:
    kept_files: int = 0
    kept_links: int = 0
    kept_bytes: int = 0
    excluded: list[ExcludedPath] = field(default_factory=list)

    def exclude(self, path: str, kind: str, detail: str, size: int | None = None) -> None:
        """Record ``path`` (a raw name) as left out; ``detail`` is display text already."""
        self.excluded.append(
            ExcludedPath(path=display_path(path), kind=kind, detail=detail, size=size)
        )


def stage_tree(
    source: Path, destination: Path, *, max_file_bytes: int = MAX_FILE_BYTES
) -> StagedTree:
    """Copy the publishable part of ``source`` into the empty directory ``destination``."""
    root = os.fspath(source)
    real_root = os.path.realpath(root)
    tally = _Tally()
    pending: list[tuple[str, _Rules]] = [("", _Rules())]
    while pending:
        relative_dir, rules = pending.pop()
        source_dir = os.path.join(root, relative_dir)
        target_dir = os.path.join(destination, relative_dir)
        try:
            with os.scandir(source_dir) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise ArtifactError(
                f"cannot read {display_path(relative_dir or '.')} in {display_path(root)}: "
                f"{exc.strerror or exc}"
            ) from exc
        gitignore = next(
            (e for e in entries if e.name == ".gitignore" and e.is_file(follow_symlinks=False)),
            None,
        )
        if gitignore is not None:
            label = display_path(relative_dir + ".gitignore")
            rules = rules.with_gitignore(relative_dir, gitignore.path, label)
        for entry in entries:
            relative = relative_dir + entry.name
            info = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(info.st_mode)
            reason = rules.exclusion(relative, is_dir)
            if reason is not None:
                tally.exclude(relative, "ignored", reason, None if is_dir else info.st_size)
            elif is_dir:
                os.mkdir(os.path.join(target_dir, entry.name))
                pending.append((relative + "/", rules))
            elif stat.S_ISLNK(info.st_mode):
                _stage_link(entry, relative, real_root, target_dir, tally)
            elif not stat.S_ISREG(info.st_mode):
                tally.exclude(relative, "special-file", f"not a regular file ({_kind(info)})")
            elif info.st_nlink > 1:
                tally.exclude(relative, "hardlink", _hardlink_detail(info.st_nlink), info.st_size)
            elif info.st_size > max_file_bytes:
                tally.exclude(
                    relative, "too-large", f"larger than {max_file_bytes:,} bytes", info.st_size
                )
            else:
                try:
                    _copy_file(entry.path, os.path.join(target_dir, entry.name), info)
                except OSError as exc:
                    raise ArtifactError(
                        f"cannot copy {display_path(relative)}: {exc.strerror}"
                    ) from exc
                tally.kept_files += 1
                tally.kept_bytes += info.st_size
    return StagedTree(
        path=destination,
        kept_files=tally.kept_files,
        kept_links=tally.kept_links,
        kept_bytes=tally.kept_bytes,
        excluded=tally.excluded,
    )


def _stage_link(
    entry: os.DirEntry[str], relative: str, real_root: str, target_dir: str, tally: _Tally
) -> None:
    """Keep a relative link whose target stays inside the app; drop any other."""
    target = os.readlink(entry.path)
    lexical = os.path.normpath(os.path.join(os.path.dirname(relative), target))
    resolved = os.path.realpath(entry.path)
    if (
        os.path.isabs(target)
        or lexical == ".."
        or lexical.startswith("../")
        or os.path.commonpath([real_root, resolved]) != real_root
    ):
        tally.exclude(
            relative, "outside-link", f"symlink to '{display_path(target)}' leaves the app"
        )
        return
    os.symlink(target, os.path.join(target_dir, entry.name))
    tally.kept_links += 1


def _copy_file(source: str, target: str, info: os.stat_result) -> None:
    """Copy one regular file; refuses a path swapped for a link or a FIFO meanwhile."""
    mode = 0o755 if info.st_mode & 0o111 else 0o644
    source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        opened = os.fstat(source_fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_nlink > 1:
            raise ArtifactError(f"{display_path(source)} changed while it was being staged")
        target_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            _copy_contents(source_fd, target_fd, info.st_size)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)
    if mode == 0o755:
        os.chmod(target, mode)  # O_CREAT's mode is reduced by the umask


def _copy_contents(source_fd: int, target_fd: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(target_fd, source_fd, offset, size - offset)
            if sent == 0:
                break
            offset += sent
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EXDEV):
            raise
        os.lseek(source_fd, offset, os.SEEK_SET)
        with (
            open(source_fd, "rb", closefd=False) as src,
            open(target_fd, "wb", closefd=False) as dst,
        ):
            shutil.copyfileobj(src, dst)


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "unknown type"


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def filtered_stage(
    source: Path, max_file_bytes: int = MAX_FILE_BYTES, staging_dir: Path | None = None
) -> StagedTree:
    """Stage the app in a new temp dir (under ``staging_dir`` if given); the caller
    removes ``StagedTree.path``."""
    logger = get_run_logger()
    try:
        destination = Path(tempfile.mkdtemp(prefix=temp_prefix("stage"), dir=staging_dir))
    except OSError as exc:
        raise ArtifactError(
            f"cannot create a staging directory in {staging_dir or tempfile.gettempdir()}: "
            f"{exc.strerror}; check APPGEN_STAGING_DIR"
        ) from exc
    try:
        staged = stage_tree(source, destination, max_file_bytes=max_file_bytes)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    logger.info(
        "staged %d files and %d links (%s bytes); left out %d paths (%s bytes in files)",
        staged.kept_files,
        staged.kept_links,
        f"{staged.kept_bytes:,}",
        len(staged.excluded),
        f"{staged.excluded_bytes:,}",
    )
    for item in staged.skipped():
        logger.warning("left out %s: %s", item.path, item.detail)
    return staged
