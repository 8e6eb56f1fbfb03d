"""Publishing to GitHub (a local stand-in with GitHub's API shapes and a real git
smart-HTTP server): idempotent repositories, taken names, rate limits, and a token
that never leaks."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from blocks import defaults, github_host
from blocks.github_host import GitHubHost, RetryPolicy, request_marker
from core.errors import PublishError
from core.models import RequestStatus
from core.redaction import MASK, RedactingFilter, register_secret
from core.settings import Settings
from flows.publish import generate_and_publish
from tests.conftest import agent_runs, flow_run_logs

pytestmark = pytest.mark.usefixtures("flow_env")


def bare_git(state, name: str, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={state.bare_path('acme', name)}", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def record(request_id: int):
    return defaults.database(Settings()).get(request_id)


def credential_header(token: str) -> str:
    return "AUTHORIZATION: basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()


def test_publishes_to_the_organisation_and_clones_back(github, github_server, tmp_path):
    outcome = generate_and_publish("Build me a counter app", request_id=1)
    assert outcome.repo_url == f"{github_server.git_url}/acme/counter-app"
    repo = github.repos[("acme", "counter-app")]
    assert repo["private"] is True
    assert request_marker(1) in repo["description"]
    row = record(1)
    assert (row.repo_url, row.repo_id) == (outcome.repo_url, str(repo["id"]))
    clone = tmp_path / "clone"
    subprocess.run(
        [
            "git",
            "-c",
            f"http.extraheader={credential_header(github.token)}",
            "clone",
            "-q",
            repo["clone_url"],
            str(clone),
        ],
        check=True,
    )
    assert (clone / "server.js").exists() and (clone / "fly.toml").exists()
    assert 'app = "counter-app"' in (clone / "fly.toml").read_text()


def test_a_push_without_the_credential_is_refused_by_the_git_server(
    github, github_server, tmp_path
):
    generate_and_publish("a counter", request_id=2)
    clone = subprocess.run(
        ["git", "clone", "-q", f"{github_server.git_url}/acme/counter.git", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=os.environ | {"GIT_TERMINAL_PROMPT": "0"},
    )
    assert clone.returncode != 0


def test_a_failed_push_then_a_rerun_gives_one_repository_and_one_commit(github, counting_agent):
    github.fail_next_push = True
    with pytest.raises(PublishError, match=r"git push .* failed"):
        generate_and_publish("a recipe book", request_id=3)
    failed = record(3)
    assert failed.status is RequestStatus.FAILED
    assert failed.repo_url and failed.repo_id  # recorded right after creation, before the push

    outcome = generate_and_publish("a recipe book", request_id=3)
    assert outcome.status is RequestStatus.PUBLISHED and outcome.repo_url == failed.repo_url
    assert list(github.repos) == [("acme", "recipe-book")]
    assert bare_git(github, "recipe-book", "rev-list", "--count", "main") == "1"
    assert agent_runs(counting_agent) == ["3"]


def test_a_name_taken_by_someone_else_moves_to_the_next_name(github, counting_agent):
    github.add_foreign_repository("acme", "counter-app")
    first = generate_and_publish("Build me a counter app", request_id=4)
    again = generate_and_publish("Build me a counter app", request_id=4)
    assert first.repo_url is not None
    assert first.repo_url.endswith("/acme/counter-app-2")
    assert record(4).repo_url == first.repo_url
    assert (again.repo_url, again.commit_sha) == (first.repo_url, first.commit_sha)
    assert bare_git(github, "counter-app-2", "rev-list", "--count", "main") == "1"
    assert (
        subprocess.run(
            [
                "git",
                f"--git-dir={github.bare_path('acme', 'counter-app')}",
                "rev-parse",
                "--verify",
                "-q",
                "main",
            ],
            capture_output=True,
        ).returncode
        != 0
    )  # theirs: untouched


def test_a_422_for_our_own_repository_is_recognised_and_reused(github):
    first = generate_and_publish("a counter", request_id=13)
    github.stale_reads.add("counter")  # GET says 404, so appgen tries to create: 422
    again = generate_and_publish("a counter", request_id=13)
    assert (again.repo_url, again.commit_sha) == (first.repo_url, first.commit_sha)
    creates = [r for r in github.requests if r[0] == "POST" and r[1].endswith("/repos")]
    assert len(creates) == 2 and list(github.repos) == [("acme", "counter")]


@pytest.mark.parametrize("limit", ["reset", "retry-after"])
def test_a_rate_limited_create_succeeds_after_the_wait(github, limit):
    github.rate_limit_next.append(("POST", limit))
    outcome = generate_and_publish("a counter", request_id=5)
    assert outcome.status is RequestStatus.PUBLISHED
    creates = [r for r in github.requests if r[0] == "POST" and r[1].endswith("/repos")]
    assert len(creates) == 2  # refused once, then sent again after the wait


def test_a_rate_limit_beyond_the_budget_fails_clearly(github, github_server):
    host = GitHubHost(
        owner="acme",
        token=SecretStr(github.token),
        api_url=github_server.api_url,
        git_url=github_server.git_url,
        max_rate_limit_wait_seconds=0,
    )
    github.rate_limit_next.append(("GET", "reset"))
    with pytest.raises(PublishError, match=r"rate limit .* run the publish again later"):
        host.ensure_repository("counter", 6)


def test_a_bad_token_is_a_clear_error_that_does_not_contain_it(github, monkeypatch):
    wrong = "ghp_wrongTokenValue9876543210"
    monkeypatch.setenv("APPGEN_GITHUB_TOKEN", wrong)
    with pytest.raises(PublishError) as failure:
        generate_and_publish("a counter", request_id=7)
    assert "401 Bad credentials" in str(failure.value)
    assert "APPGEN_GITHUB_TOKEN" in str(failure.value)
    assert wrong not in str(failure.value) and wrong not in record(7).error


def test_a_missing_scope_is_named(github):
    github.scopes = "read:user"
    with pytest.raises(PublishError, match="needs 'repo' and the token has 'read:user'"):
        generate_and_publish("a counter", request_id=8)


def test_a_republish_lands_on_top_and_others_commits_are_never_overwritten(github, tmp_path):
    first = generate_and_publish("a counter", request_id=9, app_name="tally")
    second = generate_and_publish("a counter with a reset button", request_id=9)
    assert bare_git(github, "tally", "rev-list", "main").split() == [
        second.commit_sha,
        first.commit_sha,
    ]

    # Someone commits on main; appgen's next publish must not bury it.
    human = tmp_path / "human"
    subprocess.run(
        ["git", "clone", "-q", str(github.bare_path("acme", "tally")), str(human)], check=True
    )
    (human / "NOTES.md").write_text("hand-written\n")
    subprocess.run(["git", "-C", str(human), "add", "NOTES.md"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(human),
            "-c",
            "user.name=h",
            "-c",
            "user.email=h@x",
            "commit",
            "-qm",
            "notes",
        ],
        check=True,
    )
    subprocess.run(["git", "-C", str(human), "push", "-q", "origin", "main"], check=True)
    human_head = bare_git(github, "tally", "rev-parse", "main")
    # It goes to the request's branch and a pull request instead (issue 12).
    third = generate_and_publish("a counter with undo", request_id=9)
    assert bare_git(github, "tally", "rev-parse", "main") == human_head
    assert third.branch == "appgen/request-9"
    assert third.pull_request_url == f"{github.base_url}/acme/tally/pull/1"
    assert bare_git(github, "tally", "rev-parse", "appgen/request-9") == third.commit_sha


# -- GitHub's own failures: 5xx answers, lost responses, no answer at all -------------

QUICK = RetryPolicy(first_delay=0.05, max_delay=0.8, budget=6.0)  # the default, ten times faster
QUICK_WORST_CASE = sum(QUICK.delay(n) for n in range(1, QUICK.attempts))


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(github_host, "RETRY_POLICY", QUICK)
    return QUICK


def direct_host(github, api_url: str) -> GitHubHost:
    return GitHubHost(owner="acme", token=SecretStr(github.token), api_url=api_url)


def test_the_default_retry_policy_is_bounded():
    default = RetryPolicy()
    waits = [default.delay(n) for n in range(1, default.attempts)]
    assert waits == [0.5, 1.0, 2.0, 4.0] and sum(waits) <= default.budget


def test_server_errors_then_success_publish_one_repository(github, quick_retries):
    github.answer_5xx("GET", "user", status=500)
    github.answer_5xx("GET", "repo", status=504)
    github.answer_5xx("POST", "create", status=502)
    github.answer_5xx("POST", "create", status=503)
    outcome = generate_and_publish("a counter", request_id=20)
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.repo_url is not None
    assert outcome.repo_url.endswith("/acme/counter")
    assert list(github.repos) == [("acme", "counter")]
    assert github.api_calls("POST", "/orgs/acme/repos") == 3  # two 5xx, then created
    assert bare_git(github, "counter", "rev-list", "--count", "main") == "1"


@pytest.mark.parametrize("stale_read", [False, True], ids=["fresh-read", "lagging-read"])
def test_a_create_whose_answer_was_lost_reuses_its_repository(github, quick_retries, stale_read):
    """GitHub creates the repository but the answer is a 502: the retried create gets
    422 "name already exists", finds its own marker and reuses it — also when the first
    read of the new repository still says 404."""
    github.lose_next_create(502, stale_read=stale_read)
    outcome = generate_and_publish("a counter", request_id=21)
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.repo_url is not None
    assert outcome.repo_url.endswith("/acme/counter")  # not counter-2
    assert list(github.repos) == [("acme", "counter")]
    assert github.api_calls("POST", "/orgs/acme/repos") == 2
    assert record(21).repo_id == str(github.repos[("acme", "counter")]["id"])
    assert bare_git(github, "counter", "rev-list", "--count", "main") == "1"


def test_a_persistent_503_is_a_clear_error_after_bounded_retries(
    github, github_server, quick_retries, caplog
):
    github.answer_5xx("POST", "create", times=100)
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with pytest.raises(PublishError) as failure:
        direct_host(github, github_server.api_url).ensure_repository("counter", 22)
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert "could not create the repository acme/counter" in message
    assert "answered 503 Service Unavailable; tried 5 times (retried 4 times over" in message
    assert "status page" in message and github.token not in message
    assert github.api_calls("POST", "/orgs/acme/repos") == 5 and not github.repos
    assert QUICK_WORST_CASE <= elapsed < QUICK_WORST_CASE + 5
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 4 and not [r for r in retries if github.token in r]


def test_the_retry_budget_cuts_the_attempts_short(github, github_server, monkeypatch):
    monkeypatch.setattr(github_host, "RETRY_POLICY", RetryPolicy(first_delay=0.2, budget=0.5))
    github.answer_5xx("GET", "user", times=100, status=500)
    with pytest.raises(PublishError, match=r"answered 500 .*; tried 2 times \(retried 1 times"):
        direct_host(github, github_server.api_url).ensure_repository("counter", 23)
    assert github.api_calls("GET", "/users/acme") == 2  # 0.2 s, then 0.4 s more: over 0.5 s


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return cast(int, probe.getsockname()[1])  # nothing listens once the socket is closed


def test_an_unreachable_api_is_a_clear_error_in_bounded_time(github, quick_retries):
    api_url = f"http://127.0.0.1:{closed_port()}/api/v3"
    started = time.monotonic()
    with pytest.raises(PublishError) as failure:
        direct_host(github, api_url).ensure_repository("counter", 24)
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert f"cannot reach the GitHub API at {api_url}: GET /users/acme failed" in message
    assert "ConnectError" in message and "tried 5 times (retried 4 times" in message
    assert "APPGEN_GITHUB_API_URL" in message and github.token not in message
    assert elapsed < QUICK_WORST_CASE + 5


def test_an_api_that_never_answers_times_out_and_is_retried(github, quick_retries, monkeypatch):
    monkeypatch.setattr(github_host, "_TIMEOUT", 0.3)
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        api_url = f"http://127.0.0.1:{silent.getsockname()[1]}/api/v3"
        started = time.monotonic()
        with pytest.raises(PublishError, match=r"ReadTimeout: .*; tried 5 times"):
            direct_host(github, api_url).ensure_repository("counter", 25)
    assert time.monotonic() - started < 5 * 0.3 + QUICK_WORST_CASE + 5


@pytest.fixture
def app_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_publishes_as_a_github_app_with_a_cached_installation_token(
    github, github_server, app_key, monkeypatch
):
    private, public = app_key
    github.app_public_key = public
    monkeypatch.delenv("APPGEN_GITHUB_TOKEN")
    monkeypatch.setenv("APPGEN_GITHUB_APP_ID", github.app_id)
    monkeypatch.setenv("APPGEN_GITHUB_APP_PRIVATE_KEY", private)
    monkeypatch.setenv("APPGEN_GITHUB_INSTALLATION_ID", str(github.installation_id))
    outcome = generate_and_publish("a counter", request_id=10)
    assert outcome.status is RequestStatus.PUBLISHED
    assert github.installation_tokens  # the push used an installation token
    host = GitHubHost(
        owner="acme",
        app_id=github.app_id,
        app_private_key=SecretStr(private),
        installation_id=github.installation_id,
        api_url=github_server.api_url,
        git_url=github_server.git_url,
    )
    minted = len(github.installation_tokens)
    host.ensure_repository("counter", 10)
    host.git_config()
    assert len(github.installation_tokens) == minted + 1  # one token, reused
    github.installation_token_lifetime = 120  # inside the refresh margin: never reused
    host._installation_token = None
    host.git_config()
    host.git_config()
    assert len(github.installation_tokens) == minted + 3


def test_the_token_never_leaks(github, github_server, tmp_path, monkeypatch, appgen_home, caplog):
    from prefect import get_client
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL

    token = github.token
    encoded = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    spy_log = tmp_path / "git-argv.log"
    spy = tmp_path / "spy-bin"
    spy.mkdir()
    (spy / "git").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{spy_log}"\nexec "{shutil.which("git")}" "$@"\n'
    )
    (spy / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}:{os.environ['PATH']}")
    caplog.set_level(logging.DEBUG)

    published = generate_and_publish("a counter", request_id=11)
    github.fail_next_push = True
    with pytest.raises(PublishError) as failed_push:
        generate_and_publish("a counter with undo", request_id=11)
    monkeypatch.setenv("APPGEN_GITHUB_TOKEN", "ghp_wrongTokenValue9876543210")
    with pytest.raises(PublishError) as wrong_token:
        generate_and_publish("a counter", request_id=12)

    def leaks(text: str) -> bool:
        return token in text or encoded in text

    assert not leaks(str(failed_push.value)) and not leaks(str(wrong_token.value))
    assert "ghp_wrongTokenValue9876543210" not in str(wrong_token.value)
    assert spy_log.exists() and not leaks(spy_log.read_text())  # no command line carries it
    assert not leaks(caplog.text)  # no log line, at any level
    runs = [record(rid).flow_run_id for rid in (11, 12)]
    messages = flow_run_logs(runs, expect={"request 11 → failed", "request 12 → failed"})
    assert {"request 11 → failed", "request 12 → failed"} <= set(messages)
    assert not leaks("\n".join(messages))
    with get_client(sync_client=True) as client:
        states = [client.read_flow_run(uuid.UUID(run)).state for run in runs]
    assert None not in states  # each run has a state
    assert not leaks(" ".join(str(s.message) for s in states if s is not None))
    assert published.repo_url is not None
    assert published.repo_url.startswith(github_server.git_url) and not leaks(published.repo_url)
    # Nothing on disk: the database, the workspace, the Prefect DB and result storage.
    places = [appgen_home, tmp_path / "results", Path(PREFECT_HOME.value())]
    if not os.environ.get("APPGEN_TEST_PREFECT_API_URL"):  # a temporary API keeps its DB here
        places.append(Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1]))
    for place in places:
        for path in place.rglob("*") if place.is_dir() else [place]:
            if path.is_file():
                data = path.read_bytes()
                assert token.encode() not in data and encoded.encode() not in data, path


def test_log_records_that_contain_a_secret_are_masked():
    register_secret("s3cr3t-value-for-test")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token is %s", ("s3cr3t-value-for-test",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == f"token is {MASK}"


def test_an_installation_token_is_minted_through_a_502(
    github, github_server, app_key, quick_retries
):
    private, public = app_key
    github.app_public_key = public
    github.answer_5xx("POST", "access_token", status=502)
    host = GitHubHost(
        owner="acme",
        app_id=github.app_id,
        app_private_key=SecretStr(private),
        installation_id=github.installation_id,
        api_url=github_server.api_url,
        git_url=github_server.git_url,
    )
    host.git_config()
    assert len(github.installation_tokens) == 1
    assert github.api_calls("POST", f"/installations/{github.installation_id}/access_tokens") == 2
