"""render_deploy_files: the staged app's deploy files, rendered by ``core.launch.render``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.launch.render import render_into
from core.models import DeployFiles, RenderedFiles, StagedTree
from tasks.step_timings import remember_timing


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def render_deploy_files(
    staged: StagedTree, app_name: str, region: str, earlier: RenderedFiles | None = None
) -> DeployFiles:
    """Write fly.toml, Dockerfile, .dockerignore, .gitignore and the README section;
    in a revision, again over what appgen wrote for the last one (``earlier``),
    keeping the files edited since."""
    deploy = render_into(staged.path, app_name, region, earlier)
    logger = get_run_logger()
    for name in deploy.kept_edited:
        logger.info("kept %s as it is: edited since appgen wrote it", name)
    logger.info(
        "%s app%s: wrote %s; kept the generator's %s",
        deploy.framework,
        f" on port {deploy.internal_port}" if deploy.internal_port else "",
        ", ".join(deploy.written) or "nothing",
        ", ".join(deploy.kept_from_generator) or "nothing",
    )
    if not deploy.deployable:
        logger.warning("not deployable: %s", deploy.deploy_reason)
    for note in deploy.notes:
        logger.info("note: %s", note)
    return deploy
