"""create_repository: the request's repository on the Git host, created if needed.

The same request always maps to the same repository: the host recognises its own
repositories by a marker of the request and the repository id recorded for it (the
row's ``repo_id``), and moves to ``name-2``, ``name-3`` … when someone else holds the
name.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.git_hosts import GitHost
from core.models import PublishRequest, RemoteRepository
from tasks.step_timings import remember_timing


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def create_repository(request: PublishRequest, host: GitHost) -> RemoteRepository:
    repository = host.ensure_repository(
        request.app_name, request.request_id, known_id=request.repo_id
    )
    get_run_logger().info("request %d publishes to %s", request.request_id, repository.url)
    return repository
