"""The requests database: one row per request. SQLite by default, PostgreSQL in
production, the same code; the schema is managed by alembic migrations
(``core/migrations``), applied automatically and under a lock on first use.

Prefect-free, so that read-only commands (``appgen status``) open it without
importing Prefect; ``blocks.database.Database`` is the same store as a Prefect block.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.errors import DatabaseError
from core.models import LeaseHolder, RequestRecord, RequestStatus
from core.processes import process_is_gone

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The backends appgen supports; each has INSERT … ON CONFLICT.
_BACKENDS = ("postgresql", "sqlite")
_MIGRATION_LOCK_KEY = 0x6170_7067  # pg_advisory_xact_lock key: "appg"


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class RequestRow(Base):
    __tablename__ = "requests"

    request_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    prompt: Mapped[str] = mapped_column(sa.Text)
    app_name: Mapped[str | None] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(20), default=RequestStatus.PENDING.value)
    repo_url: Mapped[str | None] = mapped_column(sa.Text)
    repo_id: Mapped[str | None] = mapped_column(sa.String(64))
    commit_sha: Mapped[str | None] = mapped_column(sa.String(64))
    flow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    # What the launch scanners and the deploy check said (NULL until rendered).
    deployable: Mapped[bool | None] = mapped_column(sa.Boolean)
    deploy_reason: Mapped[str | None] = mapped_column(sa.Text)
    verified: Mapped[str | None] = mapped_column(sa.String(16))
    # Where the last publish went when not main: its branch and pull request.
    branch: Mapped[str | None] = mapped_column(sa.String(255))
    pull_request_url: Mapped[str | None] = mapped_column(sa.Text)
    # The flow run that holds the right to work on this request, its process
    # (host:pid:start) and its last heartbeat.
    claimed_by: Mapped[str | None] = mapped_column(sa.String(64))
    claim_process: Mapped[str | None] = mapped_column(sa.String(300))
    claimed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)


class RequestRunRow(Base):
    """Which request a flow run registered: a retried or rescheduled run finds it again."""

    __tablename__ = "request_runs"

    flow_run_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)


class GeneratorSlotRow(Base):
    """One of the generator slots shared by every worker; held like a claim."""

    __tablename__ = "generator_slots"

    slot: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(sa.String(64))
    holder_process: Mapped[str | None] = mapped_column(sa.String(300))
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


_RECORD_FIELDS = frozenset(RequestRecord.model_fields) - {"request_id", "created_at", "updated_at"}


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
        unknown = set(fields) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"not columns of a request: {sorted(unknown)}")
        now = _now()
        values = {k: v.value if isinstance(v, RequestStatus) else v for k, v in fields.items()}
        values["updated_at"] = now
        with self._session() as session:
            insert = _upsert_statement(session, RequestRow).values(
                {"prompt": "", "status": RequestStatus.PENDING.value, "created_at": now}
                | values
                | {"request_id": request_id}
            )
            session.execute(
                insert.on_conflict_do_update(index_elements=[RequestRow.request_id], set_=values)
            )
            if session.bind.dialect.name == "postgresql":
                # An explicit id must not be handed out again by the id sequence.
                session.execute(
                    sa.text(
                        "SELECT setval(pg_get_serial_sequence('requests', 'request_id'), "
                        "GREATEST(:id, (SELECT last_value FROM requests_request_id_seq)))"
                    ),
                    {"id": request_id},
                )
            row = session.get(RequestRow, request_id, populate_existing=True)
            assert row is not None
            return _record(row)

    def create_request(self, prompt: str, app_name: str | None, flow_run_id: str) -> RequestRecord:
        """Insert a new pending request, registered by ``flow_run_id``; return it with
        its assigned id."""
        with self._session() as session:
            row = RequestRow(prompt=prompt, app_name=app_name, status=RequestStatus.PENDING.value)
            session.add(row)
            session.flush()
            session.add(RequestRunRow(flow_run_id=flow_run_id, request_id=row.request_id))
            return _record(row)

    def link_flow_run(self, flow_run_id: str, request_id: int) -> None:
        """Remember that ``flow_run_id`` works on ``request_id`` (first link wins)."""
        with self._session() as session:
            insert = _upsert_statement(session, RequestRunRow).values(
                flow_run_id=flow_run_id, request_id=request_id, created_at=_now()
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["flow_run_id"]))

    def request_of_flow_run(self, flow_run_id: str) -> RequestRecord | None:
        """The request this flow run registered, whichever attempt of it asks."""
        with self._session() as session:
            row = session.scalars(
                sa.select(RequestRow)
                .join(RequestRunRow, RequestRunRow.request_id == RequestRow.request_id)
                .where(RequestRunRow.flow_run_id == flow_run_id)
            ).first()
            return _record(row) if row else None

    def claim_request(
        self, request_id: int, holder: LeaseHolder, stale_after: timedelta
    ) -> str | None:
        """Claim the right to work on this request. Returns None when ``holder`` holds
        it now (and is recorded as the request's flow run), else the flow run that
        does. A claim whose process is gone or whose heartbeat is older than
        ``stale_after`` is taken over."""
        with self._session() as session:
            taken = _take_lease(
                session,
                _CLAIM,
                RequestRow.request_id == request_id,
                holder,
                stale_after,
                extra={"flow_run_id": holder.flow_run_id},
            )
            if taken:
                return None
            held_by = session.scalar(
                sa.select(RequestRow.claimed_by).where(RequestRow.request_id == request_id)
            )
            return held_by or "an unknown flow run"

    def acquire_slot(self, holder: LeaseHolder, slots: int, stale_after: timedelta) -> int | None:
        """Take one of ``slots`` generator slots for ``holder``; None while all are held
        by live holders. Slots held by dead processes or stale heartbeats are taken over."""
        with self._session() as session:
            insert = _upsert_statement(session, GeneratorSlotRow)
            session.execute(
                insert.values([{"slot": n} for n in range(1, slots + 1)]).on_conflict_do_nothing(
                    index_elements=["slot"]
                )
            )
        for slot in range(1, slots + 1):
            with self._session() as session:
                if _take_lease(session, _SLOT, GeneratorSlotRow.slot == slot, holder, stale_after):
                    return slot
        return None

    def release_slot(self, holder: LeaseHolder) -> None:
        with self._session() as session:
            session.execute(
                sa.update(GeneratorSlotRow)
                .where(GeneratorSlotRow.holder == holder.flow_run_id)
                .values(holder=None, holder_process=None, heartbeat_at=None)
            )

    def held_slots(self) -> list[str]:
        """The flow runs holding a generator slot now (for status and tests)."""
        with self._session() as session:
            return list(
                session.scalars(
                    sa.select(GeneratorSlotRow.holder).where(GeneratorSlotRow.holder.is_not(None))
                )
            )

    def heartbeat(self, holder: LeaseHolder) -> None:
        """Renew every lease ``holder`` has: its request claim and its generator slot."""
        now = _now()
        with self._session() as session:
            session.execute(
                sa.update(RequestRow)
                .where(RequestRow.claimed_by == holder.flow_run_id)
                .values(claimed_at=now)
            )
            session.execute(
                sa.update(GeneratorSlotRow)
                .where(GeneratorSlotRow.holder == holder.flow_run_id)
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
        unknown = set(fields) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"not columns of a request: {sorted(unknown)}")
        values: dict[str, Any] = {
            k: v.value if isinstance(v, RequestStatus) else v for k, v in fields.items()
        }
        if keep_published:
            published = RequestRow.status == RequestStatus.PUBLISHED.value
            values = {
                name: sa.case((published, getattr(RequestRow, name)), else_=value)
                for name, value in values.items()
            }
        release = {"claimed_by": None, "claim_process": None, "claimed_at": None}
        with self._session() as session:
            updated = session.execute(
                sa.update(RequestRow)
                .where(RequestRow.request_id == request_id, RequestRow.flow_run_id == flow_run_id)
                .values(values | release | {"updated_at": _now()})
            )
            if updated.rowcount != 1:
                return None
            row = session.get(RequestRow, request_id, populate_existing=True)
            return _record(row) if row else None

    def repair_abandoned(self, lease: timedelta) -> list[RequestRecord]:
        """Mark ``failed`` the unfinished requests whose claim holder is gone (its
        process died on this host, or its heartbeat is older than ``lease``), release
        their claims, and free generator slots held by such holders."""
        stale_before = _now() - lease
        repaired = []
        with self._session() as session:
            held = session.execute(
                sa.select(
                    RequestRow.request_id, RequestRow.claimed_by, RequestRow.claim_process
                ).where(RequestRow.claimed_by.is_not(None))
            ).all()
        for request_id, holder, process in held:
            with self._session() as session:
                row = session.get(RequestRow, request_id)
                if row is None or row.claimed_by != holder:
                    continue
                silent = row.claimed_at is not None and _aware(row.claimed_at) < stale_before
                if not (silent or process_is_gone(process)):
                    continue
                status = RequestStatus(row.status)
                if not status.is_final:
                    row.status = RequestStatus.FAILED.value
                    row.error = (
                        f"abandoned: flow run {holder} stopped without recording an outcome "
                        f"({'its heartbeat stopped' if silent else 'its process is gone'}); "
                        "publish the request again to finish it"
                    )
                row.claimed_by = row.claim_process = row.claimed_at = None
                row.updated_at = _now()
                session.flush()
                repaired.append(_record(row))
        with self._session() as session:
            slots = session.execute(
                sa.select(GeneratorSlotRow).where(GeneratorSlotRow.holder.is_not(None))
            ).scalars()
            for slot in slots:
                silent = slot.heartbeat_at is not None and _aware(slot.heartbeat_at) < stale_before
                if silent or process_is_gone(slot.holder_process):
                    slot.holder = slot.holder_process = slot.heartbeat_at = None
        return repaired

    def get(self, request_id: int) -> RequestRecord | None:
        with self._session() as session:
            row = session.get(RequestRow, request_id)
            return _record(row) if row else None

    def all(self) -> list[RequestRecord]:
        with self._session() as session:
            rows = session.scalars(sa.select(RequestRow).order_by(RequestRow.request_id))
            return [_record(row) for row in rows]

    def migrate(self) -> None:
        """Bring the schema up to date (alembic ``upgrade head``); safe to run
        concurrently and repeatedly."""
        self._get_engine()

    def display_url(self) -> str:
        """The URL with its password masked, for messages."""
        return sa.make_url(self.url.get_secret_value()).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self._get_engine(), expire_on_commit=False) as session, session.begin():
                yield session
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
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # Concurrent flow runs share the file: wait for the write lock rather than fail.
    return sa.create_engine(url, connect_args={"timeout": 60})


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

    table: type[Base]
    holder: sa.orm.InstrumentedAttribute
    process: sa.orm.InstrumentedAttribute
    heartbeat: sa.orm.InstrumentedAttribute


_CLAIM = _LeaseColumns(
    RequestRow, RequestRow.claimed_by, RequestRow.claim_process, RequestRow.claimed_at
)
_SLOT = _LeaseColumns(
    GeneratorSlotRow,
    GeneratorSlotRow.holder,
    GeneratorSlotRow.holder_process,
    GeneratorSlotRow.heartbeat_at,
)


def _take_lease(
    session: Session,
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
    holder_column, process_column, heartbeat_column = lease.holder, lease.process, lease.heartbeat
    now = _now()
    values = {
        holder_column.key: holder.flow_run_id,
        process_column.key: holder.process,
        heartbeat_column.key: now,
    } | (extra or {})
    taken = session.execute(
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
    current = session.execute(sa.select(holder_column, process_column).where(which)).first()
    if current is None or not process_is_gone(current[1]):
        return False
    taken = session.execute(
        sa.update(table)
        .where(which, holder_column == current[0], process_column == current[1])
        .values(values)
    )
    return taken.rowcount == 1


def _upsert_statement(session: Session, table: type[Base]) -> Any:
    """The session's dialect's INSERT, which has ``on_conflict_do_…``. Imported on the
    first write: the PostgreSQL dialect alone costs a SQLite reader 50-150 ms."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _aware(moment: datetime) -> datetime:
    """SQLite keeps no time zone; every timestamp appgen writes is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _record(row: RequestRow) -> RequestRecord:
    return RequestRecord.model_validate(row, from_attributes=True)
