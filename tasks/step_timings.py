"""How long each step of a run took, kept in this process as its task run ends (a
state hook), for the run's summary: no round trips to the Prefect API, which records
task runs only a moment later, from events."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun


@dataclass(frozen=True)
class StepTiming:
    name: str  # the task run's name, e.g. git_push-3f2
    step: str  # the task's name, e.g. git_push
    state: str  # Completed, Cached …
    started: datetime
    seconds: float


_timings: defaultdict[str, list[StepTiming]] = defaultdict(list)
_lock = threading.Lock()


def remember_timing(task: Task[..., Any], task_run: TaskRun, state: State) -> None:
    """State hook (on completion and on failure) of each step."""
    timing = StepTiming(
        name=task_run.name,
        step=task.name,
        state=state.name or state.type.value,
        started=task_run.start_time or state.timestamp,
        seconds=task_run.total_run_time.total_seconds(),
    )
    with _lock:
        _timings[str(task_run.flow_run_id)].append(timing)


def timings_of(flow_run_id: str) -> list[StepTiming]:
    """The steps this flow run has finished so far in this process, in order; forgotten
    here once read."""
    with _lock:
        return sorted(_timings.pop(str(flow_run_id), []), key=lambda timing: timing.started)
