"""The requests database: one row per request, SQLite by default, any SQLAlchemy URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.errors import DatabaseError
from core.models import RequestRecord, RequestStatus


def _now() -> datetime:
    return datetime.now(UTC)


class _Base(DeclarativeBase):
    pass


class RequestRow(_Base):
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
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), default=_now, onupdate=_now
    )


_RECORD_FIELDS = frozenset(RequestRecord.model_fields) - {"request_id", "created_at", "updated_at"}


class Database(Block):
    """The table of requests and where they were published.

    Example:
        ```python
        from blocks.database import Database

        database = Database.load("BLOCK_NAME")
        print(database.get(42))
        ```
    """

    _block_type_name = "Appgen Database"
    _block_type_slug = "appgen-database"
    _description = "SQLAlchemy database recording each request's status and repository."

    url: SecretStr = Field(
        description="SQLAlchemy URL of the database.",
        examples=["sqlite:////home/me/.appgen/appgen.db", "postgresql+psycopg://u:p@db/appgen"],
    )
    _engine: sa.Engine | None = PrivateAttr(default=None)

    def create_request(
        self, prompt: str, app_name: str | None = None, flow_run_id: str | None = None
    ) -> RequestRecord:
        """Insert a new pending request and return it with its assigned id."""
        with self._session() as session:
            row = RequestRow(
                prompt=prompt,
                app_name=app_name,
                flow_run_id=flow_run_id,
                status=RequestStatus.PENDING.value,
            )
            session.add(row)
            session.flush()
            return _record(row)

    def upsert(self, request_id: int, **fields: Any) -> RequestRecord:
        """Insert or update the request's row with the given fields."""
        unknown = set(fields) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"not columns of a request: {sorted(unknown)}")
        with self._session() as session:
            row = session.get(RequestRow, request_id, with_for_update=True)
            if row is None:
                row = RequestRow(request_id=request_id, prompt=fields.get("prompt", ""))
                session.add(row)
            for name, value in fields.items():
                setattr(row, name, value.value if isinstance(value, RequestStatus) else value)
            row.updated_at = _now()
            session.flush()
            return _record(row)

    def get(self, request_id: int) -> RequestRecord | None:
        with self._session() as session:
            row = session.get(RequestRow, request_id)
            return _record(row) if row else None

    def find_by_flow_run(self, flow_run_id: str) -> RequestRecord | None:
        """The request a flow run is (or was last) working on."""
        with self._session() as session:
            row = session.scalars(
                sa.select(RequestRow).where(RequestRow.flow_run_id == flow_run_id)
            ).first()
            return _record(row) if row else None

    def all(self) -> list[RequestRecord]:
        with self._session() as session:
            rows = session.scalars(sa.select(RequestRow).order_by(RequestRow.request_id))
            return [_record(row) for row in rows]

    @contextmanager
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
            url = sa.make_url(self.url.get_secret_value())
            try:
                if url.get_backend_name() == "sqlite" and url.database not in (
                    None,
                    "",
                    ":memory:",
                ):
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(url)
                _Base.metadata.create_all(engine)
            except ModuleNotFoundError as exc:
                raise DatabaseError(
                    f"the driver for {self.display_url()} is not installed ({exc.name}); "
                    "for PostgreSQL: pip install 'appgen-orchestrator[postgres]'"
                ) from exc
            except (OSError, SQLAlchemyError) as exc:
                raise DatabaseError(
                    f"cannot open the database {self.display_url()}: {exc}"
                ) from exc
            self._engine = engine
        return self._engine

    def display_url(self) -> str:
        """The URL with its password masked, for messages."""
        return sa.make_url(self.url.get_secret_value()).render_as_string(hide_password=True)


def _record(row: RequestRow) -> RequestRecord:
    return RequestRecord.model_validate(row, from_attributes=True)
