"""Runs at once: one generation per request, the generator slot limit, and twenty
flows against PostgreSQL that lose no status update."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blocks import defaults
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish
from tests.conftest import agent_runs, reset_postgres

pytestmark = pytest.mark.usefixtures("flow_env")


def timed_agent(monkeypatch, tmp_path: Path, seconds: float) -> Path:
    """An agent that records its run and its start and end times, then writes the app."""
    log = tmp_path / "agent-spans"
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")  # it logs outside its app dir
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        f'echo "$APPGEN_REQUEST_ID $(date +%s.%N) start" >> "{log}"; sleep {seconds}; '
        f'"{sys.executable}" -m generator --agent template; '
        f'echo "$APPGEN_REQUEST_ID $(date +%s.%N) end" >> "{log}"',
    )
    return log


def spans(log: Path) -> list[tuple[float, float]]:
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        request, at, mark = line.split()
        (starts if mark == "start" else ends).setdefault(request, []).append(float(at))
    return [(s, e) for r in starts for s, e in zip(starts[r], ends[r], strict=True)]


def test_two_runs_of_one_request_at_once_generate_once(monkeypatch, tmp_path, counting_agent):
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        f'echo "$APPGEN_REQUEST_ID" >> "{counting_agent}"; sleep 2; '
        f'"{sys.executable}" -m generator --agent template',
    )
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(lambda _: generate_and_publish("a counter", request_id=31), range(2))
        )
    assert agent_runs(counting_agent) == ["31"]
    assert [o.status for o in outcomes] == [RequestStatus.PUBLISHED] * 2
    assert outcomes[0].commit_sha == outcomes[1].commit_sha  # one commit, pushed once
    row = defaults.database(Settings()).get(31)
    assert row is not None
    assert row.status is RequestStatus.PUBLISHED


def test_generations_wait_for_a_free_generator_slot(monkeypatch, tmp_path):
    log = timed_agent(monkeypatch, tmp_path, seconds=1.5)
    monkeypatch.setenv("APPGEN_GENERATOR_SLOTS", "1")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda rid: generate_and_publish(f"app {rid}", request_id=rid), (41, 42)))
    (_, first_end), (second_start, _) = sorted(spans(log))
    assert second_start >= first_end  # one slot: the second waited for the first
    assert defaults.database(Settings()).held_slots() == []


def test_twenty_flows_at_once_against_postgresql_lose_no_update(monkeypatch, postgres_url):
    reset_postgres(postgres_url)
    monkeypatch.setenv("APPGEN_DATABASE_URL", postgres_url)
    requests = range(51, 71)
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(
            pool.map(lambda rid: generate_and_publish(f"app {rid}", request_id=rid), requests)
        )
    records = {r.request_id: r for r in defaults.database(Settings()).all()}
    for outcome in outcomes:
        assert outcome.request_id is not None
        record = records[outcome.request_id]
        assert (record.status, record.commit_sha, record.repo_url, record.error) == (
            RequestStatus.PUBLISHED,
            outcome.commit_sha,
            outcome.repo_url,
            None,
        )
        assert record.claimed_by is None  # every claim released
    assert sorted(records) == list(requests)
