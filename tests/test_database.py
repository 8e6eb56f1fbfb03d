"""The requests table on SQLite and PostgreSQL: ids, upserts, claims, migrations,
and concurrent writers that never lose an update."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from blocks.database import Database
from core.errors import DatabaseError
from core.models import RequestStatus


@pytest.fixture
def database(database_url: str) -> Database:
    return Database(url=SecretStr(database_url))


def test_new_requests_get_increasing_ids_and_start_pending(database):
    first = database.create_request("a counter", "counter")
    second = database.create_request("a blog", "blog")
    assert second.request_id == first.request_id + 1
    assert first.status is RequestStatus.PENDING


def test_an_explicit_id_is_never_handed_out_again(database):
    database.upsert(5, prompt="chosen id", status=RequestStatus.PENDING)
    assert [database.create_request(f"next {i}").request_id for i in range(2)] == [6, 7]


def test_upsert_creates_or_updates_and_keeps_untouched_fields(database):
    database.upsert(42, prompt="a shop", app_name="shop", status=RequestStatus.GENERATING)
    record = database.upsert(
        42, status=RequestStatus.PUBLISHED, repo_url="file:///r.git", commit_sha="abc"
    )
    assert (record.prompt, record.app_name, record.status, record.repo_url) == (
        "a shop",
        "shop",
        RequestStatus.PUBLISHED,
        "file:///r.git",
    )
    assert record.updated_at >= record.created_at
    assert [r.request_id for r in database.all()] == [42]
    assert database.get(7) is None


def test_concurrent_writers_lose_no_update(database_url):
    def lifecycle(index: int) -> None:
        own = Database(url=SecretStr(database_url))  # one engine per writer, as in flows
        request_id = 100 + index
        own.upsert(request_id, prompt=f"app {index}", status=RequestStatus.PENDING)
        for status in (RequestStatus.GENERATING, RequestStatus.PUBLISHING):
            own.upsert(request_id, status=status, flow_run_id=f"run-{index}")
        own.upsert(request_id, status=RequestStatus.PUBLISHED, commit_sha=f"sha-{index}")

    def create(index: int) -> int:
        return Database(url=SecretStr(database_url)).create_request(f"new {index}").request_id

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lifecycle, range(20)))
        created = list(pool.map(create, range(20)))
    records = {r.request_id: r for r in Database(url=SecretStr(database_url)).all()}
    for index in range(20):
        record = records[100 + index]
        assert (record.status, record.commit_sha, record.flow_run_id, record.prompt) == (
            RequestStatus.PUBLISHED,
            f"sha-{index}",
            f"run-{index}",
            f"app {index}",
        )
    assert len(set(created)) == 20 and not set(created) & set(range(100, 120))
    assert len(records) == 40


def test_one_claim_at_a_time_and_a_stale_claim_can_be_taken_over(database):
    database.upsert(1, prompt="x", status=RequestStatus.PENDING)
    hour = timedelta(hours=1)
    assert database.claim_generation(1, "run-a", hour) is None
    assert database.claim_generation(1, "run-a", hour) is None  # re-entrant
    assert database.claim_generation(1, "run-b", hour) == "run-a"
    database.release_generation(1, "run-b")  # not the holder: no effect
    assert database.claim_generation(1, "run-b", hour) == "run-a"
    database.release_generation(1, "run-a")
    assert database.claim_generation(1, "run-b", hour) is None
    assert database.claim_generation(1, "run-c", timedelta(0)) is None  # run-b died


def test_migrations_run_once_even_when_many_start_together(database_url):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: Database(url=SecretStr(database_url)).migrate(), range(8)))
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0001"
        assert connection.scalar(sa.text("SELECT count(*) FROM requests")) == 0
    engine.dispose()


def test_the_database_url_password_never_appears_in_errors():
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


def test_an_unsupported_database_says_which_are():
    with pytest.raises(DatabaseError, match="supports SQLite and PostgreSQL"):
        Database(url=SecretStr("mysql://u:p@127.0.0.1/x")).get(1)
