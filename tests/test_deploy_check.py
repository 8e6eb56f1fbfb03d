"""blocks.deploy_check, the build-and-smoke check on the real Docker engine:
rendered Dockerfiles build on the offline base images (tests/deploy_images.py) and
the apps answer HTTP on the internal port fly.toml names. No registry and no
network: the apps have no dependencies (the client/server one vendors its helper)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

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
    """node:18-slim, python:3.11-slim and caddy:2 from one debootstrapped base."""
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


@pytest.mark.slow
@pytest.mark.parametrize("name", PYPI_APPS)
def test_python_apps_with_real_dependencies_build_from_pypi_and_answer_2xx(
    name, tmp_path, docker_engine, deploy_base
):
    """What lint cannot see: the published Dockerfile installs real packages from PyPI
    (the build's only network), runs the app's one-off steps (Django's migrate and
    collectstatic, Flask's init-db) and serves. python:3.11-slim is the stand-in base:
    Debian bookworm's Python 3.11 (tests/deploy_images.py), which each app names in
    .python-version."""
    staged, deploy = staged_app(tmp_path, name)
    check = DockerDeployCheck(timeout=BUILD_TIMEOUT, answer_timeout=ANSWER_TIMEOUT).verify(
        staged, deploy, "smoke"
    )
    print(f"\n{name}: {check.verified} in {check.seconds:.1f}s ({check.detail})")
    assert check.verified == "served", "\n".join([check.detail, *check.log_tail])
    assert check.detail.startswith("HTTP 2"), check.detail


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
