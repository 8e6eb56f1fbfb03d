"""tasks.verify_deploy: with the check off, a publish never imports the Docker SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_with_the_check_off_the_task_imports_nothing_of_docker(tmp_path):
    code = f"""
import sys
from core.models import DeployFiles, StagedTree
from tasks.verify_deploy import verify_deploy
staged = StagedTree(path={str(tmp_path)!r}, kept_files=0, kept_links=0, kept_bytes=0, excluded=[])
deploy = DeployFiles(framework="node", written=[], kept_from_generator=[], deployable=True,
                     deploy_reason="", dockerfile="Dockerfile", internal_port=8080)
check = verify_deploy.fn(staged, deploy, "off")
assert check.verified is None and check.detail == "APPGEN_VERIFY=off", check
print(sorted(name for name in sys.modules if name.split(".")[0] in ("docker", "prefect_docker")))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
