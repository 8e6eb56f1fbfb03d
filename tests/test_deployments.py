"""The Prefect server path: `appgen setup`, `prefect deployment run` picked up by a
process worker, artifacts in the UI, and `prefect flow-run retry` resuming a failed
run without generating again."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.conftest import (
    REPO_ROOT,
    agent_runs,
    delete_default_blocks,
    flow_run_logs,
    load_block,
    processes_like,
    unique_sleep,
    wait_until_gone,
)

DEPLOYMENT = "generate-and-publish/local"


@pytest.fixture(scope="module")
def worker_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-home")


@pytest.fixture(scope="module")
def server_env(prefect_server: str, worker_home: Path) -> dict[str, str]:
    """What the worker and the CLI calls see: the real server, the worker's home, and an
    agent that counts its runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPGEN_")}
    return env | {
        "PREFECT_API_URL": prefect_server,
        "APPGEN_HOME": str(worker_home),
        "APPGEN_AGENT": "command",
        "APPGEN_TRUST_AGENT": "true",  # the agent counts its runs outside its app dir
        "APPGEN_AGENT_COMMAND": f'echo "$APPGEN_REQUEST_ID" >> "{worker_home}/agent-runs" && '
        f'"{sys.executable}" -m generator --agent template',
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def setup_done(server_env: dict[str, str]) -> Iterator[list[str]]:
    """`appgen setup`, twice (it is idempotent): the stderr of each."""
    delete_default_blocks(server_env["PREFECT_API_URL"])
    delete_appgen_automations(server_env["PREFECT_API_URL"])
    outputs = [run(server_env, sys.executable, "-m", "appgen", "setup").stderr for _ in range(2)]
    yield outputs
    delete_default_blocks(server_env["PREFECT_API_URL"])
    delete_appgen_automations(server_env["PREFECT_API_URL"])


def delete_appgen_automations(api_url: str) -> None:
    """Remove what `appgen setup` created on the shared server, so that no other
    module's crashed deployment runs are resubmitted."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.automations import appgen_automations

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for automation in appgen_automations():
            for existing in client.read_automations_by_name(automation.name):
                client.delete_automation(existing.id)


@pytest.fixture(scope="module")
def worker(setup_done, server_env: dict[str, str], worker_home: Path) -> Iterator[None]:
    log = open(worker_home / "worker.log", "w")  # noqa: SIM115 - open for the worker's lifetime
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "appgen-local",
            "--type",
            "process",
            "--name",
            f"test-{uuid.uuid4().hex[:6]}",
        ],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    yield
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture
def client(server_env) -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: server_env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as api,
    ):
        yield api


def deployment_run(env: dict[str, str], *args: str, deployment: str = DEPLOYMENT) -> uuid.UUID:
    output = run(env, "prefect", "deployment", "run", deployment, *args).stdout
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found is not None, output
    return uuid.UUID(found.group(1))


def wait_final(client: SyncPrefectClient, flow_run_id: uuid.UUID, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_final():
            return state
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout}s")


def status(env: dict[str, str], request_id: int) -> dict[str, Any]:
    return cast(
        dict[str, Any],
        json.loads(
            run(env, sys.executable, "-m", "appgen", "status", str(request_id), "--json").stdout
        ),
    )


def test_setup_registers_blocks_pools_and_the_deployment(setup_done, client):
    first, second = setup_done
    assert "saved appgen-process-generator/default" in first
    assert "kept appgen-process-generator/default (the same as the settings)" in second
    assert {pool.name for pool in client.read_work_pools()} >= {"appgen-local", "appgen-ecs"}
    deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.work_pool_name == "appgen-local"
    assert [s.active for s in deployment.schedules] == [False]  # shipped inactive


def test_a_deployment_run_publishes_records_and_summarises(worker, server_env, client, worker_home):
    flow_run_id = deployment_run(
        server_env, "-p", "prompt=Build me a counter app", "-p", "request_id=1"
    )
    assert wait_final(client, flow_run_id).is_completed()
    row = status(server_env, 1)
    assert row["status"] == "published" and row["flow_run_id"] == str(flow_run_id)
    assert row["repo_url"] == (worker_home / "repos/counter-app.git").as_uri()
    shown = run(
        server_env,
        "git",
        f"--git-dir={worker_home}/repos/counter-app.git",
        "show",
        "--stat",
        "main",
    ).stdout
    assert "fly.toml" in shown and row["commit_sha"] in shown
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    by_key = {a.key: a for a in artifacts}
    summary = by_key["appgen-request-1"].data
    assert "kept | 9 files" in summary and row["commit_sha"][:12] in summary
    assert "| git_push-" in summary  # per-task timings
    assert row["repo_url"] in by_key["appgen-request-1-repository"].data


def test_a_revise_app_deployment_run_adds_a_commit_to_a_published_request(
    worker, server_env, client, worker_home
):
    published = deployment_run(server_env, "-p", "prompt=a guest book", "-p", "request_id=50")
    assert wait_final(client, published).is_completed()
    revised = deployment_run(
        server_env,
        "-p",
        "request_id=50",
        "-p",
        "prompt=add a moderation queue",
        deployment="revise-app/local",
    )
    assert wait_final(client, revised).is_completed()
    row = status(server_env, 50)
    assert (row["status"], row["revision"]) == ("published", 2)
    assert [(r["revision"], r["status"]) for r in row["revisions"]] == [
        (1, "published"),
        (2, "published"),
    ]
    log = run(
        server_env,
        "git",
        f"--git-dir={worker_home}/repos/guest-book.git",
        "log",
        "--format=%s",
        "main",
    ).stdout.splitlines()
    assert log == ["Revise request 50 (revision 2): guest-book", "Publish request 50: guest-book"]
    assert agent_runs(worker_home / "agent-runs").count("50") == 2


def test_a_failed_revision_retried_with_flow_run_retry_keeps_its_number_and_generation(
    worker, server_env, client, worker_home, tmp_path
):
    published = deployment_run(server_env, "-p", "prompt=a photo wall", "-p", "request_id=51")
    assert wait_final(client, published).is_completed()
    bare = worker_home / "repos/photo-wall.git"
    hooks = tmp_path / "refusing-hooks"
    hooks.mkdir()
    (hooks / "pre-receive").write_text("#!/bin/sh\necho 'refused for the test' >&2\nexit 1\n")
    (hooks / "pre-receive").chmod(0o755)
    run(server_env, "git", "config", "--file", f"{bare}/config", "core.hooksPath", str(hooks))
    revised = deployment_run(
        server_env,
        "-p",
        "request_id=51",
        "-p",
        "prompt=add captions",
        deployment="revise-app/local",
    )
    assert wait_final(client, revised).is_failed()
    assert [r["status"] for r in status(server_env, 51)["revisions"]] == ["published", "failed"]

    run(server_env, "git", "config", "--file", f"{bare}/config", "core.hooksPath", "/dev/null")
    run(server_env, "prefect", "flow-run", "retry", str(revised))
    time.sleep(1)  # the retry reschedules the same flow run
    assert wait_final(client, revised).is_completed()
    row = status(server_env, 51)
    assert [(r["revision"], r["status"]) for r in row["revisions"]] == [
        (1, "published"),
        (2, "published"),
    ]
    assert agent_runs(worker_home / "agent-runs").count("51") == 2  # once per revision


def test_a_failed_run_retried_with_flow_run_retry_does_not_generate_again(
    worker, server_env, client, worker_home, tmp_path
):
    blocker = tmp_path / "not-yet-a-directory"
    blocker.write_text("")
    host = saved_host(server_env, blocker / "repos")
    flow_run_id = deployment_run(
        server_env, "-p", "prompt=a recipe book", "-p", "request_id=2", "-p", f"git_host={host}"
    )
    assert wait_final(client, flow_run_id).is_failed()
    assert status(server_env, 2)["status"] == "failed"

    blocker.unlink()
    blocker.mkdir()
    run(server_env, "prefect", "flow-run", "retry", str(flow_run_id))
    time.sleep(1)  # the retry reschedules the same flow run
    assert wait_final(client, flow_run_id).is_completed()
    assert status(server_env, 2)["status"] == "published"
    assert (blocker / "repos/recipe-book.git").is_dir()
    assert agent_runs(worker_home / "agent-runs").count("2") == 1


def test_a_retry_of_a_run_started_without_request_id_continues_the_same_request(
    worker, server_env, client, worker_home, tmp_path
):
    blocker = tmp_path / "not-yet-a-directory"
    blocker.write_text("")
    host = saved_host(server_env, blocker / "repos")
    prompt = f"a tide table {uuid.uuid4().hex[:6]}"
    flow_run_id = deployment_run(
        server_env, "-p", f"prompt={prompt}", "-p", f"git_host={host}"
    )  # the README's own example: no request_id
    assert wait_final(client, flow_run_id).is_failed()
    rows = [r for r in all_rows(server_env) if r["prompt"] == prompt]
    assert [r["status"] for r in rows] == ["failed"]

    blocker.unlink()
    blocker.mkdir()
    run(server_env, "prefect", "flow-run", "retry", str(flow_run_id))
    time.sleep(1)  # the retry reschedules the same flow run
    assert wait_final(client, flow_run_id).is_completed()
    rows = [r for r in all_rows(server_env) if r["prompt"] == prompt]
    assert [(r["request_id"], r["status"]) for r in rows] == [(rows[0]["request_id"], "published")]
    assert rows[0]["repo_url"].endswith(f"/{rows[0]['app_name']}.git")
    assert not rows[0]["app_name"].endswith("-2")
    assert agent_runs(worker_home / "agent-runs").count(str(rows[0]["request_id"])) == 1


def test_cancelling_a_run_from_the_api_stops_the_generator_and_records_it(
    worker, server_env, client, worker_home
):
    sleep = unique_sleep()
    env_override = json.dumps({"APPGEN_AGENT_COMMAND": f"echo started > started; {sleep}"})
    flow_run_id = deployment_run(
        server_env,
        "-p",
        "prompt=a slow app",
        "-p",
        "request_id=9",
        "--job-variable",
        f"env={env_override}",
    )
    deadline = time.monotonic() + 120
    while not list((worker_home / "workspace/9").glob("g-*/app/started")):
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.3)
    run(server_env, "prefect", "flow-run", "cancel", str(flow_run_id))
    assert wait_final(client, flow_run_id).is_cancelled()
    assert wait_until_gone(sleep, timeout=60) == []
    record = status(server_env, 9)
    assert (record["status"], record["claimed_by"]) == ("cancelled", None)
    settings_env = {"APPGEN_HOME": str(worker_home)}
    held = run(
        server_env | settings_env,
        sys.executable,
        "-c",
        "from blocks import defaults; from core.settings import Settings; "
        "print(defaults.database(Settings()).held_slots())",
    ).stdout.strip()
    assert held == "[]"


def all_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    return cast(
        list[dict[str, Any]],
        json.loads(run(env, sys.executable, "-m", "appgen", "status", "--json").stdout),
    )


# -- saved blocks are the configuration ----------------------------------------------


def saved_host(env: dict[str, str], root: Path) -> str:
    """A saved local Git host block on ``root``, by name: a run given it as its
    ``git_host`` parameter publishes there, whatever the worker's settings say."""
    from blocks.git_hosts import LocalGitHost

    name = saved_name("appgen-local-git-host")
    with prefect_api(env):
        save_block(LocalGitHost(root=root), name)
    return name


def saved_name(kind: str) -> str:
    return f"{kind}/t-{uuid.uuid4().hex[:8]}"


def save_block(block, name: str) -> None:
    block.save(name.split("/", 1)[1], overwrite=True)


def test_a_saved_github_host_publishes_with_no_token_in_the_workers_environment(
    worker, server_env, client, github_server, tmp_path
):
    from blocks.github_host import GitHubHost

    state = github_server.reset(tmp_path / "github-repos")
    state.add_account("acme", "Organization")
    assert not any(name.startswith("APPGEN_GITHUB") for name in server_env)
    host = saved_name("appgen-github-host")
    with prefect_api(server_env):
        save_block(
            GitHubHost(
                owner="acme",
                token=state.token,
                api_url=github_server.api_url,
                git_url=github_server.git_url,
            ),
            host,
        )
    flow_run_id = deployment_run(
        server_env, "-p", "prompt=A counter app", "-p", "request_id=21", "-p", f"git_host={host}"
    )
    assert wait_final(client, flow_run_id).is_completed()
    row = status(server_env, 21)
    assert row["status"] == "published"
    assert row["repo_url"].startswith(f"{github_server.git_url}/acme/")
    main = run(
        server_env,
        "git",
        f"--git-dir={state.bare_path('acme', row['app_name'])}",
        "rev-parse",
        "main",
    )
    assert main.stdout.strip() == row["commit_sha"]
    # The token the block holds reaches no log line, artifact or parameter.
    configured = f"git_host: GitHubHost from the saved block {host}"
    logs = flow_run_logs([str(flow_run_id)], expect={configured})
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    seen = "\n".join(logs) + "".join(str(a.data) for a in artifacts)
    seen += json.dumps(client.read_flow_run(flow_run_id).parameters)
    assert configured in seen
    assert state.token not in seen + json.dumps(row)


def test_two_deployments_of_the_flow_publish_to_their_own_saved_hosts(
    worker, server_env, client, tmp_path
):
    local = client.read_deployment_by_name(DEPLOYMENT)
    runs = {}
    for team in ("blue", "green"):
        host = saved_host(server_env, tmp_path / team)
        deployment_id = client.create_deployment(
            flow_id=local.flow_id,
            name=f"{team}-{uuid.uuid4().hex[:6]}",
            entrypoint=local.entrypoint,
            path=local.path,
            pull_steps=local.pull_steps,
            work_pool_name=local.work_pool_name,
            parameters={"git_host": host},
        )
        runs[team] = client.create_flow_run_from_deployment(
            deployment_id, parameters={"prompt": f"A {team} counter app", "app_name": team}
        ).id
    for team, flow_run_id in runs.items():
        assert wait_final(client, flow_run_id).is_completed(), team
    assert [p.name for p in (tmp_path / "blue").iterdir()] == ["blue.git"]
    assert [p.name for p in (tmp_path / "green").iterdir()] == ["green.git"]


def test_setup_keeps_an_edited_default_block_until_overwrite(server_env, tmp_path):
    from blocks.git_hosts import LocalGitHost

    env = server_env | {"APPGEN_HOME": str(tmp_path / "home")}
    setup = (sys.executable, "-m", "appgen", "setup", "--no-deploy")
    delete_default_blocks(server_env["PREFECT_API_URL"])  # the module's, from other settings
    try:
        first = run(env, *setup)
        assert "appgen-local-git-host/default" in first.stderr
        edited = tmp_path / "edited-root"
        with prefect_api(server_env):
            host = load_block(LocalGitHost, "default")
            host.root = edited
            host.save("default", overwrite=True)
        again = run(env, *setup)
        assert "kept appgen-local-git-host/default: it differs from the settings" in again.stderr
        assert "kept appgen-database/default (the same as the settings)" in again.stderr
        with prefect_api(server_env):
            assert load_block(LocalGitHost, "default").root == edited
        configured = json.loads(run(env, sys.executable, "-m", "appgen", "config", "--json").stdout)
        (git_host,) = [part for part in configured["parts"] if part["part"] == "git_host"]
        assert git_host["block"] == "appgen-local-git-host/default"
        assert git_host["fields"]["root"] == str(edited)
        replaced = run(env, *setup, "--overwrite")
        assert "replaced appgen-local-git-host/default" in replaced.stderr
        with prefect_api(server_env):
            assert load_block(LocalGitHost, "default").root == tmp_path / "home/repos"
    finally:
        delete_default_blocks(server_env["PREFECT_API_URL"])


def test_block_documents_never_show_a_secret_in_the_apis_answers(server_env):
    import httpx

    from blocks.database import Database
    from blocks.github_host import GitHubHost

    token, password = "ghp_blockSecretToken0123456789", "db-password-0123"
    host, database = saved_name("appgen-github-host"), saved_name("appgen-database")
    with prefect_api(server_env):
        save_block(GitHubHost(owner="acme", token=token), host)
        save_block(Database(url=f"postgresql+psycopg://appgen:{password}@db/appgen"), database)
    api = server_env["PREFECT_API_URL"]
    answers = [httpx.post(f"{api}/block_documents/filter", json={}).text]
    for name in (host, database):
        slug, document = name.split("/")
        answers.append(
            httpx.get(f"{api}/block_types/slug/{slug}/block_documents/name/{document}").text
        )
    assert all(answer.startswith(("[", "{")) for answer in answers)
    assert document in answers[-1]
    for answer in answers:
        assert token not in answer and password not in answer


@contextlib.contextmanager
def prefect_api(env: dict[str, str]) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        yield


# -- lost workers ------------------------------------------------------------------------


def test_setup_creates_the_automations_for_lost_workers(setup_done, client):
    """Prefect itself notices a lost worker: a deployment run whose heartbeats stop is
    marked Crashed, and a crashed one is scheduled again (setup is idempotent)."""
    crash, resubmit = (
        client.read_automations_by_name(name)
        for name in ("appgen: crash unresponsive runs", "appgen: resubmit crashed runs")
    )
    assert len(crash) == 1 and len(resubmit) == 1  # setup ran twice
    assert crash[0].trigger.posture == "Proactive"
    assert crash[0].trigger.within.total_seconds() == 120
    assert crash[0].actions[0].state == "CRASHED"
    assert resubmit[0].trigger.expect == {"prefect.flow-run.Crashed"}
    assert resubmit[0].actions[0].state == "SCHEDULED"
    first, second = setup_done
    assert "created automation 'appgen: resubmit crashed runs'" in first
    assert "updated automation 'appgen: resubmit crashed runs'" in second


def flow_run_process(sleep: str) -> int:
    """The flow-run process whose agent runs ``sleep``: the agent's shell's
    generator's parent."""
    [agent] = processes_like(sleep)
    shell = parent_of(agent)
    generator = parent_of(shell)
    return parent_of(generator)


def parent_of(pid: int) -> int:
    return int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[1])


def wait_for_state(client: SyncPrefectClient, flow_run_id: uuid.UUID, kinds: set[str], timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.type.value in kinds:
            return state
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not reach {kinds} in {timeout}s")


@pytest.mark.parametrize(("resubmits", "outcome"), [("2", "published"), ("0", "failed")])
def test_a_run_whose_process_died_is_resubmitted_and_resumes_its_request(
    resubmits, outcome, worker, server_env, client, worker_home, tmp_path
):
    """The flow-run process is SIGKILLed mid-generation (OOM, a lost container): its
    worker reports it Crashed, appgen's automation schedules the same run again, and
    it finishes the same request, or, past APPGEN_CRASH_RESUBMITS, fails saying why."""
    request_id = 30 + int(resubmits)
    sleep = unique_sleep()
    first_time = tmp_path / "first-time"
    agent = (
        f'echo "$APPGEN_REQUEST_ID" >> "{tmp_path}/agent-runs"; '
        f'if [ ! -e "{first_time}" ]; then touch "{first_time}"; {sleep}; fi; '
        f'"{sys.executable}" -m generator --agent template'
    )
    env = {
        "APPGEN_AGENT_COMMAND": agent,
        "APPGEN_CRASH_RESUBMITS": resubmits,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }
    flow_run_id = deployment_run(
        server_env,
        "-p",
        f"prompt=a lost app {resubmits}",
        "-p",
        f"request_id={request_id}",
        "--job-variable",
        f"env={json.dumps(env)}",
    )
    deadline = time.monotonic() + 120
    while not processes_like(sleep):
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.3)
    os.kill(flow_run_process(sleep), signal.SIGKILL)

    final = wait_for_state(client, flow_run_id, {"COMPLETED", "FAILED"})
    states = [s.name for s in client.read_flow_run_states(flow_run_id)]
    assert "Crashed" in states and "Resubmitted" in states, states
    assert wait_until_gone(sleep) == []
    row = status(server_env, request_id)
    assert row["status"] == outcome
    assert agent_runs(tmp_path / "agent-runs").count(str(request_id)) == (
        2 if outcome == "published" else 1
    )
    if outcome == "published":
        assert final.is_completed()
    else:
        assert "crashed 1 times" in row["error"] and "APPGEN_CRASH_RESUBMITS" in row["error"]
    assert row["claimed_by"] is None


def test_a_run_whose_heartbeats_stop_is_crashed_by_prefect_and_resumed(
    worker, server_env, client, tmp_path
):
    """A host that is lost or cut off reports nothing: its frozen flow-run process
    (SIGSTOP) stops sending heartbeats, Prefect's automation marks the run Crashed and
    the other one schedules it again; a live worker takes over the frozen holder's
    claim and slot when their leases expire and publishes the request."""
    request_id = 40
    sleep = unique_sleep()
    first_time = tmp_path / "first-time"
    agent = (
        f'echo "$APPGEN_REQUEST_ID" >> "{tmp_path}/agent-runs"; '
        f'if [ ! -e "{first_time}" ]; then touch "{first_time}"; {sleep}; fi; '
        f'"{sys.executable}" -m generator --agent template'
    )
    env = {
        "APPGEN_AGENT_COMMAND": agent,
        "APPGEN_LEASE_SECONDS": "10",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }
    flow_run_id = deployment_run(
        server_env,
        "-p",
        "prompt=a frozen app",
        "-p",
        f"request_id={request_id}",
        "--job-variable",
        f"env={json.dumps(env)}",
    )
    deadline = time.monotonic() + 120
    while not processes_like(sleep):
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.3)
    frozen = flow_run_process(sleep)
    os.kill(frozen, signal.SIGSTOP)
    try:
        final = wait_for_state(client, flow_run_id, {"COMPLETED", "FAILED"}, timeout=480)
    finally:
        os.kill(frozen, signal.SIGKILL)  # the lost host never comes back
    assert final.is_completed(), final.message
    states = client.read_flow_run_states(flow_run_id)
    [crash] = [s for s in states if s.name == "Crashed"]
    assert "no heartbeat" in (crash.message or "")
    assert "Resubmitted" in [s.name for s in states]
    assert wait_until_gone(sleep) == []
    row = status(server_env, request_id)
    assert row["status"] == "published" and row["claimed_by"] is None
    assert agent_runs(tmp_path / "agent-runs").count(str(request_id)) == 2
    # The frozen attempt's exit, reported late by its worker, does not undo the publish.
    wait_until_gone_pid(frozen)
    time.sleep(2)
    assert client.read_flow_run(flow_run_id).state.is_completed()


def wait_until_gone_pid(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} was not reaped"
        time.sleep(0.2)
