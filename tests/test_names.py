"""File names that are not valid UTF-8, end to end: published as bytes, reported escaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocks import defaults
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish

pytestmark = pytest.mark.usefixtures("flow_env")


@pytest.fixture
def byte_named_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `command` agent that writes the template app plus two files whose names are
    not UTF-8: a log (left out by *.log) and a data file (kept)."""
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        f'"{sys.executable}" -m generator --agent template'
        " && printf x > \"$(printf 'data-\\377.txt')\""
        " && printf x > \"$(printf 'err-\\377.log')\"",
    )


def test_a_name_that_is_not_utf8_is_published_as_bytes(byte_named_agent, tmp_path: Path):
    outcome = generate_and_publish("Build me a counter app")
    assert outcome.status is RequestStatus.PUBLISHED, outcome.error
    assert outcome.repo_url is not None and outcome.request_id is not None
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", outcome.repo_url, str(clone)], check=True)
    tracked = subprocess.run(
        ["git", "-C", str(clone), "ls-files", "-z"], check=True, capture_output=True
    ).stdout.split(b"\0")
    assert b"data-\xff.txt" in tracked and b"err-\xff.log" not in tracked
    with open(os.fsencode(clone) + b"/data-\xff.txt", "rb") as handle:
        assert handle.read() == b"x"
    row = defaults.database(Settings()).get(outcome.request_id)
    assert row is not None
    assert (row.status, row.commit_sha, row.error) == (
        RequestStatus.PUBLISHED,
        outcome.commit_sha,
        None,
    )
    assert row.commit_sha
