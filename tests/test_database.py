"""The requests table on SQLite and PostgreSQL: ids, upserts, claims, migrations,
and concurrent writers that never lose an update."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from blocks.database import Database
from core.errors import DatabaseError
from core.models import LeaseHolder, RequestStatus
from core.processes import current_process


@pytest.fixture
def database(database_url: str) -> Database:
    return Database(url=SecretStr(database_url))


def test_new_requests_get_increasing_ids_and_start_pending(database):
    first = database.create_request("a counter", "counter", "run-1")
    second = database.create_request("a blog", "blog", "run-2")
    assert second.request_id == first.request_id + 1
    assert first.status is RequestStatus.PENDING


def test_an_explicit_id_is_never_handed_out_again(database):
    database.upsert(5, prompt="chosen id", status=RequestStatus.PENDING)
    assert [
        database.create_request(f"next {i}", None, f"run-{i}").request_id for i in range(2)
    ] == [6, 7]


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
        own = Database(url=SecretStr(database_url))
        return own.create_request(f"new {index}", None, f"new-{index}").request_id

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


def test_revisions_registered_at_once_get_numbers_of_their_own(database_url):
    store = Database(url=SecretStr(database_url))
    store.upsert(7, prompt="a counter", status=RequestStatus.PUBLISHED, commit_sha="c1")
    store.put_revision(7, 1, "a counter", "run-0", status=RequestStatus.PUBLISHED)

    def register(index: int) -> int:
        own = Database(url=SecretStr(database_url))
        return own.add_revision(7, f"follow-up {index}", f"run-{index}").revision

    with ThreadPoolExecutor(8) as pool:
        numbers = sorted(pool.map(register, range(1, 9)))
    assert numbers == list(range(2, 10))
    assert [r.revision for r in store.revisions(7)] == list(range(1, 10))
    found = store.revision_of_flow_run("run-4")
    assert found is not None and found.prompt == "follow-up 4"


def test_a_runs_unfinished_revisions_end_with_it_and_reap_repairs_abandoned_ones(database):
    database.upsert(8, prompt="a counter", status=RequestStatus.PUBLISHED, commit_sha="c1")
    database.put_revision(8, 1, "a counter", "run-a", status=RequestStatus.PUBLISHED)
    database.add_revision(8, "add a button", "run-b")
    database.end_revisions("run-a", RequestStatus.FAILED, "crashed")  # its revision is final
    database.end_revisions("run-b", RequestStatus.CANCELLED, "stopped by SIGTERM")
    assert [(r.status, r.error) for r in database.revisions(8)] == [
        (RequestStatus.PUBLISHED, None),
        (RequestStatus.CANCELLED, "stopped by SIGTERM"),
    ]

    database.add_revision(8, "add a log", "run-c")
    assert database.claim_request(8, holder("run-c", dead_process()), timedelta(hours=1)) is None
    database.upsert(8, status=RequestStatus.GENERATING)
    [repaired] = database.repair_abandoned(timedelta(hours=1))
    assert repaired.status is RequestStatus.FAILED
    last = database.revisions(8)[-1]
    assert (last.revision, last.status) == (3, RequestStatus.FAILED)
    assert "abandoned" in (last.error or "")


def holder(run: str, process: str | None = None) -> LeaseHolder:
    return LeaseHolder(flow_run_id=run, process=process or current_process())


def dead_process() -> str:
    """A process id of this host that has just exited."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    return current_process().split(":")[0] + f":{finished.pid}:0"


def test_one_claim_at_a_time_and_a_stale_claim_can_be_taken_over(database):
    database.upsert(1, prompt="x", status=RequestStatus.PENDING)
    hour = timedelta(hours=1)
    assert database.claim_request(1, holder("run-a"), hour) is None
    assert database.claim_request(1, holder("run-a"), hour) is None  # re-entrant
    assert database.claim_request(1, holder("run-b"), hour) == "run-a"
    assert database.finish(1, "run-b", status=RequestStatus.FAILED) is None  # not the holder
    assert database.claim_request(1, holder("run-b"), hour) == "run-a"
    assert database.finish(1, "run-a", status=RequestStatus.FAILED).status is RequestStatus.FAILED
    assert database.claim_request(1, holder("run-b"), hour) is None
    assert database.get(1).flow_run_id == "run-b"
    assert database.claim_request(1, holder("run-c"), timedelta(0)) is None  # run-b went silent


def test_a_claim_whose_process_is_gone_is_taken_over_at_once(database):
    database.upsert(1, prompt="x", status=RequestStatus.PENDING)
    hour = timedelta(hours=1)
    assert database.claim_request(1, holder("killed", dead_process()), hour) is None
    assert database.claim_request(1, holder("next"), hour) is None
    assert database.claim_request(1, holder("live-elsewhere", "other-host:1:1"), hour) == "next"


def test_leases_are_judged_by_the_database_clock_not_a_drifting_workers(postgres_url, monkeypatch):
    """A worker whose clock runs an hour fast must not see a live holder as silent,
    nor make its own lease look fresh for an hour. (PostgreSQL only: SQLite is a file
    on one host, whose clock is that host's.)"""
    import core.database
    from tests.conftest import reset_postgres

    reset_postgres(postgres_url)
    database = Database(url=SecretStr(postgres_url))
    database.upsert(1, prompt="x", status=RequestStatus.PENDING)
    minute = timedelta(minutes=1)
    assert database.claim_request(1, holder("run-a", "other-host:1:1"), minute) is None
    real_now = core.database._now
    monkeypatch.setattr(core.database, "_now", lambda: real_now() + timedelta(hours=1))
    assert database.claim_request(1, holder("run-b", "other-host:2:2"), minute) == "run-a"
    assert database.acquire_slot(holder("run-b", "other-host:2:2"), 1, minute) == 1
    database.heartbeat(holder("run-b", "other-host:2:2"))
    monkeypatch.setattr(core.database, "_now", real_now)
    assert database.acquire_slot(holder("run-c", "other-host:3:3"), 1, minute) is None
    assert database.acquire_slot(holder("run-c", "other-host:3:3"), 1, timedelta(0)) == 1


def test_generator_slots_are_shared_and_die_with_their_holder(database):
    hour = timedelta(hours=1)
    assert database.acquire_slot(holder("a"), 2, hour) == 1
    assert database.acquire_slot(holder("b", "other-host:1:1"), 2, hour) == 2
    assert database.acquire_slot(holder("c"), 2, hour) is None  # both held by live holders
    database.release_slot(holder("a"))
    assert database.acquire_slot(holder("c"), 2, hour) == 1
    assert database.acquire_slot(holder("d", dead_process()), 3, hour) == 3
    assert database.acquire_slot(holder("e"), 3, hour) == 3  # d's process is gone
    assert sorted(database.held_slots()) == ["b", "c", "e"]
    assert database.acquire_slot(holder("f"), 3, timedelta(0)) == 1  # every heartbeat is stale


def test_concurrent_slot_takers_never_share_a_slot(database_url):
    hour = timedelta(hours=1)

    def take(index: int) -> int | None:
        own = Database(url=SecretStr(database_url))
        return own.acquire_slot(holder(f"run-{index}", "other-host:1:1"), 4, hour)

    with ThreadPoolExecutor(10) as pool:
        slots = list(pool.map(take, range(10)))
    taken = [slot for slot in slots if slot is not None]
    assert sorted(taken) == [1, 2, 3, 4]


def test_a_flow_run_finds_the_request_it_registered(database):
    created = database.create_request("a counter", "counter", "run-1")
    database.link_flow_run("run-2", 77)
    database.link_flow_run("run-1", 99)  # the first link wins
    assert database.request_of_flow_run("run-1").request_id == created.request_id
    assert database.request_of_flow_run("run-3") is None


def test_migrations_run_once_even_when_many_start_together(database_url):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: Database(url=SecretStr(database_url)).migrate(), range(8)))
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0007"
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


def test_the_tables_the_models_declare_are_the_schema_the_migrations_make(database):
    """A request field is declared once (core.models.RequestOutcome or RequestRecord)
    and its column derived from it: adding one without its migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from core.database import metadata

    database.migrate()
    with sa.create_engine(database.url.get_secret_value()).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_every_recorded_field_is_in_status_and_publish_json():
    from core.models import PublishOutcome, RequestOutcome, RequestRecord

    assert set(RequestOutcome.model_fields) <= set(RequestRecord.model_fields)
    assert set(RequestOutcome.model_fields) <= set(PublishOutcome.model_fields)
