"""prefect.yaml checked offline: Prefect silently drops keys it does not know."""

from __future__ import annotations

import importlib

import yaml
from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel, WorkPoolConfig

from tests.conftest import REPO_ROOT


def known(model) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_every_key_is_known_to_prefect_and_every_entrypoint_imports():
    document = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    assert set(document) <= known(PrefectYamlModel)
    PrefectYamlModel.model_validate(document)
    assert document["deployments"], "no deployments"
    for deployment in document["deployments"]:
        assert set(deployment) <= known(DeploymentConfig), deployment["name"]
        assert set(deployment.get("work_pool", {})) <= known(WorkPoolConfig)
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, name))
