"""The staging rules: what reaches the repository and what is left out, and why."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from core.errors import ArtifactError
from core.excludes import DEFAULT_EXCLUDES
from core.models import (
    ArtifactRef,
    DeployFiles,
    ExcludedPath,
    GeneratorRun,
    PublishedRepo,
    PublishRequest,
)
from core.paths import display_path
from tasks.filtered_stage import stage_tree
from tasks.publish_summary import summary_markdown
from tests.conftest import tree_digest


def write(root: Path, relative: str, text: str = "x") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def staged_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    }


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return tmp_path / "app"


def stage(app: Path, tmp_path: Path, **kwargs):
    destination = tmp_path / "staged"
    destination.mkdir()
    return stage_tree(app, destination, **kwargs), destination


def test_default_excludes_leave_out_dependencies_logs_env_and_build_output(app, tmp_path):
    for relative in (
        "package.json",
        "src/index.js",
        ".env.example",
        "scripts/build",
        "README.md",
        "node_modules/left-pad/index.js",
        "client/node_modules/x/y.js",
        "debug.log",
        "logs/app.log",
        ".env",
        ".env.local",
        ".env.production",
        "dist/app.js",
        "client/build/app.js",
        ".next/cache",
        ".cache/x",
        "coverage/lcov.info",
        "api/__pycache__/m.pyc",
        ".venv/bin/python",
        ".DS_Store",
        ".git/config",
    ):
        write(app, relative)
    staged, destination = stage(app, tmp_path)
    assert staged_files(destination) == {
        "package.json",
        "src/index.js",
        ".env.example",
        "scripts/build",
        "README.md",
    }
    assert staged.kept_files == 5
    reasons = {item.path: item.detail for item in staged.excluded}
    assert reasons["node_modules"] == "default rule 'node_modules/'"
    assert reasons[".env.local"] == "default rule '.env.*'"
    assert reasons["debug.log"] == "default rule '*.log'"


def test_app_gitignore_files_apply_with_git_semantics_including_nested_ones(app, tmp_path):
    write(app, ".gitignore", "*.tmp\n/secret.txt\nreports/\n!keep.tmp\n")
    write(app, "server/.gitignore", "coverage-report/\n*.sqlite\n!important.tmp\n")
    for relative in (
        "a.tmp",
        "keep.tmp",
        "secret.txt",
        "sub/secret.txt",
        "reports/r.html",
        "server/reports/r.html",
        "server/coverage-report/index.html",
        "server/db.sqlite",
        "server/important.tmp",
        "server/other.tmp",
        "coverage-report",  # a file, not a dir
    ):
        write(app, relative)
    _, destination = stage(app, tmp_path)
    assert staged_files(destination) == {
        ".gitignore",
        "server/.gitignore",
        "keep.tmp",
        "sub/secret.txt",
        "server/important.tmp",
        "coverage-report",
    }


def test_app_gitignore_cannot_re_include_a_default_exclude(app, tmp_path):
    write(app, ".gitignore", "!.env\n!node_modules/\n")
    write(app, ".env", "API_KEY=secret")
    write(app, "node_modules/x/index.js")
    _, destination = stage(app, tmp_path)
    assert staged_files(destination) == {".gitignore"}


def test_matches_git_on_the_seed_workspace(seed_workspace, tmp_path):
    excludes = tmp_path / "excludes"
    excludes.write_text("\n".join(DEFAULT_EXCLUDES) + "\n")
    git_dir = tmp_path / "git-dir"
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True)
    listed = subprocess.run(
        [
            "git",
            f"--git-dir={git_dir}",
            f"--work-tree={seed_workspace}",
            "-c",
            f"core.excludesFile={excludes}",
            "ls-files",
            "-o",
            "--exclude-standard",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=seed_workspace,
    ).stdout.split()
    staged, destination = stage(seed_workspace, tmp_path)
    assert staged_files(destination) == set(listed)
    assert staged.kept_files + staged.kept_links == len(listed)
    assert staged.kept_links == 1  # server/src/config/constants.js → shared/constants.js


def test_never_descends_into_an_excluded_directory(seed_workspace, tmp_path, monkeypatch):
    scanned: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path):
        scanned.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr("tasks.filtered_stage.os.scandir", recording_scandir)
    stage(seed_workspace, tmp_path)
    assert scanned, "the walk did not run"
    assert not [p for p in scanned if "node_modules" in p or "/dist" in p or "coverage" in p]


def test_links_inside_the_app_stay_links_and_links_out_are_dropped(app, tmp_path):
    outside = write(tmp_path, "outside/secret.txt", "top secret")
    write(app, "shared/constants.js", "export const A = 1")
    write(app, "src/real.js")
    (app / "src/constants.js").symlink_to("../shared/constants.js")
    (app / "src/dir-link").symlink_to("../shared")
    (app / "src/abs").symlink_to(outside)
    (app / "src/up").symlink_to("../../outside/secret.txt")
    (app / "src/escape").symlink_to("../shared/../../outside")
    (app / "hop").symlink_to("../outside")
    (app / "src/via-hop").symlink_to("../hop/secret.txt")  # inside on paper, outside really
    staged, destination = stage(app, tmp_path)
    assert os.readlink(destination / "src/constants.js") == "../shared/constants.js"
    assert (destination / "src/constants.js").read_text() == "export const A = 1"
    assert os.readlink(destination / "src/dir-link") == "../shared"
    dropped = {item.path for item in staged.excluded if item.kind == "outside-link"}
    assert dropped == {"src/abs", "src/up", "src/escape", "hop", "src/via-hop"}
    assert staged.kept_links == 2
    assert "top secret" not in "".join(p.read_text() for p in destination.rglob("*") if p.is_file())


def test_special_files_are_skipped_and_reported(app, tmp_path):
    write(app, "index.js")
    os.mkfifo(app / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(app / "sock"))
        staged, destination = stage(app, tmp_path)
    assert staged_files(destination) == {"index.js"}
    kinds = {item.path: (item.kind, item.detail) for item in staged.excluded}
    assert kinds["pipe"] == ("special-file", "not a regular file (FIFO)")
    assert kinds["sock"] == ("special-file", "not a regular file (socket)")


def test_hard_links_are_left_out_and_reported(app, tmp_path):
    write(app, "index.js")
    database = write(tmp_path, "home/appgen.db", "SQLite format 3 secret rows")
    os.link(database, app / "data.db")
    write(app, "src/a.js", "twice")
    os.link(app / "src/a.js", app / "src/b.js")  # two names inside the app: still out
    staged, destination = stage(app, tmp_path)
    assert staged_files(destination) == {"index.js"}
    left_out = {item.path: item for item in staged.skipped()}
    assert set(left_out) == {"data.db", "src/a.js", "src/b.js"}
    item = left_out["data.db"]
    assert (item.kind, item.size) == ("hardlink", len("SQLite format 3 secret rows"))
    assert item.detail.startswith("a hard link (2 names for one file)")
    assert "outside the app" in summary_of(staged)


def test_files_over_the_size_limit_are_left_out_and_reported(app, tmp_path):
    write(app, "index.js")
    huge = app / "assets/video.bin"
    huge.parent.mkdir(parents=True)
    with open(huge, "wb") as handle:  # a sparse 2 GB file: costs no disk
        handle.truncate(2 * 1024**3)
    staged, destination = stage(app, tmp_path)
    assert staged_files(destination) == {"index.js"}
    [item] = staged.skipped()
    assert (item.path, item.kind, item.size) == ("assets/video.bin", "too-large", 2 * 1024**3)
    assert staged.largest_excluded(1) == [item]


def test_modes_and_contents_are_kept_and_the_source_is_untouched(app, tmp_path):
    script = write(app, "scripts/start.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    write(app, "data.bin", "")
    (app / "data.bin").write_bytes(bytes(range(256)) * 4096)
    (app / "uploads").mkdir()
    write(app, "node_modules/x.js")
    before = tree_digest(app)
    staged, destination = stage(app, tmp_path)
    assert tree_digest(app) == before
    assert os.access(destination / "scripts/start.sh", os.X_OK)
    assert not os.access(destination / "data.bin", os.X_OK)
    assert (destination / "data.bin").read_bytes() == (app / "data.bin").read_bytes()
    assert staged.kept_bytes == len("#!/bin/sh\necho hi\n") + 256 * 4096


def test_unreadable_source_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        stage(tmp_path / "missing", tmp_path)


def summary_of(staged) -> str:
    """The run summary of a publish that staged ``staged``."""
    return summary_markdown(
        PublishRequest(
            request_id=1, prompt="an app", app_name="an-app", registered_at="2026-01-01T00:00:00Z"
        ),
        GeneratorRun(
            request_id=1, artifact=ArtifactRef(kind="volume", location="/w"), duration_seconds=1
        ),
        staged,
        DeployFiles(framework="node", internal_port=3000, written=[], kept_from_generator=[]),
        PublishedRepo(
            name="an-app", url="file:///repos/an-app.git", commit_sha="0" * 40, new_commit=True
        ),
        [],
    )


def test_display_path_escapes_what_is_not_utf8_text():
    import doctest

    import core.paths

    assert doctest.testmod(core.paths).failed == 0
    assert display_path(os.fsdecode(b"err-\xff.log")) == "err-\\xff.log"
    assert display_path("caf\u00e9/ok.txt") == "caf\u00e9/ok.txt"  # UTF-8 names stay as they are
    assert display_path("a\nb\x1b[31m") == "a\\x0ab\\x1b[31m"  # no forged log lines
    assert display_path(display_path(os.fsdecode(b"\xff\n"))) == "\\xff\\x0a"  # idempotent


def test_names_that_are_not_utf8_are_copied_as_bytes_and_reported_escaped(app, tmp_path):
    app_bytes = os.fsencode(app)
    write(app, "index.js")
    os.makedirs(app_bytes + b"/dir-\xfe")
    for name, content in (
        (b"err-\xff.log", b"log"),
        (b"data-\xff.txt", b"\x00\xffkept"),
        (b"dir-\xfe/huge-\xfd.bin", b"x" * 100),
    ):
        with open(app_bytes + b"/" + name, "wb") as handle:
            handle.write(content)
    os.symlink(b"/etc/\xfc", app_bytes + b"/link-\xfb")
    staged, destination = stage(app, tmp_path, max_file_bytes=50)

    kept = os.fsencode(destination) + b"/data-\xff.txt"
    with open(kept, "rb") as handle:
        assert handle.read() == b"\x00\xffkept"
    assert sorted(os.listdir(os.fsencode(destination))) == [
        b"data-\xff.txt",
        b"dir-\xfe",
        b"index.js",
    ]
    excluded = {item.path: item for item in staged.excluded}
    assert set(excluded) == {"err-\\xff.log", "dir-\\xfe/huge-\\xfd.bin", "link-\\xfb"}
    assert excluded["err-\\xff.log"].detail == "default rule '*.log'"
    assert excluded["link-\\xfb"].detail == "symlink to '/etc/\\xfc' leaves the app"
    for item in staged.excluded:
        assert ExcludedPath.model_validate_json(item.model_dump_json()) == item
    assert staged.model_validate_json(staged.model_dump_json()) == staged

    markdown = summary_of(staged)
    markdown.encode("utf-8")  # no surrogates left: the artifact can be sent as JSON
    assert "| `err-\\xff.log` | default rule '*.log' | 3 |" in markdown
    assert "- `dir-\\xfe/huge-\\xfd.bin`: larger than 50 bytes" in markdown


def test_the_summary_keeps_each_path_in_its_table_cell(app, tmp_path):
    for name in ("a|b.log", "tick`s.log", "`edge.log"):
        write(app, name)
    staged, _ = stage(app, tmp_path)
    markdown = summary_of(staged)
    assert "| `a\\|b.log` | default rule '*.log' | 1 |" in markdown
    assert "| ``tick`s.log`` |" in markdown
    assert "| `` `edge.log `` |" in markdown
