"""Claims and generator slots: leases in the database that die with their holder.

Two runs of the same request started at once (a double click, a retry racing a
schedule) must not both generate, nor both push: the first claims the request, the
other waits until it is released, then finds the generation in the cache and the
tree already pushed. Generations across all workers share ``slots`` generator slots.

A lease names its holder's flow run and process and is renewed by a heartbeat while
the holder lives. It is taken over at once when its process is gone from this host
(killed, OOM), and by any host when its heartbeat is older than ``lease_seconds``
(a lost node). Nothing a dead run held stays held, in embedded mode too.

These are plain calls, not tasks: they are bookkeeping, not units of work.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

from blocks.database import Database
from core.errors import AppgenError, CrashedTooOften
from core.models import LeaseHolder, RequestRecord, RunLogger

POLL_SECONDS = 1.0
_log = logging.getLogger("appgen.leases")


class Heartbeat:
    """Renews every lease of ``holder`` every ``interval`` seconds, in a daemon
    thread, for as long as the ``with`` block runs."""

    def __init__(self, database: Database, holder: LeaseHolder, interval: float) -> None:
        self._database = database
        self._holder = holder
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="appgen-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._database.heartbeat(self._holder)
            except AppgenError as exc:  # the next beat may get through; the lease is not lost yet
                _log.warning("heartbeat of flow run %s failed: %s", self._holder.flow_run_id, exc)


def claim_request(
    database: Database,
    request_id: int,
    holder: LeaseHolder,
    lease: timedelta,
    logger: RunLogger,
) -> RequestRecord:
    """Return the request's row once ``holder`` holds it — what earlier runs published
    and created, as of now — waiting while another live run holds it."""
    waiting_for = None
    while (other := database.claim_request(request_id, holder, lease)) is not None:
        if other != waiting_for:
            logger.info("request %d is being worked on by flow run %s; waiting", request_id, other)
            waiting_for = other
        time.sleep(POLL_SECONDS)
    claimed = database.get(request_id)
    assert claimed is not None  # registered before it was claimed
    return claimed


@contextlib.contextmanager
def generator_slot(
    database: Database,
    holder: LeaseHolder,
    slots: int,
    lease: timedelta,
    logger: RunLogger,
) -> Iterator[int]:
    """Hold one of ``slots`` generator slots for the duration of the block."""
    waiting = False
    while (slot := database.acquire_slot(holder, slots, lease)) is None:
        if not waiting:
            logger.info("all %d generator slots are busy; waiting for one", slots)
            waiting = True
        time.sleep(POLL_SECONDS)
    try:
        yield slot
    finally:
        try:
            database.release_slot(holder)
        except AppgenError as exc:  # the run's end (or its death) frees the slot instead
            logger.warning("could not release generator slot %d: %s", slot, exc)


def check_crashes(flow_run_id: str, resubmits: int) -> None:
    """Refuse to go on with a flow run that has crashed more than ``resubmits`` times
    (each time its worker or host was lost, and it was scheduled again: see
    ``deployments/automations.py``): something in it, not the host, is what crashes."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(flow_run_id))
    # A crash while it ran; the worker of an earlier attempt may report that attempt's
    # exit again after the automation rescheduled it, as a crash of a pending run.
    crashes = sum(
        earlier.type is StateType.RUNNING and state.type is StateType.CRASHED
        for earlier, state in itertools.pairwise(states)
    )
    if crashes > resubmits:
        raise CrashedTooOften(
            f"this flow run crashed {crashes} times (its worker or host was lost each "
            f"time) and was resubmitted {resubmits} times, as APPGEN_CRASH_RESUBMITS "
            "allows; it is not run again: read its earlier runs' logs, then start a new "
            "run of the request"
        )
