"""verify_deploy: the build-and-smoke check of the rendered deploy files (APPGEN_VERIFY),
run by ``blocks.deploy_check`` on a Docker engine. With the check off, nothing of
Docker is imported."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.models import DeployCheck, DeployFiles, StagedTree, VerifyMode
from tasks.step_timings import remember_timing


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def verify_deploy(
    staged: StagedTree,
    deploy: DeployFiles,
    mode: VerifyMode,
    timeout: float = 900.0,
    answer_timeout: float = 60.0,
) -> DeployCheck:
    """Build (and for ``smoke`` run) the deploy files. A failed check is returned as
    ``verified='failed'`` (the flow records it, then refuses to push); an engine that
    cannot be reached raises ``PublishError``."""
    if mode == "off":
        return DeployCheck(mode=mode, verified=None, detail="APPGEN_VERIFY=off")
    from blocks.deploy_check import DockerDeployCheck  # the Docker SDK, for runs that check

    checker = DockerDeployCheck(timeout=timeout, answer_timeout=answer_timeout)
    check = checker.verify(staged, deploy, mode)
    logger = get_run_logger()
    if check.verified == "failed":
        logger.warning("deploy check (%s) failed: %s", mode, check.detail)
    else:
        logger.info("deploy check (%s): %s in %.1fs", mode, check.verified, check.seconds)
    return check
