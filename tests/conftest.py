"""Shared fixtures: one Prefect test API per session, a fresh APPGEN_HOME per test."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator, Set
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

# Prefect reads these when it is first imported: keep tests off ~/.prefect and quiet.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="appgen-test-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# With a Prefect server for the tests (.ci/run starts one on PostgreSQL), every flow
# of the session talks to it, flows started in threads included.
if os.environ.get("APPGEN_TEST_PREFECT_API_URL"):
    os.environ["PREFECT_API_URL"] = os.environ["APPGEN_TEST_PREFECT_API_URL"]

import pytest

from core.models import GenerationSpec

if TYPE_CHECKING:
    from prefect.blocks.core import Block

BlockT = TypeVar("BlockT", bound="Block")

REPO_ROOT = Path(__file__).resolve().parent.parent
MAKE_WORKSPACE = REPO_ROOT.parent / "shared" / "bench" / "make_workspace.py"
# A test that needs one of these (a Prefect API, the appgen command, the Docker
# engine, a Git host, S3 or ECS stand-in) starts or talks to processes of its own:
# it is in the slow tier, and `pytest -m "not slow"` leaves it out.
SERVICE_FIXTURES = frozenset(
    {
        "prefect_api",
        "prefect_server",
        "appgen",
        "docker_engine",
        "github_server",
        "s3_server",
        "moto_server",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """The Prefect API of the flow tests: the PostgreSQL-backed server .ci/run starts
    (APPGEN_TEST_PREFECT_API_URL; many flows at once need it), else a temporary
    local API for the whole session (it takes seconds to start)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    if url := os.environ.get("APPGEN_TEST_PREFECT_API_URL"):
        from tests.prefect_server import wait_healthy

        wait_healthy(url)
        yield url
        return
    with prefect_test_harness():
        yield PREFECT_API_URL.value()


@pytest.fixture(autouse=True)
def appgen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own APPGEN_HOME and no APPGEN_* settings from outside."""
    for name in list(os.environ):
        if name.startswith("APPGEN_") and not name.startswith("APPGEN_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("APPGEN_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    return home


@pytest.fixture
def flow_env(prefect_api: str, tmp_path: Path) -> Iterator[None]:
    """Flow runs against the session API, with results stored under this test."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    # The heartbeat thread costs ~1 s per synchronous flow run at shutdown.
    with temporary_settings(
        {
            PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "results",
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        }
    ):
        yield


@pytest.fixture
def counting_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `command` agent that records each run in a file, then writes the template app.
    It writes outside its app dir, which the sandbox forbids: a trusted test instrument."""
    counter = tmp_path / "agent-runs"
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        f'echo "$APPGEN_REQUEST_ID" >> "{counter}" && "{sys.executable}" -m generator '
        "--agent template",
    )
    return counter


@pytest.fixture
def appgen(prefect_api: str):
    """Runs the `appgen` command in a process of its own, against the tests' Prefect API."""
    import subprocess

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appgen", *args],
            env=os.environ | {"PREFECT_API_URL": prefect_api} | env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


def generation_of(workspace: Path, request_id: int) -> Path:
    """The directory of a request's current generation ({workspace}/{id}/g-…)."""
    generations = sorted((workspace / str(request_id)).glob("g-*"))
    assert len(generations) == 1, f"expected one generation of request {request_id}: {generations}"
    return generations[0]


def require_sandbox() -> None:
    """The bubblewrap sandbox: skip without it, except in CI, where it must work."""
    from blocks.sandbox import unavailable_reason

    if (reason := unavailable_reason()) is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the bubblewrap sandbox: {reason}")
        pytest.skip(reason)


def unique_sleep() -> str:
    """A `sleep` command line no other process has, to find it among all processes."""
    import random

    return f"sleep {random.randint(100000, 999999)}.5"


def processes_like(command: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line is ``command``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline == command and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until_gone(command: str, timeout: float = 10.0) -> list[int]:
    """Wait (bounded) for every process running ``command`` to end; return those left."""
    import time

    deadline = time.monotonic() + timeout
    while (left := processes_like(command)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def agent_runs(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def tree_digest(root: Path) -> str:
    """Names, modes, link targets and contents of a tree: equal digests, equal trees."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)}\0{info.st_mode}\0".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def seed_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed-shaped generated app (../shared/bench/make_workspace.py --scale 0.05)."""
    import subprocess

    out = tmp_path_factory.mktemp("seed") / "counter-app"
    subprocess.run(
        [sys.executable, str(MAKE_WORKSPACE), str(out), "--scale", "0.05"],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def docker_engine():
    """The machine's Docker engine. Without one the Docker tests skip, except in CI,
    where they must run."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure to reach the engine
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine and none answered: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def generator_image(docker_engine) -> str:
    """The generator image, built from a debootstrapped base when it is missing."""
    from deployments.generator_image import build_generator_image

    build = build_generator_image(docker_engine, tag="appgen-generator:test", log=lambda _: None)
    print(f"\ngenerator image {build.tag}: built={build.built} in {build.seconds:.1f}s")
    return build.tag


@pytest.fixture
def docker_settings(generator_image: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """APPGEN_GENERATOR=docker with the test image, offline containers."""
    monkeypatch.setenv("APPGEN_GENERATOR", "docker")
    monkeypatch.setenv("APPGEN_DOCKER_IMAGE", generator_image)
    monkeypatch.setenv("APPGEN_DOCKER_NETWORK_MODE", "none")
    return generator_image


@pytest.fixture(scope="session")
def github_server(tmp_path_factory: pytest.TempPathFactory):
    """The GitHub stand-in (REST API + git smart HTTP) on 127.0.0.1, for the session."""
    from tests.github_standin import GitHubStandIn

    with GitHubStandIn(tmp_path_factory.mktemp("github")) as server:
        yield server


@pytest.fixture
def github(github_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A clean GitHub account state, and APPGEN_GIT_HOST=github pointed at it."""
    state = github_server.reset(tmp_path / "github-repos")
    state.add_account("acme", "Organization")
    state.add_account("octocat", "User")
    monkeypatch.setenv("APPGEN_GIT_HOST", "github")
    monkeypatch.setenv("APPGEN_GITHUB_OWNER", "acme")
    monkeypatch.setenv("APPGEN_GITHUB_TOKEN", state.token)
    monkeypatch.setenv("APPGEN_GITHUB_API_URL", github_server.api_url)
    monkeypatch.setenv("APPGEN_GITHUB_GIT_URL", github_server.git_url)
    return state


def delete_default_blocks(api_url: str) -> None:
    """Remove the ``appgen-*/default`` blocks `appgen setup` saved on the shared test
    server: every later run there would otherwise use them instead of its settings."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for document in client.read_block_documents():
            slug = document.block_type.slug if document.block_type else ""
            if document.name == "default" and slug.startswith("appgen-"):
                client.delete_block_document(document.id)


def load_block(kind: type[BlockT], name: str) -> BlockT:
    """``kind.load(name)``, a saved block as ``kind``: Prefect's sync form, since no
    event loop runs in these tests (its type is the sync or the async form)."""
    block = kind.load(name)
    assert isinstance(block, kind)
    return block


@pytest.fixture
def default_blocks(prefect_api: str) -> Iterator[None]:
    """For a test that saves appgen-*/default blocks: none before, none left after."""
    delete_default_blocks(prefect_api)
    yield
    delete_default_blocks(prefect_api)


def flow_run_logs(
    flow_run_ids: list[str], *, expect: Set[str] = frozenset(), timeout: float = 15.0
) -> list[str]:
    """Messages the Prefect API holds for these flow runs. Records are shipped in
    batches, so wait until each ``expect``-ed text is in some message (or, with none
    expected, until there is at least one message)."""
    import time
    import uuid

    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    ids = [uuid.UUID(str(i)) for i in flow_run_ids]
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
            messages = [log.message for log in logs]
            done = (
                all(any(text in message for message in messages) for text in expect)
                if expect
                else bool(messages)
            )
            if done or time.monotonic() > deadline:
                return messages
            time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL database for tests (APPGEN_TEST_POSTGRES_URL; .ci/run starts one).
    Without one the PostgreSQL tests skip, except under CI, where they fail."""
    url = os.environ.get("APPGEN_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI needs APPGEN_TEST_POSTGRES_URL (a PostgreSQL server)")
        pytest.skip("no PostgreSQL server: set APPGEN_TEST_POSTGRES_URL")
    return url


def reset_postgres(url: str) -> None:
    """Drop what an earlier test left, so each test starts from an empty database."""
    import sqlalchemy as sa

    from core.database import metadata

    tables = ", ".join([*metadata.tables, "alembic_version"])
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {tables}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/appgen.db"
    url = cast(str, request.getfixturevalue("postgres_url"))
    reset_postgres(url)
    return url


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1: the one .ci/run started
    (APPGEN_TEST_PREFECT_API_URL), or one of this session's own."""
    from tests.prefect_server import PrefectServer, wait_healthy

    if url := os.environ.get("APPGEN_TEST_PREFECT_API_URL"):
        wait_healthy(url)
        yield url
        return
    with PrefectServer(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server.api_url


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    from tests.aws_standins import SeaweedS3

    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server():
    from tests.aws_standins import MotoAWS

    with MotoAWS() as server:
        yield server


@pytest.fixture
def aws(s3_server, moto_server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """AWS mode against the stand-ins: a bucket, a cluster, a Fargate task definition
    that logs to CloudWatch, a default-VPC subnet, and a fake ECS agent."""
    import uuid

    from tests.aws_standins import ACCESS_KEY, REGION, SECRET_KEY, FakeEcsAgent

    for name, value in (
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_DEFAULT_REGION", REGION),
    ):
        monkeypatch.setenv(name, value)
    suffix = uuid.uuid4().hex[:8]
    bucket, cluster, group = f"appgen-{suffix}", f"appgen-{suffix}", f"/appgen/{suffix}"
    ec2, ecs, logs = (moto_server.client(s) for s in ("ec2", "ecs", "logs"))
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ][0]["SubnetId"]
    group_id = ec2.create_security_group(
        GroupName=f"appgen-{suffix}", Description="generator tasks"
    )["GroupId"]
    ecs.create_cluster(clusterName=cluster)
    logs.create_log_group(logGroupName=group)
    ecs.register_task_definition(
        family=f"generator-{suffix}",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="2048",
        containerDefinitions=[
            {
                "name": "generator",
                "image": "appgen-generator:latest",
                "memory": 2048,
                "essential": True,
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": group,
                        "awslogs-region": REGION,
                        "awslogs-stream-prefix": "appgen",
                    },
                },
            }
        ],
    )
    settings = {
        "APPGEN_GENERATOR": "ecs",
        "APPGEN_ECS_CLUSTER": cluster,
        "APPGEN_ECS_TASK_DEFINITION": f"generator-{suffix}",
        "APPGEN_ECS_SUBNETS": f'["{subnet}"]',
        "APPGEN_ECS_SECURITY_GROUPS": f'["{group_id}"]',
        "APPGEN_AWS_ENDPOINT_URL": moto_server.endpoint,
        "APPGEN_S3_BUCKET": bucket,
        "APPGEN_S3_ENDPOINT_URL": s3_server.endpoint,
        "APPGEN_ECS_POLL_SECONDS": "0.3",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    from blocks import defaults
    from core.settings import Settings

    defaults.s3_artifact_store(Settings()).ensure_bucket()
    with FakeEcsAgent(moto_server, cluster, group, "appgen", "generator", REPO_ROOT) as agent:
        yield agent


def command_spec(request_id: int, command: str) -> GenerationSpec:
    """A generation by the `command` agent, as the flow would ask for it."""
    from datetime import UTC, datetime

    return GenerationSpec(
        request_id=request_id,
        registered_at=datetime.now(UTC),
        prompt="an app",
        agent="command",
        agent_command=command,
    )


@pytest.fixture
def run_logger(caplog: pytest.LogCaptureFixture):
    """The logger a generator block is given, captured by caplog."""
    import logging

    caplog.set_level(logging.INFO, logger="test.generator")
    return logging.LoggerAdapter(logging.getLogger("test.generator"), {})


def latest_artifact(key: str) -> str:
    """The data of the newest artifact with ``key`` (a run summary, a link)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(artifact.data)


@pytest.fixture(params=["sandbox", "docker"])
def confined_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Process mode in the bubblewrap sandbox, or Docker mode, with a `command` agent."""
    if request.param == "sandbox":
        require_sandbox()
        monkeypatch.setenv("APPGEN_GENERATOR", "process")
    else:
        request.getfixturevalue("docker_settings")
    monkeypatch.setenv("APPGEN_AGENT", "command")
    return cast(str, request.param)
