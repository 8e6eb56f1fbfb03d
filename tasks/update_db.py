"""update_db: the request's row — registered first, then moved through
``pending → generating → publishing → published | failed | cancelled``.

The terminal states of a run that does not publish are written by the flow's state
hooks (``record_failed`` for failed and crashed runs, ``record_cancelled``), which
retry with backoff when the database cannot take the write (a full disk, a server
restarting) and always record the run's own error, never their own.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any

from prefect import get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import MissingContextError, TerminationSignal
from prefect.states import Cancelled

from blocks.configuration import choose_database
from blocks.database import Database
from core.errors import AppgenError, InvalidRequest, describe
from core.models import (
    LeaseHolder,
    PublishRequest,
    RequestRecord,
    RequestStatus,
    RequestUpdate,
    ReviewNote,
    RevisionRecord,
    RevisionUpdate,
    RunLogger,
    check_app_name,
    check_prompt,
    derive_app_name,
)
from core.redaction import redact
from core.settings import Settings
from tasks.step_timings import remember_timing

# How often, and how long apart, a state hook tries to record the run's end.
HOOK_ATTEMPTS = 6
HOOK_FIRST_DELAY_SECONDS = 0.5
# A revision that ended so is run again (same number) by the same prompt.
_RESUMABLE = (RequestStatus.FAILED, RequestStatus.CANCELLED)
_log = logging.getLogger("appgen.hooks")


def register_request(
    database: Database,
    prompt: str,
    request_id: int | None,
    app_name: str | None,
    flow_run_id: str,
) -> PublishRequest:
    """Validate the request, then record it: the request this flow run registered
    before (a retry, a rescheduled run), else ``request_id``, else a new one.

    An existing request keeps its recorded app name unless a new one is given, so
    the same request keeps publishing to the same repository. Nothing is written
    when the input is invalid.
    """
    earlier = database.request_of_flow_run(flow_run_id)
    if earlier is not None:
        request_id = earlier.request_id
    existing = earlier or (database.get(request_id) if request_id is not None else None)
    name = app_name or (existing.app_name if existing else None) or derive_app_name(prompt)
    check_prompt(prompt)
    check_app_name(name)
    if request_id is None:
        record = database.create_request(prompt, name, flow_run_id)
    else:
        record = database.upsert(request_id, prompt=prompt, app_name=name, error=None)
        database.link_flow_run(flow_run_id, request_id)
    get_run_logger().info("request %d: %r → %s", record.request_id, prompt[:80], name)
    return PublishRequest(
        request_id=record.request_id,
        prompt=prompt,
        app_name=name,
        registered_at=record.created_at,
        published_sha=existing.commit_sha if existing else None,
        repo_id=existing.repo_id if existing else None,
    )


def published_request(database: Database, request_id: int) -> PublishRequest:
    """The request as its row records it, if it has been published (else InvalidRequest)."""
    record = database.get(request_id)
    if record is None:
        raise InvalidRequest(
            f"there is no request {request_id} in {database.display_url()}: publish one "
            "with `appgen publish --prompt …`, or check the id with `appgen status`"
        )
    if record.commit_sha is None or record.app_name is None:
        raise InvalidRequest(
            f"request {request_id} has not been published yet ({record.status.value}): "
            f"publish it first with `appgen publish --request-id {request_id} --prompt …`"
        )
    if not database.revisions(request_id):  # published before revisions were recorded
        database.put_revision(
            request_id,
            1,
            record.prompt,
            record.flow_run_id,
            status=RequestStatus.PUBLISHED,
            commit_sha=record.commit_sha,
            changed=True,
        )
    return PublishRequest(
        request_id=request_id,
        prompt=record.prompt,
        app_name=record.app_name,
        registered_at=record.created_at,
        published_sha=record.commit_sha,
        repo_id=record.repo_id,
    )


def register_revision(
    database: Database,
    request: PublishRequest,
    prompt: str,
    flow_run_id: str,
    review: list[ReviewNote] | None = None,
) -> RevisionRecord:
    """Record a follow-up prompt (and the review feedback it comes from) as the
    request's next revision: the one this flow run registered before (a retry), else
    the last revision when it failed with this same prompt (resumed, same number),
    else a new one. Nothing is written when the prompt is blank."""
    check_prompt(prompt)
    rid = request.request_id
    revision = database.revision_of_flow_run(flow_run_id)
    if revision is None or revision.request_id != rid:
        last = database.revisions(rid)[-1]
        resumable = last.revision > 1 and last.status in _RESUMABLE and last.prompt == prompt
        fields = {"status": RequestStatus.PENDING, "error": None, "review": review}
        revision = (
            database.put_revision(rid, last.revision, prompt, flow_run_id, **fields)
            if resumable
            else database.add_revision(rid, prompt, flow_run_id, review=review)
        )
    database.link_flow_run(flow_run_id, rid)
    get_run_logger().info("request %d, revision %d: %r", rid, revision.revision, prompt[:80])
    return revision


def record_revision(
    database: Database, revision: RevisionRecord, status: RequestStatus, **fields: Any
) -> RevisionRecord:
    """Apply one status change (and the fields that come with it) to a revision's row."""
    update = RevisionUpdate(status=status, **fields)
    return database.update_revision(revision.request_id, revision.revision, **update.changes())


def record_progress(database: Database, update: RequestUpdate) -> RequestRecord:
    """Apply one status change (and whatever fields come with it) to the request's row:
    a plain write, not a task run of its own."""
    record = database.upsert(update.request_id, **update.changes())
    get_run_logger().info("request %d → %s", record.request_id, record.status.value)
    return record


@task(cache_policy=NO_CACHE, on_completion=[remember_timing], on_failure=[remember_timing])
def update_db(database: Database, holder: LeaseHolder, update: RequestUpdate) -> None:
    """Record the request's outcome and release its claim, in one write."""
    database.finish(update.request_id, holder.flow_run_id, **update.changes())
    get_run_logger().info("request %d → %s", update.request_id, update.status.value)


def record_failed(flow: object, flow_run: FlowRun, state: State) -> None:
    """State hook of failed and crashed runs: the row says ``failed`` and why; a run
    stopped by a signal (Ctrl-C, SIGTERM) says ``cancelled``, in Prefect too."""
    stopped_by = _stopping_signal(state)
    if stopped_by is None:
        _record_end(flow_run, RequestStatus.FAILED, _failure_text(state))
        return
    message = f"cancelled: the run was stopped by {stopped_by}"
    _record_end(flow_run, RequestStatus.CANCELLED, message)
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True)
    except Exception as exc:  # the row is what matters; Prefect keeps saying Crashed
        _log.warning("could not mark flow run %s cancelled in Prefect: %s", flow_run.id, exc)


def record_cancelled(flow: object, flow_run: FlowRun, state: State) -> None:
    """State hook of cancelled runs: the row says ``cancelled``."""
    _record_end(flow_run, RequestStatus.CANCELLED, state.message or "the run was cancelled")


def _stopping_signal(state: State) -> str | None:
    """The signal's name when the run crashed because a signal stopped it. Hooks run
    while the engine handles the interrupt, so it is the exception being handled."""
    interrupt = sys.exc_info()[1]
    if not state.is_crashed() or not isinstance(interrupt, KeyboardInterrupt | TerminationSignal):
        return None
    number = getattr(interrupt, "signal", signal.SIGINT)
    return signal.Signals(number).name


def _failure_text(state: State) -> str:
    """The run's own error: the exception that failed it, or what crashed it."""
    if state.is_crashed():
        interrupt = sys.exc_info()[1]
        cause = f" ({type(interrupt).__name__})" if interrupt is not None else ""
        return redact(f"the run crashed{cause}: {state.message or 'no detail'}")
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result itself is unreadable: fall back on the state's message
        error = None
    if isinstance(error, BaseException):
        return describe(error)
    return redact(state.message or "the run failed")


def _run_logger() -> RunLogger:
    """The flow run's logger while its hooks run (so the line reaches the run log)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _log


def _record_end(flow_run: FlowRun, status: RequestStatus, error: str) -> None:
    """Write the terminal row of the request this run holds and release what it
    held, retrying while the database refuses; the message stays the run's own. A
    row this run already recorded as published (it was stopped during the summary)
    stays published."""
    flow_run_id = str(flow_run.id)
    delay = HOOK_FIRST_DELAY_SECONDS
    for attempt in range(1, HOOK_ATTEMPTS + 1):
        try:
            database, _ = choose_database(Settings(), flow_run.parameters.get("database"))
            request = database.request_of_flow_run(flow_run_id)
            if request is not None and (
                ended := database.finish(
                    request.request_id, flow_run_id, keep_published=True, status=status, error=error
                )
            ):
                _run_logger().info("request %d → %s", request.request_id, ended.status.value)
            database.end_revisions(flow_run_id, status, error)
            database.release_slot(LeaseHolder(flow_run_id=flow_run_id, process=""))
            return
        except (AppgenError, ValueError) as exc:
            if attempt == HOOK_ATTEMPTS:
                _log.error(
                    "could not record that flow run %s %s (%s); `appgen reap` or the next "
                    "run of the request repairs the row. The run's error was: %s",
                    flow_run_id,
                    status.value,
                    exc,
                    error,
                )
                return
            time.sleep(delay)
            delay *= 2
