"""update_db: the request's row — registered first, then moved through
``pending → generating → publishing → published | failed``."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.database import Database
from core.models import (
    PublishRequest,
    RequestRecord,
    RequestUpdate,
    check_app_name,
    check_prompt,
    derive_app_name,
)


@task(cache_policy=NO_CACHE)
def register_request(
    database: Database,
    prompt: str,
    request_id: int | None,
    app_name: str | None,
    flow_run_id: str | None = None,
) -> PublishRequest:
    """Validate the request, then record it (a new id when none is given).

    An existing request keeps its recorded app name unless a new one is given, so
    the same request keeps publishing to the same repository. Nothing is written
    when the input is invalid.
    """
    existing = database.get(request_id) if request_id is not None else None
    name = app_name or (existing.app_name if existing else None) or derive_app_name(prompt)
    check_prompt(prompt)
    check_app_name(name)
    if request_id is None:
        record = database.create_request(prompt, name, flow_run_id)
    else:
        record = database.upsert(
            request_id, prompt=prompt, app_name=name, flow_run_id=flow_run_id, error=None
        )
    get_run_logger().info("request %d: %r → %s", record.request_id, prompt[:80], name)
    return PublishRequest(
        request_id=record.request_id,
        prompt=prompt,
        app_name=name,
        registered_at=record.created_at,
        published_sha=existing.commit_sha if existing else None,
    )


@task(cache_policy=NO_CACHE)
def update_db(database: Database, update: RequestUpdate) -> RequestRecord:
    """Apply one status change (and whatever fields come with it) to the request's row."""
    fields = update.model_dump(exclude_unset=True, exclude={"request_id"})
    record = database.upsert(update.request_id, **fields)
    get_run_logger().info("request %d → %s", record.request_id, record.status.value)
    return record
