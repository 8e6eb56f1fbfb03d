"""claim_request / release_request: one flow run at a time per request.

Two runs of the same request started at once (a double click, a retry racing a
schedule) must not both generate, nor both push. The first claims the request in
the database; the other waits until it is released, then finds the generation in
the cache and the tree already pushed. A claim whose holder died expires after
``stale_after_seconds``.
"""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.database import Database

POLL_SECONDS = 1.0


@task(cache_policy=NO_CACHE)
def claim_request(
    database: Database, request_id: int, owner: str, stale_after_seconds: float
) -> None:
    """Return once ``owner`` holds the request; wait while another run does."""
    logger = get_run_logger()
    stale_after = timedelta(seconds=stale_after_seconds)
    waiting_for = None
    while (holder := database.claim_generation(request_id, owner, stale_after)) is not None:
        if holder != waiting_for:
            logger.info("request %d is being worked on by flow run %s; waiting", request_id, holder)
            waiting_for = holder
        time.sleep(POLL_SECONDS)


@task(cache_policy=NO_CACHE)
def release_request(database: Database, request_id: int, owner: str) -> None:
    database.release_generation(request_id, owner)
