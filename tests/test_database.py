"""The requests table: ids, upserts and the status a request moves through."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from blocks.database import Database
from core.errors import DatabaseError
from core.models import RequestStatus


@pytest.fixture
def database(tmp_path) -> Database:
    return Database(url=SecretStr(f"sqlite:///{tmp_path}/sub/dir/appgen.db"))


def test_new_requests_get_increasing_ids_and_start_pending(database):
    first = database.create_request("a counter", "counter")
    second = database.create_request("a blog", "blog")
    assert (first.request_id, second.request_id) == (1, 2)
    assert first.status is RequestStatus.PENDING


def test_upsert_creates_or_updates_and_keeps_untouched_fields(database):
    database.upsert(42, prompt="a shop", app_name="shop", status=RequestStatus.GENERATING)
    record = database.upsert(
        42, status=RequestStatus.PUBLISHED, repo_url="file:///r.git", commit_sha="abc"
    )
    assert (record.prompt, record.app_name, record.status) == (
        "a shop",
        "shop",
        RequestStatus.PUBLISHED,
    )
    assert record.updated_at >= record.created_at
    assert [r.request_id for r in database.all()] == [42]
    assert database.get(7) is None


def test_the_database_url_password_never_appears_in_errors(tmp_path):
    broken = Database(url=SecretStr("postgresql+psycopg://user:hunter2@127.0.0.1:1/nope"))
    with pytest.raises(DatabaseError) as failure:
        broken.get(1)
    assert "hunter2" not in str(failure.value)
    assert "hunter2" not in repr(broken)


def test_an_unwritable_location_is_a_database_error(tmp_path):
    (tmp_path / "file").write_text("x")
    database = Database(url=SecretStr(f"sqlite:///{tmp_path}/file/appgen.db"))
    with pytest.raises(DatabaseError, match="cannot open the database"):
        database.get(1)
