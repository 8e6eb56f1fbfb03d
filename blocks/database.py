"""The requests database as a Prefect block: ``core.database.RequestStore`` (all the
SQL, tables and migrations) with its URL saved, as a secret, in the block."""

from __future__ import annotations

import sqlalchemy as sa
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from core.database import RequestStore


class Database(Block, RequestStore):
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
        description="SQLAlchemy URL of the database (SQLite or PostgreSQL).",
        examples=["sqlite:////home/me/.appgen/appgen.db", "postgresql+psycopg://u:p@db/appgen"],
    )
    _engine: sa.Engine | None = PrivateAttr(default=None)
