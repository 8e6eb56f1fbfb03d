"""The `appgen` command as a person or a script runs it."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from tests.aws_standins import free_port
from tests.conftest import agent_runs


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(result.stdout.strip().splitlines()[-1]))


def test_publish_json_reports_the_repository_and_status_agrees(appgen, appgen_home):
    result = appgen("publish", "--prompt", "Build me a counter app", "--json")
    assert result.returncode == 0, result.stderr
    outcome = last_json(result)
    assert outcome["status"] == "published" and outcome["error"] is None
    assert outcome["repo_url"] == (appgen_home / "repos/counter-app.git").as_uri()
    assert len(outcome["commit_sha"]) == 40
    assert "run_generator" in result.stderr  # progress for people goes to stderr

    status = appgen("status", str(outcome["request_id"]), "--json")
    recorded = last_json(status)
    assert {k: recorded[k] for k in ("status", "repo_url", "commit_sha")} == {
        k: outcome[k] for k in ("status", "repo_url", "commit_sha")
    }
    table = appgen("status")
    assert "counter-app" in table.stdout and "published" in table.stdout


def refusing_repository(root: Path, name: str, request_id: int) -> Path:
    """A bare repository the request already owns (its id is in the request's row),
    where an operator enabled a pre-receive hook that refuses every push (as a
    protected branch would)."""
    from blocks import defaults
    from blocks.git_hosts import LocalGitHost
    from core.settings import Settings

    repository = LocalGitHost(root=root).ensure_repository(name, request_id)
    defaults.database(Settings()).upsert(
        request_id, prompt="a blog", app_name=name, repo_id=repository.id
    )
    bare = root / f"{name}.git"
    hook = bare / "hooks/pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    subprocess.run(
        ["git", "config", "--file", str(bare / "config"), "core.hooksPath", str(hook.parent)],
        check=True,
    )
    return hook


def test_a_failed_publish_is_a_clear_message_and_exit_1_then_a_rerun_finishes_it(
    appgen, appgen_home, counting_agent
):
    hook = refusing_repository(appgen_home / "repos", "blog", 21)
    args = ("publish", "--prompt", "a blog", "--app-name", "blog", "--request-id", "21", "--json")
    failed = appgen(*args)
    assert failed.returncode == 1
    outcome = last_json(failed)
    assert (outcome["request_id"], outcome["status"]) == (21, "failed")
    assert "protected branch" in outcome["error"]
    assert "request 21 failed:" in failed.stderr
    assert "Traceback" not in failed.stderr + failed.stdout

    hook.unlink()
    done = appgen(*args)
    assert done.returncode == 0, done.stderr
    assert last_json(done)["status"] == "published"
    assert agent_runs(counting_agent) == ["21"]


def test_a_failing_generator_exits_1_without_a_traceback(appgen):
    result = appgen(
        "publish",
        "--prompt",
        "a shop",
        "--json",
        APPGEN_AGENT="command",
        APPGEN_AGENT_COMMAND="echo out of tokens; exit 7",
    )
    assert result.returncode == 1
    outcome = last_json(result)
    assert outcome["status"] == "failed" and "out of tokens" in outcome["error"]
    assert "Traceback" not in result.stderr
    assert "prefect flow-run logs" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["publish", "--prompt", ""], {}, "the prompt is empty"),
        (["publish", "--prompt", "x", "--app-name", "bad/name"], {}, "not a safe repository"),
        (["publish", "--prompt", "x", "--request-id", "0"], {}, "must be a positive integer"),
        (["publish"], {}, "the following arguments are required: --prompt"),
        (["publish", "--prompt", "x"], {"APPGEN_GENERATOR": "kubernetes"}, "APPGEN_GENERATOR"),
        (["publish", "--prompt", "x"], {"APPGEN_AGENT": "command"}, "APPGEN_AGENT_COMMAND"),
        (["publish", "--prompt", "x"], {"APPGEN_GENERATOR": "ecs"}, "APPGEN_ECS_CLUSTER"),
        (["publish", "--prompt", "x"], {"APPGEN_GIT_HOST": "github"}, "APPGEN_GITHUB_OWNER"),
        (["status", "99"], {}, "no request 99"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_creates_nothing(
    appgen, appgen_home, args, env, message
):
    result = appgen(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    created = [p.name for p in appgen_home.iterdir()] if appgen_home.exists() else []
    assert set(created) <= (
        {"appgen.db", "appgen.db.migrate.lock"} if args[0] == "status" else set()
    )


@pytest.fixture
def blocker(tmp_path: Path) -> Path:
    """A regular file where a directory would have to be."""
    path = tmp_path / "blocker"
    path.write_text("not a directory")
    return path


TOO_BIG = str(2**63)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["publish", "--prompt", "x", "--request-id", TOO_BIG], {}, "must be at most"),
        (["status", TOO_BIG], {}, "must be at most"),
        (["publish", "--prompt", "x", "--request-id", "abc"], {}, "must be a positive integer"),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_AGENT_ENV": "[oops"},
            "APPGEN_AGENT_ENV: not valid JSON",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_GENERATOR": "ecs", "APPGEN_ECS_SUBNETS": "subnet-1,subnet-2"},
            "APPGEN_ECS_SUBNETS: not valid JSON",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_DATABASE_URL": "not a url"},
            "APPGEN_DATABASE_URL is not a database URL",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_DATABASE_URL": "mysql://x/y"},
            "appgen supports SQLite and PostgreSQL",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_DATABASE_URL": "postgresql+nosuchdriver://u:hunter22@127.0.0.1:1/db"},
            "SQLAlchemy has no driver 'nosuchdriver'",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_DATABASE_URL": "postgresql+pg8000://u:hunter22@127.0.0.1:1/db"},
            "its driver is not installed (pg8000)",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_DATABASE_URL": "sqlite:///{blocker}/appgen.db"},
            "the SQLite file's directory {blocker} is not a directory",
        ),
        (
            ["status"],
            {"APPGEN_DATABASE_URL": "sqlite:///{blocker}/appgen.db"},
            "point APPGEN_DATABASE_URL at a writable directory",
        ),
        (["status"], {"APPGEN_DATABASE_URL": "not a url"}, "APPGEN_DATABASE_URL"),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_STAGING_DIR": "{blocker}"},
            "APPGEN_STAGING_DIR={blocker} is not a directory",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_STAGING_DIR": "{blocker}.missing"},
            "APPGEN_STAGING_DIR={blocker}.missing does not exist",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_GIT_ROOT": "{blocker}/repos"},
            "APPGEN_GIT_ROOT={blocker}/repos cannot be created: {blocker} is not a directory",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_HOME": "{blocker}"},
            "APPGEN_HOME={blocker} is not a directory",
        ),
        (
            ["publish", "--prompt", "x"],
            {"APPGEN_HOME": "{blocker}/home"},
            "APPGEN_HOME={blocker}/home cannot be created",
        ),
    ],
)
def test_unusable_settings_exit_2_naming_the_setting_before_anything_exists(
    appgen, appgen_home, blocker, args, env, message
):
    env = {name: value.format(blocker=blocker) for name, value in env.items()}
    result = appgen(*args, **env)
    assert result.returncode == 2, result.stderr
    assert message.format(blocker=blocker) in result.stderr
    assert "Traceback" not in result.stderr and "hunter22" not in result.stderr
    if TOO_BIG not in args and "abc" not in args:  # argparse adds its usage line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not appgen_home.exists()  # no database, workspace or repository
    assert blocker.read_text() == "not a directory"
    assert [p.name for p in blocker.parent.iterdir()] == ["blocker"]


def test_an_unreachable_database_fails_before_the_request_starts(appgen, appgen_home):
    result = appgen(
        "publish",
        "--prompt",
        "x",
        "--json",
        APPGEN_DATABASE_URL="postgresql+psycopg://u:hunter22@127.0.0.1:1/appgen",
    )
    assert result.returncode == 1
    outcome = last_json(result)
    assert (outcome["request_id"], outcome["status"]) == (None, "failed")
    assert "127.0.0.1:1" in outcome["error"] and "hunter22" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not appgen_home.exists()


def test_a_prefect_api_that_cannot_be_reached_is_named_and_nothing_starts(appgen, appgen_home):
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    result = appgen("publish", "--prompt", "x", "--json", PREFECT_API_URL=api)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    outcome = last_json(result)
    assert (outcome["request_id"], outcome["status"], outcome["flow_run_id"]) == (
        None,
        "failed",
        None,
    )
    assert outcome["error"].startswith(f"the Prefect API at {api} cannot be reached (")
    assert not appgen_home.exists()  # no database, and no server of appgen's started
    for command in ("setup", "config"):
        result = appgen(command, PREFECT_API_URL=api)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith(f"error: the Prefect API at {api} cannot be reached (")
        )


@contextlib.contextmanager
def api_answering(status: int) -> Iterator[str]:
    """A Prefect API URL (with credentials) whose server answers ``status`` to all."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(status)

        do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://appgen:hunter22@127.0.0.1:{server.server_port}/api"
        finally:
            server.shutdown()


def test_a_prefect_api_that_answers_with_errors_is_named_without_its_credentials(appgen):
    with api_answering(500) as api:
        result = appgen("config", PREFECT_API_URL=api)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hunter22" not in result.stdout + result.stderr
    shown = api.replace("appgen:hunter22@", "")
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: the Prefect API at {shown} answered 500 Internal Server Error to GET /"
        )
    )


def test_a_prefect_api_lost_as_the_run_starts_still_ends_with_the_json_line(appgen):
    """Every saved-block lookup finds none (404), so the run is started, and fails."""
    with api_answering(404) as api:
        result = appgen("publish", "--prompt", "x", "--json", PREFECT_API_URL=api)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    outcome = last_json(result)
    assert outcome["status"] == "failed" and outcome["flow_run_id"] is None
    assert "answered 404 Not Found" in outcome["error"] and "`appgen reap`" in outcome["error"]
    assert "hunter22" not in result.stdout + result.stderr


MARKUP = "[/x] [red]"


def test_messages_with_square_brackets_are_printed_as_they_are(appgen, tmp_path):
    name = appgen("publish", "--prompt", "x", "--app-name", MARKUP)
    assert name.returncode == 2 and f"app name '{MARKUP}'" in name.stderr
    staging = appgen(
        "publish", "--prompt", "x", APPGEN_STAGING_DIR=str(tmp_path / MARKUP / "stage")
    )
    assert staging.returncode == 2 and f"{MARKUP}/stage does not exist" in staging.stderr
    for result in (name, staging):
        assert "MarkupError" not in result.stderr and "Traceback" not in result.stderr


def test_a_failure_and_the_status_table_show_square_brackets_as_they_are(appgen):
    from blocks import defaults
    from core.models import RequestStatus
    from core.settings import Settings

    failed = appgen(
        "publish",
        "--prompt",
        "a shop",
        APPGEN_AGENT="command",
        APPGEN_AGENT_COMMAND=f"echo '{MARKUP} out of tokens'; exit 7",
    )
    assert failed.returncode == 1, failed.stderr
    assert f"{MARKUP} out of tokens" in failed.stderr
    defaults.database(Settings()).upsert(
        99, prompt="x", app_name="x", status=RequestStatus.FAILED, error=f"{MARKUP} no"
    )
    table = appgen("status")
    assert table.returncode == 0, table.stderr
    assert f"{MARKUP} no" in table.stdout
    for result in (failed, table):
        assert "MarkupError" not in result.stderr and "Traceback" not in result.stderr


def test_status_with_no_requests(appgen):
    result = appgen("status", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_status_reap_and_the_server_commands_run_whatever_the_agent_settings_say(appgen):
    """An agent setting that is wrong (APPGEN_AGENT=command without its command) stops
    a publish, but never keeps anyone from reading the requests, repairing what dead
    runs left or stopping the server: those commands read only the settings they use."""
    broken = {"APPGEN_AGENT": "command", "APPGEN_GENERATOR_TIMEOUT": "-5"}
    assert appgen("publish", "--prompt", "x", **broken).returncode == 2
    status = appgen("status", "--json", **broken)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == []
    server = appgen("server", "status", **broken)
    assert (server.returncode, server.stdout.strip()) == (1, "not running")
    stop = appgen("server", "stop", **broken)
    assert (stop.returncode, stop.stdout.strip()) == (0, "not running")
    reap = appgen("reap", **broken)
    assert reap.returncode == 0, reap.stderr
    for result in (status, server, stop, reap):
        assert "invalid settings" not in result.stderr
    # A setting reap itself reads is still checked.
    bad_lease = appgen("reap", **broken, APPGEN_LEASE_SECONDS="-1")
    assert bad_lease.returncode == 2 and "APPGEN_LEASE_SECONDS" in bad_lease.stderr


def test_module_entry_points_agree():
    help_text = subprocess.run(
        [sys.executable, "-m", "appgen", "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "publish" in help_text.stdout
    script = Path(sys.executable).with_name("appgen")
    if script.exists():  # installed with `pip install -e .`
        assert subprocess.run([str(script), "--help"], capture_output=True).returncode == 0


# Prints which of these packages a command imported, whatever it exits with.
_IMPORTED = """
import sys
from appgen.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("prefect", "prefect_aws", "boto3", "docker", "alembic", "sqlalchemy", "rich")
print(sorted(name for name in heavy if name in sys.modules), file=sys.__stderr__)
"""


def imported_by(*args: str) -> list[str]:
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args], env=env, capture_output=True, text=True
    )
    return cast(list[str], json.loads(result.stderr.strip().splitlines()[-1].replace("'", '"')))


WITHOUT_PREFECT_CASES = [
    ["publish", "--prompt", ""],
    ["status", "--json"],
    ["status"],
    ["status", "7"],
    ["server", "status"],
    ["server", "stop"],
]


@pytest.mark.parametrize("args", WITHOUT_PREFECT_CASES)
def test_read_only_commands_and_bad_input_do_not_import_prefect(args):
    imported = imported_by(*args)
    assert not {"prefect", "prefect_aws", "boto3", "docker"} & set(imported)


@pytest.mark.parametrize("args", [["--help"], ["publish"], ["status", "-1"]])
def test_help_and_usage_errors_import_nothing_heavy(args):
    assert imported_by(*args) == []


def test_status_brings_a_database_of_an_older_appgen_up_to_date(appgen, appgen_home):
    from alembic import command
    from alembic.config import Config

    from core.database import MIGRATIONS

    url = f"sqlite:///{appgen_home}/appgen.db"
    appgen_home.mkdir()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    with sa.create_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")  # before pull requests had columns
    result = appgen("status", "--json")
    assert result.returncode == 0, result.stderr
    with sa.create_engine(url).connect() as connection:
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        assert version.scalar() == "0007"


def test_migration_files_are_named_after_their_revision():
    """core.database finds the newest revision by file name, without alembic."""
    from alembic.script import ScriptDirectory

    from core.database import MIGRATIONS, _newest_revision

    scripts = ScriptDirectory(str(MIGRATIONS))
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_")
    assert _newest_revision() == scripts.get_current_head()
