"""The requests database: one row per request. SQLite by default, PostgreSQL in
production, the same code; the schema is managed by alembic migrations
(``core/migrations``), applied automatically and under a lock on first use.

Prefect-free, so that read-only commands (``appgen status``) open it without
importing Prefect; ``blocks.database.Database`` is the same store as a Prefect block.
"""

from __future__ import annotations

import contextlib
import fcntl
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from core.errors import DatabaseError
from core.models import Column, LeaseHolder, RequestRecord, RequestStatus, RevisionRecord
from core.processes import process_is_gone

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The backends appgen supports; each has INSERT … ON CONFLICT.
_BACKENDS = ("postgresql", "sqlite")
_MIGRATION_LOCK_KEY = 0x6170_7067  # pg_advisory_xact_lock key: "appg"
# How often registering a revision tries for a number another run did not take first.
_NUMBER_ATTEMPTS = 20


def _now() -> datetime:
    return datetime.now(UTC)


def _lease_clock(connection: sa.Connection) -> datetime:
    """The time leases are judged by: the database server's, so that workers on
    several hosts, whose clocks drift apart, agree on who went silent. SQLite is a
    file on one host, whose clock is that host's."""
    if connection.dialect.name == "postgresql":
        moment = connection.scalar(sa.select(sa.func.now()))
        assert isinstance(moment, datetime)
        return _aware(moment)
    return _now()


def _column(name: str, field: FieldInfo) -> sa.Column[Any]:
    """The column that stores a field of a record (``RequestRecord``, ``RevisionRecord``)."""
    kinds = set(typing.get_args(field.annotation)) if _is_union(field.annotation) else set()
    kind = next(iter(kinds - {type(None)}), field.annotation)
    length = next((m.length for m in field.metadata if isinstance(m, Column)), None)
    column_type: sa.types.TypeEngine[Any]
    if kind is bool:
        column_type = sa.Boolean()
    elif kind is int:
        column_type = sa.Integer()
    elif kind is float:
        column_type = sa.Float()
    elif kind is datetime:
        column_type = sa.DateTime(timezone=True)
    elif (isinstance(kind, type) and issubclass(kind, BaseModel)) or typing.get_origin(
        kind
    ) is list:
        column_type = sa.JSON()
    elif (
        kind is str
        or typing.get_origin(kind) is typing.Literal
        or (isinstance(kind, type) and issubclass(kind, Enum))
    ):
        column_type = sa.String(length) if length else sa.Text()
    else:
        raise TypeError(f"{name}: no column type for {field.annotation}")
    return sa.Column(name, column_type, nullable=type(None) in kinds)


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


metadata = sa.MetaData()
# One row per request: RequestRecord's fields, then the lease a flow run holds on it
# (``claimed_by`` is the record's; its process, host:pid:start, and last heartbeat).
requests = sa.Table(
    "requests",
    metadata,
    sa.Column("request_id", sa.Integer(), primary_key=True, autoincrement=True),
    *(
        _column(name, field)
        for name, field in RequestRecord.model_fields.items()
        if name != "request_id"
    ),
    sa.Column("claim_process", sa.String(300)),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Index("ix_requests_flow_run_id", "flow_run_id"),
)
# Which request a flow run registered: a retried or rescheduled run finds it again.
request_runs = sa.Table(
    "request_runs",
    metadata,
    sa.Column("flow_run_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.Integer(), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
# The generator slots shared by every worker; each held like a claim.
generator_slots = sa.Table(
    "generator_slots",
    metadata,
    sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(64)),
    sa.Column("holder_process", sa.String(300)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)
# One row per revision of a request (the first publish is revision 1): what it was
# asked, what it started from and published, and the deploy files appgen wrote.
revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("request_id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("revision", sa.Integer(), primary_key=True, autoincrement=False),
    *(
        _column(name, field)
        for name, field in RevisionRecord.model_fields.items()
        if name not in ("request_id", "revision")
    ),
    sa.Index("ix_revisions_flow_run_id", "flow_run_id"),
)
_RECORD_FIELDS = frozenset(RequestRecord.model_fields) - {"request_id", "created_at", "updated_at"}
_REVISION_FIELDS = frozenset(RevisionRecord.model_fields) - {
    "request_id",
    "revision",
    "created_at",
    "updated_at",
}
_FINAL = tuple(status.value for status in RequestStatus if status.is_final)


class RequestStore:
    """The table of requests and where they were published.

    Example:
        ```python
        from core.database import RequestStore

        store = RequestStore("sqlite:////home/me/.appgen/appgen.db")
        print(store.get(42))
        ```

    ``blocks.database.Database`` mixes this class into a Prefect block: its ``url``
    field and ``_engine`` private attribute take the place of the ones set here.
    """

    url: SecretStr
    _engine: sa.Engine | None

    def __init__(self, url: str | SecretStr) -> None:
        self.url = url if isinstance(url, SecretStr) else SecretStr(url)
        self._engine = None  # opened, and the schema checked, on first use

    def upsert(self, request_id: int, **fields: Any) -> RequestRecord:
        """Insert or update the request's row with the given fields, atomically
        (``INSERT … ON CONFLICT DO UPDATE``): concurrent writers never lose a field."""
        values = _column_values(fields)
        now = _now()
        values["updated_at"] = now
        with self._connection() as connection:
            insert = _insert(connection, requests).values(
                {"prompt": "", "status": RequestStatus.PENDING.value, "created_at": now}
                | values
                | {"request_id": request_id}
            )
            connection.execute(
                insert.on_conflict_do_update(index_elements=[requests.c.request_id], set_=values)
            )
            if connection.dialect.name == "postgresql":
                # An explicit id must not be handed out again by the id sequence.
                connection.execute(
                    sa.text(
                        "SELECT setval(pg_get_serial_sequence('requests', 'request_id'), "
                        "GREATEST(:id, (SELECT last_value FROM requests_request_id_seq)))"
                    ),
                    {"id": request_id},
                )
            record = _get(connection, request_id)
            assert record is not None
            return record

    def create_request(self, prompt: str, app_name: str | None, flow_run_id: str) -> RequestRecord:
        """Insert a new pending request, registered by ``flow_run_id``; return it with
        its assigned id."""
        now = _now()
        with self._connection() as connection:
            inserted = connection.execute(
                sa.insert(requests).values(
                    prompt=prompt,
                    app_name=app_name,
                    status=RequestStatus.PENDING.value,
                    created_at=now,
                    updated_at=now,
                )
            )
            assert inserted.inserted_primary_key is not None  # an INSERT of one row
            request_id = inserted.inserted_primary_key[0]
            connection.execute(
                sa.insert(request_runs).values(
                    flow_run_id=flow_run_id, request_id=request_id, created_at=now
                )
            )
            record = _get(connection, request_id)
            assert record is not None
            return record

    def link_flow_run(self, flow_run_id: str, request_id: int) -> None:
        """Remember that ``flow_run_id`` works on ``request_id`` (first link wins)."""
        with self._connection() as connection:
            insert = _insert(connection, request_runs).values(
                flow_run_id=flow_run_id, request_id=request_id, created_at=_now()
            )
            connection.execute(insert.on_conflict_do_nothing(index_elements=["flow_run_id"]))

    def request_of_flow_run(self, flow_run_id: str) -> RequestRecord | None:
        """The request this flow run registered, whichever attempt of it asks."""
        with self._connection() as connection:
            row = connection.execute(
                sa.select(requests)
                .join(request_runs, request_runs.c.request_id == requests.c.request_id)
                .where(request_runs.c.flow_run_id == flow_run_id)
            ).first()
            return _record(row) if row else None

    def claim_request(
        self, request_id: int, holder: LeaseHolder, stale_after: timedelta
    ) -> str | None:
        """Claim the right to work on this request. Returns None when ``holder`` holds
        it now (and is recorded as the request's flow run), else the flow run that
        does. A claim whose process is gone or whose heartbeat is older than
        ``stale_after`` is taken over."""
        with self._connection() as connection:
            taken = _take_lease(
                connection,
                _CLAIM,
                requests.c.request_id == request_id,
                holder,
                stale_after,
                extra={"flow_run_id": holder.flow_run_id},
            )
            if taken:
                return None
            held_by = connection.scalar(
                sa.select(requests.c.claimed_by).where(requests.c.request_id == request_id)
            )
            return held_by or "an unknown flow run"

    def acquire_slot(self, holder: LeaseHolder, slots: int, stale_after: timedelta) -> int | None:
        """Take one of ``slots`` generator slots for ``holder``; None while all are held
        by live holders. Slots held by dead processes or stale heartbeats are taken over."""
        with self._connection() as connection:
            insert = _insert(connection, generator_slots)
            connection.execute(
                insert.values([{"slot": n} for n in range(1, slots + 1)]).on_conflict_do_nothing(
                    index_elements=["slot"]
                )
            )
        for slot in range(1, slots + 1):
            with self._connection() as connection:
                which = generator_slots.c.slot == slot
                if _take_lease(connection, _SLOT, which, holder, stale_after):
                    return slot
        return None

    def release_slot(self, holder: LeaseHolder) -> None:
        with self._connection() as connection:
            connection.execute(
                sa.update(generator_slots)
                .where(generator_slots.c.holder == holder.flow_run_id)
                .values(holder=None, holder_process=None, heartbeat_at=None)
            )

    def held_slots(self) -> list[str]:
        """The flow runs holding a generator slot now (for status and tests)."""
        with self._connection() as connection:
            holder = generator_slots.c.holder
            return list(connection.scalars(sa.select(holder).where(holder.is_not(None))))

    def heartbeat(self, holder: LeaseHolder) -> None:
        """Renew every lease ``holder`` has: its request claim and its generator slot."""
        with self._connection() as connection:
            now = _lease_clock(connection)
            connection.execute(
                sa.update(requests)
                .where(requests.c.claimed_by == holder.flow_run_id)
                .values(claimed_at=now)
            )
            connection.execute(
                sa.update(generator_slots)
                .where(generator_slots.c.holder == holder.flow_run_id)
                .values(heartbeat_at=now)
            )

    def finish(
        self, request_id: int, flow_run_id: str, *, keep_published: bool = False, **fields: Any
    ) -> RequestRecord | None:
        """Write the request's final fields and release its claim, in one statement,
        if ``flow_run_id`` is still the request's flow run; None if another run has
        taken the request over since (its outcome is that run's to record). With
        ``keep_published``, a row already ``published`` keeps its fields (a run that
        ends badly after recording its push did publish) and only the claim goes."""
        values: dict[str, Any] = _column_values(fields)
        if keep_published:
            published = requests.c.status == RequestStatus.PUBLISHED.value
            values = {
                name: sa.case((published, requests.c[name]), else_=value)
                for name, value in values.items()
            }
        release = {"claimed_by": None, "claim_process": None, "claimed_at": None}
        with self._connection() as connection:
            updated = connection.execute(
                sa.update(requests)
                .where(requests.c.request_id == request_id, requests.c.flow_run_id == flow_run_id)
                .values(values | release | {"updated_at": _now()})
            )
            if updated.rowcount != 1:
                return None
            return _get(connection, request_id)

    def revisions(self, request_id: int) -> list[RevisionRecord]:
        """The request's revisions, oldest first."""
        with self._connection() as connection:
            rows = connection.execute(
                sa.select(revisions)
                .where(revisions.c.request_id == request_id)
                .order_by(revisions.c.revision)
            )
            return [RevisionRecord.model_validate(dict(row._mapping)) for row in rows]

    def revision_of_flow_run(self, flow_run_id: str) -> RevisionRecord | None:
        """The revision this flow run registered, whichever attempt of it asks."""
        with self._connection() as connection:
            row = connection.execute(
                sa.select(revisions)
                .where(revisions.c.flow_run_id == flow_run_id)
                .order_by(revisions.c.revision.desc())
            ).first()
            return RevisionRecord.model_validate(dict(row._mapping)) if row else None

    def add_revision(
        self, request_id: int, prompt: str, flow_run_id: str, **fields: Any
    ) -> RevisionRecord:
        """Register the request's next revision (with ``fields``), numbered after every
        one registered so far, for ``flow_run_id``. Two registering at once get two
        numbers."""
        for _ in range(_NUMBER_ATTEMPTS):
            try:
                with self._connection() as connection:
                    latest = connection.scalar(
                        sa.select(sa.func.max(revisions.c.revision)).where(
                            revisions.c.request_id == request_id
                        )
                    )
                    number = (latest or 0) + 1
                    return self._insert_revision(
                        connection, request_id, number, prompt, flow_run_id, fields
                    )
            except DatabaseError as exc:
                if not isinstance(exc.__cause__, sa.exc.IntegrityError):
                    raise
        raise DatabaseError(f"could not number a new revision of request {request_id}")

    def put_revision(
        self, request_id: int, revision: int, prompt: str, flow_run_id: str | None, **fields: Any
    ) -> RevisionRecord:
        """Insert revision ``revision`` of the request, or update it, with ``fields``."""
        values = _revision_values(fields) | {"prompt": prompt, "flow_run_id": flow_run_id}
        now = _now()
        with self._connection() as connection:
            insert = _insert(connection, revisions).values(
                {"status": RequestStatus.PENDING.value, "created_at": now}
                | values
                | {"request_id": request_id, "revision": revision, "updated_at": now}
            )
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[revisions.c.request_id, revisions.c.revision],
                    set_=values | {"updated_at": now},
                )
            )
            return _get_revision(connection, request_id, revision)

    def update_revision(self, request_id: int, revision: int, **fields: Any) -> RevisionRecord:
        with self._connection() as connection:
            connection.execute(
                sa.update(revisions)
                .where(revisions.c.request_id == request_id, revisions.c.revision == revision)
                .values(_revision_values(fields) | {"updated_at": _now()})
            )
            return _get_revision(connection, request_id, revision)

    def end_revisions(self, flow_run_id: str, status: RequestStatus, error: str) -> None:
        """Record how the unfinished revisions of ``flow_run_id`` ended."""
        with self._connection() as connection:
            connection.execute(
                sa.update(revisions)
                .where(revisions.c.flow_run_id == flow_run_id, revisions.c.status.not_in(_FINAL))
                .values(status=status.value, error=error, updated_at=_now())
            )

    def _insert_revision(
        self,
        connection: sa.Connection,
        request_id: int,
        number: int,
        prompt: str,
        flow_run_id: str,
        fields: dict[str, Any],
    ) -> RevisionRecord:
        now = _now()
        connection.execute(
            sa.insert(revisions).values(
                **_revision_values(fields),
                request_id=request_id,
                revision=number,
                prompt=prompt,
                status=RequestStatus.PENDING.value,
                flow_run_id=flow_run_id,
                created_at=now,
                updated_at=now,
            )
        )
        return _get_revision(connection, request_id, number)

    def repair_abandoned(self, lease: timedelta) -> list[RequestRecord]:
        """Mark ``failed`` the unfinished requests whose claim holder is gone (its
        process died on this host, or its heartbeat is older than ``lease``), release
        their claims, and free generator slots held by such holders."""
        repaired = []
        claim = requests.c
        with self._connection() as connection:
            stale_before = _lease_clock(connection) - lease
            held = connection.execute(
                sa.select(claim.request_id, claim.claimed_by, claim.claim_process).where(
                    claim.claimed_by.is_not(None)
                )
            ).all()
        for request_id, holder, process in held:
            with self._connection() as connection:
                row = connection.execute(
                    sa.select(claim.status, claim.claimed_at).where(
                        claim.request_id == request_id, claim.claimed_by == holder
                    )
                ).first()
                if row is None:
                    continue
                silent = row.claimed_at is not None and _aware(row.claimed_at) < stale_before
                if not (silent or process_is_gone(process)):
                    continue
                values: dict[str, Any] = {
                    "claimed_by": None,
                    "claim_process": None,
                    "claimed_at": None,
                    "updated_at": _now(),
                }
                if not RequestStatus(row.status).is_final:
                    values["status"] = RequestStatus.FAILED.value
                    values["error"] = (
                        f"abandoned: flow run {holder} stopped without recording an outcome "
                        f"({'its heartbeat stopped' if silent else 'its process is gone'}); "
                        "publish the request again to finish it"
                    )
                connection.execute(
                    sa.update(requests)
                    .where(claim.request_id == request_id, claim.claimed_by == holder)
                    .values(values)
                )
                connection.execute(
                    sa.update(revisions)
                    .where(revisions.c.flow_run_id == holder, revisions.c.status.not_in(_FINAL))
                    .values(status=RequestStatus.FAILED.value, error=values.get("error"))
                )
                record = _get(connection, request_id)
                assert record is not None
                repaired.append(record)
        with self._connection() as connection:
            slots = connection.execute(
                sa.select(generator_slots).where(generator_slots.c.holder.is_not(None))
            ).all()
            for slot in slots:
                silent = slot.heartbeat_at is not None and _aware(slot.heartbeat_at) < stale_before
                if silent or process_is_gone(slot.holder_process):
                    connection.execute(
                        sa.update(generator_slots)
                        .where(
                            generator_slots.c.slot == slot.slot,
                            generator_slots.c.holder == slot.holder,
                        )
                        .values(holder=None, holder_process=None, heartbeat_at=None)
                    )
        return repaired

    def get(self, request_id: int) -> RequestRecord | None:
        with self._connection() as connection:
            return _get(connection, request_id)

    def all(self) -> list[RequestRecord]:
        with self._connection() as connection:
            rows = connection.execute(sa.select(requests).order_by(requests.c.request_id))
            return [_record(row) for row in rows]

    def migrate(self) -> None:
        """Bring the schema up to date (alembic ``upgrade head``); safe to run
        concurrently and repeatedly."""
        self._get_engine()

    def display_url(self) -> str:
        """The URL with its password masked, for messages."""
        return sa.make_url(self.url.get_secret_value()).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """A connection in a transaction, committed at the end of the block."""
        try:
            with self._get_engine().begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"database {self.display_url()} failed: {type(exc).__name__}: "
                f"{getattr(exc, 'orig', None) or exc}"
            ) from exc

    def _get_engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = _open_engine(self.url.get_secret_value(), self.display_url())
        return self._engine


def _open_engine(url_text: str, shown: str) -> sa.Engine:
    """An engine for this URL, its schema brought up to date (``shown`` is the URL
    with its password masked, for errors)."""
    url = sa.make_url(url_text)
    if url.get_backend_name() not in _BACKENDS:
        raise DatabaseError(f"{shown}: appgen supports SQLite and PostgreSQL databases")
    try:
        engine = _create_engine(url)
        _upgrade_schema(engine, url)
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"the driver for {shown} is not installed ({exc.name}); "
            "for PostgreSQL: pip install 'appgen-orchestrator[postgres]'"
        ) from exc
    except (OSError, SQLAlchemyError) as exc:
        raise DatabaseError(f"cannot open the database {shown}: {exc}") from exc
    return engine


def _create_engine(url: sa.URL) -> sa.Engine:
    # A store does a few statements per run, minutes apart (a heartbeat, a status):
    # each opens a connection and closes it, so no idle one is held through a
    # generation, and none is left for the garbage collector when a store goes.
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, poolclass=NullPool)
    if url.database in (None, "", ":memory:"):
        return sa.create_engine(url)  # its pool keeps the one connection the data lives in
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # Concurrent flow runs share the file: wait for the write lock rather than fail.
    return sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})


def _upgrade_schema(engine: sa.Engine, url: sa.URL) -> None:
    if _schema_is_current(engine):
        return  # the common case, without importing alembic and loading its scripts
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(url), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _schema_is_current(engine: sa.Engine) -> bool:
    """True when the database records the newest revision as applied."""
    try:
        with engine.connect() as connection:
            applied = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            return applied.scalar() == _newest_revision()
    except SQLAlchemyError:  # no schema yet
        return False


def _newest_revision() -> str:
    """Migration files are named after their revision (``0004_pull_requests.py`` is
    revision ``0004``, revising ``0003``), so the newest file names the newest one.
    A file named otherwise only makes this check fail, and alembic decide."""
    files = (MIGRATIONS / "versions").glob("*_*.py")
    return max((path.name.split("_", 1)[0] for path in files), default="")


@contextlib.contextmanager
def _migration_lock(url: sa.URL) -> Iterator[None]:
    """SQLite files get a lock file beside them; PostgreSQL uses an advisory lock."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    with open(f"{url.database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class _LeaseColumns:
    """Where a table keeps a lease: its holder (a flow run), the holder's process, and
    the holder's last heartbeat."""

    table: sa.Table
    holder: str
    process: str
    heartbeat: str


_CLAIM = _LeaseColumns(requests, "claimed_by", "claim_process", "claimed_at")
_SLOT = _LeaseColumns(generator_slots, "holder", "holder_process", "heartbeat_at")


def _take_lease(
    connection: sa.Connection,
    lease: _LeaseColumns,
    which: sa.ColumnElement[bool],
    holder: LeaseHolder,
    stale_after: timedelta,
    *,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Take the lease on the row ``which`` selects if it is free, ours, stale, or
    held by a process that is gone from this host. Each take is a conditional UPDATE
    on the row's current holder, so two takers never both win."""
    table = lease.table
    holder_column, process_column, heartbeat_column = (
        table.c[lease.holder],
        table.c[lease.process],
        table.c[lease.heartbeat],
    )
    now = _lease_clock(connection)
    values = {
        lease.holder: holder.flow_run_id,
        lease.process: holder.process,
        lease.heartbeat: now,
    } | (extra or {})
    taken = connection.execute(
        sa.update(table)
        .where(
            which,
            sa.or_(
                holder_column.is_(None),
                holder_column == holder.flow_run_id,
                heartbeat_column < now - stale_after,
            ),
        )
        .values(values)
    )
    if taken.rowcount == 1:
        return True
    current = connection.execute(sa.select(holder_column, process_column).where(which)).first()
    if current is None or not process_is_gone(current[1]):
        return False
    taken = connection.execute(
        sa.update(table)
        .where(which, holder_column == current[0], process_column == current[1])
        .values(values)
    )
    return taken.rowcount == 1


def _insert(connection: sa.Connection, table: sa.Table) -> Any:
    """The connection's dialect's INSERT, which has ``on_conflict_do_…``. Imported on
    the first write: a SQLite reader does not pay for the PostgreSQL dialect."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _column_values(
    fields: dict[str, Any], columns: frozenset[str] = _RECORD_FIELDS, of: str = "a request"
) -> dict[str, Any]:
    """A record's fields as column values (a status as its text, a model as JSON)."""
    if unknown := set(fields) - columns:
        raise ValueError(f"not columns of {of}: {sorted(unknown)}")
    return {k: _column_value(v) for k, v in fields.items()}


def _column_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_column_value(item) for item in value]
    return value


def _revision_values(fields: dict[str, Any]) -> dict[str, Any]:
    return _column_values(fields, _REVISION_FIELDS, "a revision")


def _get_revision(connection: sa.Connection, request_id: int, revision: int) -> RevisionRecord:
    row = connection.execute(
        sa.select(revisions).where(
            revisions.c.request_id == request_id, revisions.c.revision == revision
        )
    ).one()
    return RevisionRecord.model_validate(dict(row._mapping))


def _aware(moment: datetime) -> datetime:
    """SQLite keeps no time zone; every timestamp appgen writes is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _get(connection: sa.Connection, request_id: int) -> RequestRecord | None:
    row = connection.execute(sa.select(requests).where(requests.c.request_id == request_id))
    found = row.first()
    return _record(found) if found else None


def _record(row: sa.Row[Any]) -> RequestRecord:
    return RequestRecord.model_validate(dict(row._mapping))
