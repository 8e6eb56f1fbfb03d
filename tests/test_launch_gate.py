"""core.launch.gate: a publish stops before the push when its app is not deployable
(and APPGEN_REQUIRE_DEPLOYABLE is set) or its deploy check failed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.errors import PublishError
from core.launch.gate import enforce, refusal
from core.launch.render import render_into
from core.models import DeployCheck, DeployFiles

APPS = Path(__file__).resolve().parent / "apps"


def rendered(tmp_path: Path, name: str) -> DeployFiles:
    app = tmp_path / name
    shutil.copytree(APPS / name, app, symlinks=True)
    return render_into(app, name, "iad")


def test_an_undeployable_app_stops_only_when_deployable_is_required(tmp_path):
    deploy = rendered(tmp_path, "unknown")
    check = DeployCheck(mode="smoke", verified=None, detail="not deployable")
    assert refusal(deploy, check, require_deployable=False) is None
    refused = refusal(deploy, check, require_deployable=True)
    assert refused is not None and "APPGEN_REQUIRE_DEPLOYABLE" in refused
    served = DeployCheck(mode="smoke", verified="served")
    good = rendered(tmp_path, "express")
    assert refusal(good, served, require_deployable=True) is None


def test_a_failed_check_stops_the_publish_with_its_log_tail(tmp_path):
    deploy = rendered(tmp_path, "express")
    failed = DeployCheck(
        mode="build", verified="failed", detail="docker build failed", log_tail=["npm ERR! boom"]
    )
    with pytest.raises(PublishError, match=r"(?s)the deploy check \(build\) failed.*npm ERR! boom"):
        enforce(deploy, failed, require_deployable=False)
