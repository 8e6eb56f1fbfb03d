"""Generator tarballs: packaged without the excludes, and extracted strictly — every
hostile archive is rejected by name, with nothing written anywhere."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from blocks.tarballs import Limits, extract_tarball, write_tarball
from core.errors import ArtifactError
from generator.package import package_app
from tasks.filtered_stage import stage_tree

Member = tuple[tarfile.TarInfo, bytes | None]  # its data, None for all but regular files


def archive(*members: Member) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def entry(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return info, None


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work" / "app"


def assert_nothing_written(destination: Path, tmp_path: Path) -> None:
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []  # no partial extraction left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # nothing beside it


# case -> the members after a README.md, what the error names, why it rejects them
HOSTILE: dict[str, tuple[list[Member], str, str]] = {
    "parent path": ([file("../escaped.txt")], "'../escaped.txt'", "leaves the app"),
    "nested parent": ([file("src/../../escaped.txt")], "escaped", "leaves the app"),
    "absolute path": ([file("/tmp/escaped.txt")], "'/tmp/escaped.txt'", "leaves the app"),
    "symlink escape": ([entry("link", tarfile.SYMTYPE, "/etc")], "'link'", "symbolic link"),
    "link then through it": (
        [entry("dir", tarfile.SYMTYPE, "../.."), file("dir/escaped.txt")],
        "'dir'",
        "symbolic link",
    ),
    "hardlink escape": ([entry("hl", tarfile.LNKTYPE, "/etc/passwd")], "'hl'", "hard link"),
    "device": ([entry("dev", tarfile.CHRTYPE)], "'dev'", "device file"),
    "fifo": ([entry("pipe", tarfile.FIFOTYPE)], "'pipe'", "FIFO"),
    "setuid": ([file("run.sh", b"#!/bin/sh", 0o4755)], "'run.sh'", "setuid"),
    "file where a directory must go": ([file("a"), file("a/b")], "'a/b'", "already a file"),
    "duplicate": ([file("a"), file("a")], "'a'", "appears twice"),
    "parent behind a dot": ([file("./../escaped.txt")], "'./../escaped.txt'", "leaves the app"),
    "parent behind a double slash": (
        [file(".//../escaped.txt")],
        "'.//../escaped.txt'",
        "leaves the app",
    ),
    "parent of the root": ([entry("./..", tarfile.DIRTYPE)], "'./..'", "leaves the app"),
    "duplicate once normalised": ([file("a"), file("./a")], "'./a'", "appears twice"),
    "duplicate once normalised, dotted first": (
        [file(".//a"), file("a")],
        "member 'a'",
        "appears twice",
    ),
    "root as an absolute directory": ([entry("/", tarfile.DIRTYPE)], "''", "leaves the app"),
    "root as a link": ([entry(".", tarfile.SYMTYPE, "/etc")], "'.'", "symbolic link"),
    "root as a file": ([file(".")], "'.'", "a regular file in place of the app directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_rejected_naming_the_member(case, destination, tmp_path):
    members, name, why = HOSTILE[case]
    with pytest.raises(ArtifactError) as rejected:
        extract_tarball(archive(file("README.md"), *members), destination)
    assert name in str(rejected.value) and why in str(rejected.value)
    assert_nothing_written(destination, tmp_path)


def test_too_many_members_are_rejected(destination, tmp_path):
    members = [file(f"f{i}", b"") for i in range(100_000)]
    with pytest.raises(ArtifactError, match="more than 50,000 members"):
        extract_tarball(archive(*members), destination)
    assert_nothing_written(destination, tmp_path)


def test_a_gzip_bomb_is_stopped_by_the_size_limits(destination, tmp_path):
    zeros = bytes(20 * 1024 * 1024)  # compresses ~1000:1
    bomb = archive(*(file(f"zeros{i}", zeros) for i in range(10)))
    assert len(bomb.getvalue()) < 1024 * 1024
    with pytest.raises(ArtifactError, match="more data than the size limits allow"):
        extract_tarball(bomb, destination, Limits(max_total_bytes=50 * 1024 * 1024))
    assert_nothing_written(destination, tmp_path)


def test_an_oversized_file_is_rejected_before_it_is_read(destination, tmp_path):
    big = bytes(2 * 1024 * 1024)
    with pytest.raises(ArtifactError, match="over the 1,048,576-byte limit per file"):
        extract_tarball(
            archive(file("video.bin", big)), destination, Limits(max_file_bytes=1024 * 1024)
        )
    assert_nothing_written(destination, tmp_path)


def test_a_corrupt_archive_is_a_clear_error(destination, tmp_path):
    with pytest.raises(ArtifactError, match="not a valid gzipped tar"):
        extract_tarball(io.BytesIO(b"\x1f\x8b\x08\x00garbage" * 10), destination)
    assert_nothing_written(destination, tmp_path)


def test_a_good_archive_extracts_with_modes(destination):
    counts = extract_tarball(
        archive(
            entry("src", tarfile.DIRTYPE),
            file("src/index.js", b"hello"),
            file("./bin/start.sh", b"#!/bin/sh", 0o755),
        ),
        destination,
    )
    assert (counts.files, counts.bytes) == (2, len(b"hello") + len(b"#!/bin/sh"))
    assert (destination / "src/index.js").read_bytes() == b"hello"
    assert os.access(destination / "bin/start.sh", os.X_OK)
    assert not stat.S_IMODE((destination / "src/index.js").stat().st_mode) & 0o111


def make_app(root: Path) -> dict[str, bytes]:
    """A small app with nested and empty directories, a dotfile and an executable."""
    files = {
        "package.json": b"{}",
        ".env.example": b"PORT=3000\n",
        "src/index.js": b"console.log(1)\n",
        "src/lib/util.js": b"export {}\n",
        "bin/start.sh": b"#!/bin/sh\nexec node src/index.js\n",
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    (root / "bin/start.sh").chmod(0o755)
    (root / "public").mkdir()
    return files


def assert_extracted(destination: Path, files: dict[str, bytes]) -> None:
    found = {p.relative_to(destination).as_posix() for p in destination.rglob("*")}
    assert found == set(files) | {"src", "src/lib", "bin", "public"}
    for relative, data in files.items():
        assert (destination / relative).read_bytes() == data
    assert os.access(destination / "bin/start.sh", os.X_OK)
    assert not os.access(destination / "src/index.js", os.X_OK)


def test_an_archive_made_by_the_tar_command_rooted_at_dot_extracts(destination, tmp_path):
    files = make_app(tmp_path / "app")
    made = subprocess.run(
        ["tar", "-C", str(tmp_path / "app"), "-czf", "-", "."], check=True, capture_output=True
    )
    with tarfile.open(fileobj=io.BytesIO(made.stdout), mode="r|gz") as listing:
        names = [member.name for member in listing]
    assert names[0] == "." and "./src/index.js" in names  # `./`, then `./`-prefixed names
    counts = extract_tarball(io.BytesIO(made.stdout), destination)
    assert (counts.files, counts.directories) == (len(files), 4)  # the root is not counted
    assert_extracted(destination, files)


def test_an_archive_made_by_tarfile_with_arcname_dot_extracts(destination, tmp_path):
    files = make_app(tmp_path / "app")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "app", arcname=".")
    buffer.seek(0)
    counts = extract_tarball(buffer, destination)
    assert counts.files == len(files)
    assert_extracted(destination, files)


def test_the_generator_packages_what_staging_would_keep(seed_workspace, tmp_path):
    """The generator's excludes (standard library) and the orchestrator's agree: staging
    the extracted tarball publishes what staging the workspace would, links aside."""
    tarball = tmp_path / "app.tar.gz"
    files, skipped = package_app(seed_workspace, tarball)
    assert skipped == ["server/src/config/constants.js"]  # a link: not packaged
    with tarfile.open(tarball) as packaged:
        names = packaged.getnames()
    assert len(names) < 400 and not [
        n for n in names if "node_modules" in n or n.endswith((".log", ".env.local"))
    ]
    with open(tarball, "rb") as stream:
        extract_tarball(stream, tmp_path / "extracted")

    def published(source: Path, into: Path) -> set[str]:
        into.mkdir()
        stage_tree(source, into)
        return {
            p.relative_to(into).as_posix()
            for p in into.rglob("*")
            if p.is_file() and not p.is_symlink()
        }

    from_tarball = published(tmp_path / "extracted", tmp_path / "staged-a")
    assert from_tarball == published(seed_workspace, tmp_path / "staged-b")
    assert files >= len(from_tarball)


def test_a_written_tarball_holds_files_and_directories_and_passes_the_extractor(tmp_path):
    root = tmp_path / "base"
    (root / "src").mkdir(parents=True)
    (root / "src/app.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o4755)  # setuid: never carried
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "linked-dir").symlink_to(root / "src")
    archive = tmp_path / "base.tar.gz"
    write_tarball(root, archive)
    with open(archive, "rb") as stream:
        extract_tarball(stream, tmp_path / "out")
    found = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    assert found == ["run.sh", "src", "src/app.py"]
    assert (tmp_path / "out/run.sh").stat().st_mode & 0o7777 == 0o755
