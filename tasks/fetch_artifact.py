"""fetch_artifact: resolve a finished generation to a readable directory.

The source is never modified; a ``temporary`` result (an extracted download) is
removed by the flow after use.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.artifact_stores import ArtifactStore
from core.models import GeneratorRun, SourceTree
from tasks.step_timings import remember_timing


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def fetch_artifact(run: GeneratorRun, store: ArtifactStore) -> SourceTree:
    source = store.fetch(run)
    get_run_logger().info("generated app for request %d is at %s", run.request_id, source.path)
    return source
