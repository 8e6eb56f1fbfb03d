"""blocks.deploy_check, the build-and-smoke check on the real Docker engine:
rendered Dockerfiles build on the offline base images (tests/deploy_images.py) and
the apps answer HTTP on the internal port fly.toml names. There is no npm registry
here: the Node apps have no dependencies (the client/server one vendors its helper);
the pypi-* apps install theirs from PyPI, the builds' only network."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect_docker import DockerHost

from blocks.deploy_check import DockerDeployCheck
from core.errors import PublishError
from core.launch.gate import refusal
from core.launch.render import render_into
from core.models import DeployFiles, StagedTree

APPS = Path(__file__).resolve().parent / "apps"
# Generous: two shared cores, other developers building at the same time.
BUILD_TIMEOUT = 600.0
ANSWER_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def deploy_base(docker_engine):
    """node:18-slim, python:3.11-slim and caddy:2 from a debootstrapped bookworm,
    python:3.13-slim from trixie."""
    from tests.deploy_images import ensure_deploy_base

    try:
        return ensure_deploy_base(docker_engine)
    except Exception as exc:  # no debootstrap, not root, no mirror
        pytest.skip(f"cannot build the offline base images: {exc}")


def staged_app(tmp_path: Path, name: str) -> tuple[StagedTree, DeployFiles]:
    app = tmp_path / name
    shutil.copytree(APPS / name, app, symlinks=True)
    deploy = render_into(app, name, "iad")
    staged = StagedTree(path=app, kept_files=0, kept_links=0, kept_bytes=0, excluded=[])
    return staged, deploy


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["node-http", "static", "python-stdlib", "client-server-vendored", "procfile-steps"]
)
def test_rendered_apps_build_and_answer_on_their_internal_port(
    name, tmp_path, docker_engine, deploy_base
):
    staged, deploy = staged_app(tmp_path, name)
    started = time.monotonic()
    check = DockerDeployCheck(timeout=BUILD_TIMEOUT, answer_timeout=ANSWER_TIMEOUT).verify(
        staged, deploy, "smoke"
    )
    print(f"\n{name}: {check.verified} in {time.monotonic() - started:.1f}s ({check.detail})")
    assert check.verified == "served", "\n".join([check.detail, *check.log_tail])
    assert check.detail.startswith("HTTP 200")
    leftovers = docker_engine.containers.list(all=True, filters={"label": "org.appgen.verify"})
    assert leftovers == []
    assert not docker_engine.images.list(filters={"label": "org.appgen.verify=true"})


PYPI_APPS = sorted(p.name for p in APPS.iterdir() if p.name.startswith("pypi-"))
HEALTH_ROUTES = {"pypi-fastapi": "/healthz"}
# The builds wait on PyPI more than on the cores: a few at once.
CONCURRENT_BUILDS = 3


@dataclass(frozen=True)
class Published:
    outcome: dict[str, Any]
    row: dict[str, Any]
    clone: Path
    stderr: str


@pytest.fixture(scope="module")
def published_pypi_apps(
    prefect_api, deploy_base, tmp_path_factory
) -> dict[str, Published | BaseException]:
    """Each pypi-* app written by a `command` agent and published by `appgen publish`
    with APPGEN_VERIFY=smoke (a home and a bare repository of its own), then cloned."""
    work = tmp_path_factory.mktemp("pypi")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPGEN_")}

    def publish(name: str) -> Published:
        home = work / name / "home"
        env = clean | {key: os.environ[key] for key in os.environ if key.startswith("APPGEN_TEST_")}
        env |= {
            "PREFECT_API_URL": prefect_api,
            "APPGEN_HOME": str(home),
            "APPGEN_AGENT": "command",
            "APPGEN_TRUST_AGENT": "true",
            "APPGEN_AGENT_COMMAND": f"cp -a '{APPS / name}/.' .",
            "APPGEN_VERIFY": "smoke",
            "APPGEN_VERIFY_TIMEOUT": str(BUILD_TIMEOUT),
            "APPGEN_VERIFY_ANSWER_SECONDS": str(ANSWER_TIMEOUT),
        }
        command = [sys.executable, "-m", "appgen", "publish", "--prompt", f"the {name} app"]
        result = subprocess.run(
            [*command, "--app-name", name, "--json"],
            env=env,
            cwd=work / name,
            capture_output=True,
            text=True,
            timeout=2 * BUILD_TIMEOUT,
        )
        assert result.stdout.strip(), result.stderr
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        status = subprocess.run(
            [sys.executable, "-m", "appgen", "status", str(outcome["request_id"]), "--json"],
            env=env,
            cwd=work / name,
            capture_output=True,
            text=True,
            check=True,
        )
        clone = work / name / "clone"
        if outcome.get("repo_url"):
            subprocess.run(["git", "clone", "-q", outcome["repo_url"], str(clone)], check=True)
        return Published(outcome, json.loads(status.stdout), clone, result.stderr)

    def attempt(name: str) -> Published | BaseException:
        try:
            return publish(name)
        except Exception as exc:  # reported by the app's own test
            return exc

    for name in PYPI_APPS:
        (work / name).mkdir()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_BUILDS) as pool:
        return dict(zip(PYPI_APPS, pool.map(attempt, PYPI_APPS), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", PYPI_APPS)
def test_python_apps_with_real_dependencies_are_published_built_and_answer_2xx(
    name, published_pypi_apps
):
    """What lint cannot see: the published Dockerfile installs real packages from PyPI
    (the build's only network) with pip, uv or Poetry, runs the app's one-off steps
    (Django's migrate and collectstatic, Flask's init-db, Alembic's upgrade) and
    serves. The stand-in bases are Debian's Pythons tagged with the official names
    (tests/deploy_images.py): bookworm's 3.11 and trixie's 3.13, which each app names
    in .python-version."""
    published = published_pypi_apps[name]
    if isinstance(published, BaseException):
        raise published
    outcome, row = published.outcome, published.row
    print(f"\n{name}: {outcome.get('verified')} ({row.get('verify_detail')})")
    assert outcome["status"] == "published", published.stderr
    assert (outcome["verified"], row["verified"]) == ("served", "served"), published.stderr
    assert row["verify_detail"].startswith("HTTP 2"), row["verify_detail"]
    # Asked where Fly's check asks: the health route the app defines, else /.
    assert f" at {HEALTH_ROUTES.get(name, '/')} on port " in row["verify_detail"]
    assert outcome["verify_detail"] == row["verify_detail"]
    # What was built and answered is what the repository holds.
    assert (published.clone / "Dockerfile").is_file() and (published.clone / "fly.toml").is_file()
    app_files = {p.relative_to(APPS / name) for p in (APPS / name).rglob("*") if p.is_file()}
    assert app_files <= {p.relative_to(published.clone) for p in published.clone.rglob("*")}


@pytest.mark.slow
def test_an_app_that_crashes_on_start_fails_the_check_with_its_log(
    tmp_path, docker_engine, deploy_base
):
    staged, deploy = staged_app(tmp_path, "node-http")
    (staged.path / "index.js").write_text("throw new Error('boom at start');\n")
    check = DockerDeployCheck(timeout=BUILD_TIMEOUT, answer_timeout=60).verify(
        staged, deploy, "smoke"
    )
    assert check.verified == "failed"
    assert "exited" in check.detail
    assert any("boom at start" in line for line in check.log_tail)
    reason = refusal(deploy, check, require_deployable=False)
    assert reason is not None and "boom at start" in reason


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "verified"), [(500, "failed"), (503, "failed"), (404, "served")]
)
def test_an_app_that_answers_5xx_fails_the_check_and_4xx_serves(
    status, verified, tmp_path, docker_engine, deploy_base
):
    staged, deploy = staged_app(tmp_path, "python-stdlib")
    server = staged.path / "server.py"
    server.write_text(
        server.read_text()
        .replace("self.send_response(200)", f"self.send_response({status})")
        .replace(
            "def do_GET(self):",
            "def do_GET(self):\n        print('no such table: post', flush=True)",
        )
    )
    check = DockerDeployCheck(timeout=BUILD_TIMEOUT, answer_timeout=ANSWER_TIMEOUT).verify(
        staged, deploy, "smoke"
    )
    assert check.verified == verified, check.detail
    assert check.detail.startswith(f"HTTP {status}")
    if verified == "failed":
        assert "the app fails" in check.detail
        assert any("no such table: post" in line for line in check.log_tail)
        reason = refusal(deploy, check, require_deployable=False)
        assert reason is not None and f"HTTP {status} at /" in reason


def test_nothing_is_checked_when_off_or_not_deployable(tmp_path):
    staged, deploy = staged_app(tmp_path, "unknown")
    # Neither needs an engine: a host nothing listens on is never asked.
    check = DockerDeployCheck(DockerHost(base_url="tcp://127.0.0.1:9"), timeout=1, answer_timeout=1)
    assert check.verify(staged, deploy, "off").verified is None
    checked = check.verify(staged, deploy, "smoke")
    assert checked.verified is None and "not deployable" in checked.detail


def test_an_engine_that_does_not_answer_is_a_clear_error(tmp_path):
    staged, deploy = staged_app(tmp_path, "express")
    check = DockerDeployCheck(DockerHost(base_url="tcp://127.0.0.1:9"), timeout=1, answer_timeout=1)
    with pytest.raises(PublishError, match="APPGEN_VERIFY=smoke needs a Docker engine"):
        check.verify(staged, deploy, "smoke")


@pytest.mark.slow
def test_the_smoke_check_asks_the_health_route_the_app_defines(
    tmp_path, docker_engine, deploy_base
):
    """Fly's check asks the health route, so the smoke check does: an app whose home
    page answers but whose health route fails is not served."""
    staged, deploy = staged_app(tmp_path, "python-stdlib")
    server = staged.path / "server.py"
    server.write_text(
        server.read_text().replace(
            "self.send_response(200)",
            "self.send_response(503 if self.path == '/healthz' else 200)",
        )
    )
    checker = DockerDeployCheck(timeout=BUILD_TIMEOUT, answer_timeout=ANSWER_TIMEOUT)
    at_home = checker.verify(staged, deploy, "smoke")
    assert (at_home.verified, at_home.detail) == ("served", "HTTP 200 at / on port 8000")
    healthz = checker.verify(staged, deploy.model_copy(update={"health_path": "/healthz"}), "smoke")
    assert healthz.verified == "failed"
    assert healthz.detail.startswith("HTTP 503 at /healthz on port 8000"), healthz.detail
