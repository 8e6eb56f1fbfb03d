"""``appgen setup``: everything a Prefect server needs to run appgen, in order, each
step safe to repeat:

1. register the project's block types;
2. save default blocks from the settings (``appgen-*/default``), keeping any already
   saved unless ``--overwrite``; in AWS mode, create the artifact bucket and its
   expiry rule;
3. create the work pools (``appgen-local`` process, ``appgen-ecs`` ECS);
4. create the automations that crash and resubmit runs whose worker was lost
   (``deployments/automations.py``);
5. apply the deployments in ``prefect.yaml`` (``prefect deploy``).

Generator slots (APPGEN_GENERATOR_SLOTS) are leases in the appgen database, not a
Prefect concurrency limit: they expire with their holder, embedded mode included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_client
from prefect.blocks.core import Block
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

from blocks import defaults
from blocks.artifact_stores import VolumeArtifactStore
from blocks.configuration import DEFAULT_BLOCK_NAME, block_fields, read_saved_block
from blocks.database import Database
from blocks.docker_generator import DockerGenerator
from blocks.ecs_generator import EcsGenerator
from blocks.generators import ProcessGenerator
from blocks.git_hosts import LocalGitHost
from blocks.github_host import GitHubHost
from blocks.s3_artifact_store import S3ArtifactStore
from core.errors import SetupError
from core.settings import Settings
from deployments.automations import ensure_automations

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BLOCK_TYPES: tuple[type[Block], ...] = (
    ProcessGenerator,
    DockerGenerator,
    EcsGenerator,
    VolumeArtifactStore,
    S3ArtifactStore,
    LocalGitHost,
    GitHubHost,
    Database,
)
WORK_POOLS = {"appgen-local": "process", "appgen-ecs": "ecs"}
B = TypeVar("B", bound=Block)


def setup(
    settings: Settings,
    *,
    deploy: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()
    log(f"registered {len(BLOCK_TYPES)} block types")

    database = defaults.database(settings)
    database.migrate()
    save_default_blocks(settings, overwrite=overwrite, log=log)

    with get_client(sync_client=True) as client:
        for name, pool_type in WORK_POOLS.items():
            try:
                client.read_work_pool(name)
                log(f"work pool {name} ({pool_type}) exists")
            except ObjectNotFound:
                template: dict[str, Any] | None = run_coro_as_sync(
                    get_default_base_job_template_for_infrastructure_type(pool_type)
                )
                client.create_work_pool(
                    WorkPoolCreate(name=name, type=pool_type, base_job_template=template or {})
                )
                log(f"created work pool {name} ({pool_type})")

    ensure_automations(log)
    if deploy:
        apply_deployments(log)


def save_default_blocks(
    settings: Settings, *, overwrite: bool = False, log: Callable[[str], None] = print
) -> None:
    """Save the blocks the settings describe as ``appgen-<type>/default``, which runs
    then use. A saved block is kept (someone may have edited it in the UI) unless
    ``overwrite``. In AWS mode the S3 store is a block of its own that the ECS
    generator block refers to, and its bucket is made ready."""
    if settings.generator == "ecs":
        store = _save_default(defaults.s3_artifact_store(settings), overwrite, log)
        store.ensure_bucket()
        log(f"bucket {store.bucket}: tarballs expire after {store.retention_days} days")
        _save_default(defaults.ecs_generator(settings, artifacts=store), overwrite, log)
    else:
        _save_default(defaults.generator(settings), overwrite, log)
    _save_default(defaults.git_host(settings), overwrite, log)
    _save_default(defaults.database(settings), overwrite, log)


def _save_default(block: B, overwrite: bool, log: Callable[[str], None]) -> B:
    """``block`` saved as the default of its type, or the saved one kept."""
    name = f"{block.get_block_type_slug()}/{DEFAULT_BLOCK_NAME}"
    saved = read_saved_block(name)
    if saved is not None and not overwrite:
        if block_fields(saved) == block_fields(block):
            log(f"kept {name} (the same as the settings)")
        else:
            log(
                f"kept {name}: it differs from the settings (edited in the UI?); "
                "`appgen setup --overwrite` replaces it with them"
            )
        return saved  # type: ignore[return-value]
    block.save(DEFAULT_BLOCK_NAME, overwrite=True)
    log(f"{'replaced' if saved is not None else 'saved'} {name}")
    return block


def apply_deployments(log: Callable[[str], None] = print) -> None:
    """``prefect deploy`` from the project root, where prefect.yaml lives: the
    ``local`` deployments of both flows always, ``ecs`` once there is an orchestrator
    image to run."""
    names = ["generate-and-publish/local", "revise-app/local"]
    if os.environ.get("APPGEN_ORCHESTRATOR_IMAGE"):
        names += ["generate-and-publish/ecs", "revise-app/ecs"]
    else:
        log(
            "skipped the ecs deployment: build the orchestrator image (Dockerfile) and set "
            "APPGEN_ORCHESTRATOR_IMAGE and APPGEN_ECS_CLUSTER"
        )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            *(arg for name in names for arg in ("--name", name)),
        ],
        cwd=PROJECT_ROOT,
        env=os.environ | {"APPGEN_PROJECT_DIR": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise SetupError(f"prefect deploy failed (exit {completed.returncode}):\n{tail}")
    for line in completed.stdout.splitlines():
        if "Deployment '" in line:
            log(line.strip())
