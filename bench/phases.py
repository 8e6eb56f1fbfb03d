#!/usr/bin/env python3
"""Where the time of a publish goes, phase by phase, next to the targets of issue #11.

Every figure is the median of --repeat measurements taken in this run:

  imports        `python -c "import X"` for appgen.cli, flows.publish and prefect,
                 minus `python -c pass`; the largest first imports under flows.publish
  API start-up   Prefect's temporary server alone (what a publish without
                 PREFECT_API_URL starts), in a fresh and in an existing PREFECT_HOME
  embedded       `appgen publish`, template agent, fresh APPGEN_HOME and PREFECT_HOME,
                 no PREFECT_API_URL: the README's first command
  server         the same against a running `prefect server start`
  managed        the same with the server `appgen server start` manages, when the
                 installed appgen has that command (it is stopped at the end): in its
                 warm runner, then in the caller's process (APPGEN_RUNNER=off); and
                 `appgen status` in the runner
  cached         generate_and_publish in this machine's Python, against the running
                 server, on the seed-size app with a cached generation and an unchanged
                 tree; then the same steps as plain calls (what flow_overhead.py did)
  status         `appgen status` in its own process (APPGEN_RUNNER=off) against a
                 plain SQLite read in a fresh interpreter
  leases         claim and generator-slot round trips, as plain calls on SQLite

A run's timeline comes from the Prefect API after the run: the flow- and task-run
state timestamps, and the generator's own time from the run log. An embedded run's
API is gone when its process exits, so a server is started on its PREFECT_HOME to
read it. The phases of one run add up to its wall time.

    python bench/phases.py [--repeat 3] [--skip-managed]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.prefect_server import PrefectServer  # noqa: E402

MAKE_WORKSPACE = ROOT.parent / "shared" / "bench" / "make_workspace.py"
PROMPT = "Build me a counter app"
GENERATION_LOG = re.compile(r"generation finished in ([0-9.]+)s")
API_URL_IN_TEXT = re.compile(r"https?://(?:127\.0\.0\.1|localhost):\d+(?:/api)?")
# The console script pip installed beside this Python, not a version manager's shim
# (pyenv's adds its own start-up to every figure).
_SCRIPT = Path(sys.executable).parent / "appgen"
APPGEN = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "appgen"]

# Prefect gives its temporary server 20 s to answer, which a busy 2-core machine
# exceeds (the publish then fails with "Timed out while attempting to connect to
# ephemeral Prefect API server"): the benchmark waits longer, to time what it takes.
EPHEMERAL_STARTUP_TIMEOUT = "120"

# Issue #11's targets.
TARGET_EMBEDDED_SECONDS = 3.0
TARGET_STATUS_SECONDS = 0.3
TARGET_FLOW_OVERHEAD_SECONDS = 0.3
TARGET_FLOW_RATIO = 5.0

# The Database methods a run calls: their time inside a run is the lease and row
# bookkeeping that is not a task's own work.
DATABASE_METHODS = (
    "claim_request",
    "acquire_slot",
    "release_slot",
    "heartbeat",
    "finish",
    "upsert",
    "get",
    "create_request",
    "link_flow_run",
    "request_of_flow_run",
)


# ---------------------------------------------------------------------------------
# Timelines


@dataclass
class TaskSpan:
    """One task run's state timestamps (epoch seconds)."""

    step: str  # the task's name, numbered when a flow calls it more than once
    pending: float
    running: float
    final: float


@dataclass
class RunTimeline:
    """One flow run, from the moment its caller started to the moment it returned."""

    started: float
    exited: float
    flow_pending: float
    flow_running: float
    flow_final: float
    tasks: list[TaskSpan]
    generator_seconds: float

    def phases(self) -> dict[str, float]:
        """Seconds per phase; they add up to the wall time."""
        first, last = self.tasks[0], self.tasks[-1]
        gaps = sum(b.pending - a.final for a, b in zip(self.tasks, self.tasks[1:], strict=False))
        running = sum(t.final - t.running for t in self.tasks)
        return {
            "start → flow run created": self.flow_pending - self.started,
            "flow run created → running": self.flow_running - self.flow_pending,
            "flow running → first task": first.pending - self.flow_running,
            "tasks: Prefect before each body": sum(t.running - t.pending for t in self.tasks),
            "tasks: running, generator's own time": self.generator_seconds,
            "tasks: running, the rest": running - self.generator_seconds,
            "between tasks (flow code, plain calls)": gaps,
            "last task → flow run final": self.flow_final - last.final,
            "flow run final → caller done": self.exited - self.flow_final,
        }

    @property
    def wall(self) -> float:
        return self.exited - self.started

    def task_phases(self) -> dict[str, tuple[float, float]]:
        """Per task: (Pending → Running, Running → final) in seconds."""
        return {t.step: (t.running - t.pending, t.final - t.running) for t in self.tasks}


def read_timeline(api_url: str, flow_run_id: str, started: float, exited: float) -> RunTimeline:
    """The run's timeline as the API recorded it. Task-run states arrive as events a
    moment after they happen: wait until every task run is final."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 30
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while True:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            flow_states = client.read_flow_run_states(flow_run_id)
            done = all(r.state is not None and r.state.is_final() for r in task_runs)
            if (done and any(s.is_final() for s in flow_states)) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        spans = []
        for run in task_runs:
            states = client.read_task_run_states(run.id)
            spans.append(
                TaskSpan(
                    step=run.task_key.rsplit("-", 1)[0],
                    pending=_first(states, "PENDING", default=states[0].timestamp),
                    running=_first(states, "RUNNING", default=states[0].timestamp),
                    final=max(s.timestamp for s in states if s.is_final()).timestamp(),
                )
            )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    generated = [float(m[1]) for log in logs if (m := GENERATION_LOG.search(log.message))]
    spans.sort(key=lambda span: span.pending)
    seen: dict[str, int] = {}
    for span in spans:  # update_db runs three times: update_db, update_db #2, …
        seen[span.step] = seen.get(span.step, 0) + 1
        if seen[span.step] > 1:
            span.step = f"{span.step} #{seen[span.step]}"
    return RunTimeline(
        started=started,
        exited=exited,
        flow_pending=_first(flow_states, "PENDING", default=flow_states[0].timestamp),
        flow_running=_first(flow_states, "RUNNING", default=flow_states[0].timestamp),
        flow_final=max(s.timestamp for s in flow_states if s.is_final()).timestamp(),
        tasks=spans,
        generator_seconds=sum(generated),
    )


def _first(states: list[Any], state_type: str, *, default: datetime) -> float:
    moment = min((s.timestamp for s in states if s.type.value == state_type), default=default)
    return moment.timestamp()


# ---------------------------------------------------------------------------------
# Processes


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any APPGEN_* or PREFECT_* variable: the
    defaults a newcomer has, plus ``settings``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("APPGEN_", "PREFECT_"))}
    return kept | settings


def timed_run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run ``command``; return when it started and ended (epoch seconds) and its stdout.
    A failure stops the benchmark with the command's output."""
    started = time.time()
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    ended = time.time()
    if completed.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} exited {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
        )
    return started, ended, completed.stdout


def python_wall(code: str, env: dict[str, str], cwd: Path) -> float:
    started, ended, _ = timed_run([sys.executable, "-c", code], env, cwd)
    return ended - started


def publish(env: dict[str, str], cwd: Path, prompt: str = PROMPT) -> tuple[float, float, str]:
    """`appgen publish --json`: start, end and the flow run's id."""
    started, ended, stdout = timed_run([*APPGEN, "publish", "--prompt", prompt, "--json"], env, cwd)
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["status"] != "published":
        raise SystemExit(f"the benchmark's publish failed: {result['error']}")
    return started, ended, result["flow_run_id"]


# ---------------------------------------------------------------------------------
# Measurements


@dataclass
class Imports:
    seconds: dict[str, float]  # module → import time above a bare interpreter
    largest: list[tuple[str, float]]  # top-level packages imported under flows.publish


def measure_imports(repeat: int, work: Path) -> Imports:
    env = clean_environment(PREFECT_HOME=str(work / "imports-prefect"))
    bare = statistics.median(python_wall("pass", env, work) for _ in range(repeat))
    seconds = {
        module: statistics.median(python_wall(f"import {module}", env, work) for _ in range(repeat))
        - bare
        for module in ("appgen.cli", "flows.publish", "prefect")
    }
    profile = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import flows.publish"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    cumulative: dict[str, float] = {}
    for line in profile.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if "." not in name and name not in cumulative:  # a package's first import
            cumulative[name] = int(parts[1]) / 1e6
    largest = sorted(cumulative.items(), key=lambda item: -item[1])[:8]
    return Imports(seconds, largest)


_API_START_UP = """
import json, time
started = time.perf_counter()
from prefect.server.api.server import SubprocessASGIServer
imported = time.perf_counter()
server = SubprocessASGIServer()
server.start()
up = time.perf_counter()
server.stop()
print(json.dumps({"start": up - imported, "stop": time.perf_counter() - up}))
"""


def measure_api_start_up(repeat: int, work: Path) -> dict[str, float]:
    """Prefect's temporary server alone: start (health check answered) and stop, in
    a fresh PREFECT_HOME (database created) and again in the same one."""
    figures: dict[str, list[float]] = {}
    for attempt in range(repeat):
        home = work / f"api-{attempt}"
        env = clean_environment(
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=EPHEMERAL_STARTUP_TIMEOUT,
        )
        for when in ("fresh PREFECT_HOME", "existing PREFECT_HOME"):
            _, _, stdout = timed_run([sys.executable, "-c", _API_START_UP], env, work)
            for what, seconds in json.loads(stdout).items():
                figures.setdefault(f"{what}, {when}", []).append(seconds)
    return {what: statistics.median(values) for what, values in figures.items()}


@dataclass
class EmbeddedRuns:
    timelines: list[RunTimeline]
    status_seconds: float  # `appgen status`
    status_json_seconds: float  # `appgen status 1 --json`
    sqlite_read_seconds: float  # the same rows read by a bare interpreter


def measure_embedded(repeat: int, work: Path, managed_command: bool) -> EmbeddedRuns:
    """The README's first command on a fresh machine. Older appgen runs it on
    Prefect's temporary API, whose database stays in PREFECT_HOME: a server started
    there afterwards reads the timeline. Newer appgen starts its managed server under
    APPGEN_HOME and leaves it running: the timeline is read from it, then it is
    stopped."""
    timelines, status, status_json, sqlite_read = [], [], [], []
    for attempt in range(repeat):
        appgen_home, prefect_home = work / f"embedded-{attempt}", work / f"embedded-{attempt}-p"
        prefect_home.mkdir(parents=True)
        env = clean_environment(
            APPGEN_HOME=str(appgen_home),
            PREFECT_HOME=str(prefect_home),
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=EPHEMERAL_STARTUP_TIMEOUT,
        )
        with contextlib.ExitStack() as stack:
            if managed_command:
                stack.callback(stop_managed_server, env, work)
            started, ended, flow_run_id = publish(env, work)
            # In the caller's process: the managed server's runner is timed later.
            alone = env | {"APPGEN_RUNNER": "off"}
            status.append(python_free_wall([*APPGEN, "status"], alone, work))
            status_json.append(python_free_wall([*APPGEN, "status", "1", "--json"], alone, work))
            database = appgen_home / "appgen.db"
            read = (
                f"import sqlite3; sqlite3.connect({str(database)!r})"
                ".execute('select * from requests').fetchall()"
            )
            sqlite_read.append(python_wall(read, env, work))
            api_url = managed_api_url(env, work) if managed_command else None
            if api_url is None:
                api_url = stack.enter_context(PrefectServer(prefect_home)).api_url
            timelines.append(read_timeline(api_url, flow_run_id, started, ended))
    return EmbeddedRuns(
        timelines,
        statistics.median(status),
        statistics.median(status_json),
        statistics.median(sqlite_read),
    )


def python_free_wall(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started, ended, _ = timed_run(command, env, cwd)
    return ended - started


def measure_against_server(api_url: str, repeat: int, work: Path) -> list[RunTimeline]:
    timelines = []
    for attempt in range(repeat):
        appgen_home, prefect_home = work / f"server-{attempt}", work / f"server-{attempt}-p"
        env = clean_environment(
            APPGEN_HOME=str(appgen_home), PREFECT_HOME=str(prefect_home), PREFECT_API_URL=api_url
        )
        started, ended, flow_run_id = publish(env, work)
        timelines.append(read_timeline(api_url, flow_run_id, started, ended))
    return timelines


@dataclass
class ManagedRuns:
    start_seconds: float
    walls: list[float]
    timelines: list[RunTimeline]
    api_url: str | None
    warm: bool  # the commands ran in the warm runner (appgen/runner.py)
    status_seconds: float
    status_json_seconds: float
    cold_timelines: list[RunTimeline]  # APPGEN_RUNNER=off: in the caller's process


def appgen_has_server_command(work: Path) -> bool:
    probe = subprocess.run(
        [*APPGEN, "server", "--help"],
        env=clean_environment(APPGEN_HOME=str(work / "probe")),
        cwd=work,
        capture_output=True,
    )
    return probe.returncode == 0


@contextlib.contextmanager
def managed_server(env: dict[str, str], work: Path) -> Iterator[tuple[float, str | None]]:
    """`appgen server start` … `appgen server stop`: the start-up time and, if
    `appgen server status` names it, the server's API URL."""
    started, ended, _ = timed_run([*APPGEN, "server", "start"], env, work)
    try:
        yield ended - started, managed_api_url(env, work)
    finally:
        stop_managed_server(env, work)


def managed_api_url(env: dict[str, str], work: Path) -> str | None:
    """The API of the server `appgen server status` says runs for this APPGEN_HOME."""
    shown = subprocess.run(
        [*APPGEN, "server", "status"], env=env, cwd=work, capture_output=True, text=True
    )
    if shown.returncode != 0:
        return None
    urls = API_URL_IN_TEXT.findall(shown.stdout + shown.stderr)
    api = [url for url in urls if url.endswith("/api")] or [f"{url}/api" for url in urls]
    return api[0] if api else None


def stop_managed_server(env: dict[str, str], work: Path) -> None:
    subprocess.run([*APPGEN, "server", "stop"], env=env, cwd=work, capture_output=True)


def measure_managed(repeat: int, work: Path) -> ManagedRuns:
    """Publishes and `appgen status` once `appgen server start` has returned and its
    warm runner listens (when this appgen has one); then publishes in the caller's
    own process (APPGEN_RUNNER=off) against the same server."""
    home = work / "managed"
    env = clean_environment(APPGEN_HOME=str(home), PREFECT_HOME=str(work / "managed-p"))
    with managed_server(env, work) as (start_seconds, api_url):
        warm = wait_for_runner(home / "server")
        runs = [publish(env, work, f"{PROMPT} number {n}") for n in range(repeat)]
        status = [python_free_wall([*APPGEN, "status"], env, work) for _ in range(repeat)]
        status_json = [
            python_free_wall([*APPGEN, "status", "1", "--json"], env, work) for _ in range(repeat)
        ]
        cold_env = env | {"APPGEN_RUNNER": "off"}
        cold = [publish(cold_env, work, f"{PROMPT} cold {n}") for n in range(repeat)]
        timelines, cold_timelines = (
            [
                [read_timeline(api_url, run_id, start, end) for start, end, run_id in measured]
                for measured in (runs, cold)
            ]
            if api_url
            else ([], [])
        )
    return ManagedRuns(
        start_seconds,
        [end - start for start, end, _ in runs],
        timelines,
        api_url,
        warm,
        statistics.median(status),
        statistics.median(status_json),
        cold_timelines,
    )


def wait_for_runner(directory: Path, timeout: float = 300) -> bool:
    """Until the warm runner of a managed server listens; False if this appgen has
    none (no runner.json) or it never does."""
    if not (directory / "runner.json").exists():
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = directory / "runner.log"
        if log.exists() and "listening on" in log.read_text():
            return True
        time.sleep(0.2)
    return False


@dataclass
class CachedRuns:
    timelines: list[RunTimeline]
    inside: list[dict[str, float]]  # per run: task step → seconds inside its body
    database: list[dict[str, float]]  # per run: Database method → seconds inside it
    plain: list[dict[str, float]]  # per repeat: plain step → seconds
    leases: dict[str, float]  # lease operation → median seconds
    with_heartbeats: float  # one run's wall with Prefect's flow-run heartbeats on


def measure_cached(api_url: str, repeat: int, work: Path) -> CachedRuns:
    """Runs the in-process part in a child interpreter: Prefect reads its settings
    when it is imported, and this process talks to other servers too."""
    seed = work / "seed"
    subprocess.run(
        [sys.executable, str(MAKE_WORKSPACE), str(seed), "--seed", "1"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    output = work / "cached.json"
    env = clean_environment(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(work / "cached-p"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        APPGEN_HOME=str(work / "cached"),
        APPGEN_AGENT="command",
        APPGEN_TRUST_AGENT="true",  # the agent copies the seed from outside its app dir
        APPGEN_AGENT_COMMAND=f"cp -a '{seed}/.' .",
    )
    timed_run(
        [sys.executable, __file__, "--cached-runs-into", str(output), "--repeat", str(repeat)],
        env,
        work,
    )
    measured = json.loads(output.read_text())
    timelines = [
        read_timeline(api_url, run["flow_run_id"], run["started"], run["ended"])
        for run in measured["runs"]
    ]
    return CachedRuns(
        timelines,
        [run["inside"] for run in measured["runs"]],
        [run["database"] for run in measured["runs"]],
        measured["plain"],
        measured["leases"],
        measured["with_heartbeats"],
    )


# ---------------------------------------------------------------------------------
# The in-process part of the cached measurement (runs in a child interpreter)


def _timed(record: Callable[[float], None], function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # Prefect binds parameters through __wrapped__'s signature
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record(time.perf_counter() - started)

    return timed


class Laps:
    """Seconds per named step, each timed from the end of the step before it; a
    step named twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._clock
        self._clock = now


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def cached_runs_into(output: Path, repeat: int) -> None:
    from prefect import Task
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    import flows.publish
    from blocks import defaults
    from blocks.database import Database
    from core.models import CommitAuthor, GeneratorRun, LeaseHolder, RequestStatus
    from core.processes import current_process
    from core.secret_scan import held_secrets, scan_tree
    from core.settings import Settings
    from tasks.filtered_stage import stage_tree
    from tasks.git_push import commit_and_push
    from tasks.render_deploy_files import render_into
    from tasks.scan_secrets import PROMPT_NAME

    inside: dict[str, float] = {}
    in_database: dict[str, float] = {}

    def adder(into: dict[str, float], key: str) -> Callable[[float], None]:
        def add(seconds: float) -> None:
            numbered, n = key, 1
            while into is inside and numbered in into:  # update_db, update_db #2, …
                n += 1
                numbered = f"{key} #{n}"
            into[numbered] = into.get(numbered, 0.0) + seconds

        return add

    # The task's source is stored when it is decorated, so its cache key ignores this.
    for value in vars(flows.publish).values():
        if isinstance(value, Task):
            value.fn = _timed(adder(inside, value.name), value.fn)
    # On the class that defines each method (a base class of the block may), so that
    # every store of requests is timed.
    for method in DATABASE_METHODS:
        owner = next(cls for cls in Database.__mro__ if method in vars(cls))
        setattr(owner, method, _timed(adder(in_database, method), getattr(owner, method)))

    flow = flows.publish.generate_and_publish
    flow("a counter with a server", request_id=1, app_name="counter-app")  # generates once
    # With Prefect's flow-run heartbeats on (a Python caller's default), a run ends
    # only when their thread wakes from its 1 s sleep: once, to show that cost.
    started = time.time()
    assert flow("a counter with a server", request_id=1, return_state=True).is_completed()
    with_heartbeats = time.time() - started
    runs = []
    # As `appgen publish` and the tests run flows: without them.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for _ in range(repeat):
            inside.clear()
            in_database.clear()
            started = time.time()
            state = flow("a counter with a server", request_id=1, return_state=True)
            ended = time.time()
            assert state.is_completed(), state
            runs.append(
                {
                    "flow_run_id": str(state.state_details.flow_run_id),
                    "started": started,
                    "ended": ended,
                    "inside": dict(inside),
                    "database": dict(in_database),
                }
            )

    # The same steps as plain calls (bench/flow_overhead.py's baseline, plus the
    # secret scan it left out).
    settings = Settings()
    database, host = defaults.database(settings), defaults.git_host(settings)
    # Where the cached generation left the app: workspace/1/<generation>/app.
    app = next((settings.workspace / "1").glob("*/app"), settings.workspace / "1/app")
    generation = GeneratorRun.model_validate(
        {
            "request_id": 1,
            "duration_seconds": 0,
            "artifact": {"kind": "volume", "location": str(app)},
        }
    )
    author = CommitAuthor(name="appgen", email="appgen@localhost")
    staging = Path(tempfile.mkdtemp(prefix="appgen-bench-plain-"))
    plain = []
    for _ in range(repeat):
        lap = Laps()
        record = database.get(1)
        for status in (RequestStatus.GENERATING, RequestStatus.PUBLISHING):
            database.upsert(1, status=status)
        lap("database reads and writes")
        source = defaults.generator(settings).artifact_store().fetch(generation)
        lap("fetch_artifact")
        staged = stage_tree(source.path, Path(tempfile.mkdtemp(dir=staging)))
        lap("filtered_stage")
        scan_tree(staged.path, held_secrets(), {PROMPT_NAME: "a counter with a server"})
        lap("scan_secrets")
        remote = host.ensure_repository("counter-app", 1)
        lap("create_repository")
        render_into(staged.path, remote.name, settings.fly_region)
        lap("render_deploy_files")
        commit_and_push(
            staged,
            remote,
            message="m",
            author=author,
            host_config={},
            expected_head=record.commit_sha,
        )
        lap("git_push")
        database.upsert(1, status=RequestStatus.PUBLISHED)
        lap("database reads and writes")
        shutil.rmtree(staged.path)
        plain.append(lap.seconds)
    shutil.rmtree(staging, ignore_errors=True)

    # Lease round trips on the embedded SQLite database, outside any run: one
    # holder after another claims a request and a slot, renews and releases them.
    lease = timedelta(seconds=settings.lease_seconds)
    database.upsert(2, prompt="lease probe", app_name="lease-probe")
    leases: dict[str, list[float]] = {}
    for attempt in range(repeat * 3):
        holder = LeaseHolder(flow_run_id=f"bench-{attempt}", process=current_process())
        round_trip = {
            "claim_request": _seconds(partial(database.claim_request, 2, holder, lease)),
            "acquire_slot": _seconds(
                partial(database.acquire_slot, holder, settings.generator_slots, lease)
            ),
            "heartbeat": _seconds(partial(database.heartbeat, holder)),
            "release_slot": _seconds(partial(database.release_slot, holder)),
            "finish (releases the claim)": _seconds(
                partial(database.finish, 2, holder.flow_run_id)
            ),
        }
        for what, seconds in round_trip.items():
            leases.setdefault(what, []).append(seconds)
    # A run waiting for a slot asks again every second: what one such ask costs.
    slots = settings.generator_slots
    holders = [
        LeaseHolder(flow_run_id=f"busy-{n}", process=current_process()) for n in range(slots)
    ]
    for holder in holders:
        database.acquire_slot(holder, slots, lease)
    waiting = LeaseHolder(flow_run_id="waiting", process=current_process())
    busy = f"acquire_slot while all {slots} are held (asked every second)"
    leases[busy] = [
        _seconds(partial(database.acquire_slot, waiting, slots, lease)) for _ in range(repeat * 3)
    ]
    for holder in holders:
        database.release_slot(holder)
    output.write_text(
        json.dumps(
            {
                "runs": runs,
                "plain": plain,
                "with_heartbeats": with_heartbeats,
                "leases": {what: statistics.median(values) for what, values in leases.items()},
            }
        )
    )


# ---------------------------------------------------------------------------------
# Report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def median_of(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(key for d in dicts for key in d))
    return {key: statistics.median(d.get(key, 0.0) for d in dicts) for key in keys}


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join(
        f"{h:<{widths[0]}}" if i == 0 else f"{h:>{w}}"
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(f"  {line}")
    for row in rows:
        cells = (
            f"{c:<{widths[0]}}" if i == 0 else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        print(f"  {'  '.join(cells)}")


def verdict(measured: float, target: float) -> str:
    return f"{measured / target:.1f}x the target ({'met' if measured <= target else 'missed'})"


@dataclass
class Report:
    repeat: int
    imports: Imports | None = None
    api: dict[str, float] = field(default_factory=dict)
    embedded: EmbeddedRuns | None = None
    server: list[RunTimeline] = field(default_factory=list)
    managed: ManagedRuns | None = None
    managed_note: str = ""
    cached: CachedRuns | None = None

    def print(self) -> None:
        print(f"appgen publish, phase by phase: median of {self.repeat}, milliseconds")
        self._print_start_up()
        self._print_runs()
        self._print_tasks()
        self._print_cached()
        self._print_targets()

    def _print_start_up(self) -> None:
        if self.imports is None:
            return
        rows = [[f"import {m}", ms(s)] for m, s in self.imports.seconds.items()]
        rows += [
            [f"  first import of {name} (under flows.publish)", ms(s)]
            for name, s in self.imports.largest
        ]
        rows += [[f"temporary Prefect API: {what}", ms(s)] for what, s in self.api.items()]
        print_table("Start-up costs, measured alone", ["what", "ms"], rows)

    def _modes(self) -> list[tuple[str, list[RunTimeline]]]:
        modes = []
        if self.embedded:
            modes.append(("embedded", self.embedded.timelines))
        if self.server:
            modes.append(("server", self.server))
        if self.managed and self.managed.timelines:
            modes.append(("managed", self.managed.timelines))
        if self.cached:
            modes.append(("cached", self.cached.timelines))
        return modes

    def _print_runs(self) -> None:
        modes = self._modes()
        if not modes:
            return
        phases = {name: median_of([t.phases() for t in timelines]) for name, timelines in modes}
        rows = [
            [phase, *(ms(phases[name][phase]) for name, _ in modes)]
            for phase in next(iter(phases.values()))
        ]
        rows.append(["wall time", *(ms(statistics.median(t.wall for t in tl)) for _, tl in modes)])
        print_table(
            "Phases of one run (embedded/server/managed: `appgen publish`, template agent; "
            "cached: an in-process flow run, seed-size app)",
            ["phase", *(name for name, _ in modes)],
            rows,
        )
        if self.managed and not self.managed.timelines:
            print(f"  managed: wall times only ({self.managed_note})")

    def _print_tasks(self) -> None:
        modes = self._modes()
        if not modes:
            return
        per_mode = {}
        for name, timelines in modes:
            per_run = [t.task_phases() for t in timelines]
            steps = list(dict.fromkeys(step for run in per_run for step in run))
            per_mode[name] = {
                step: tuple(
                    statistics.median(run.get(step, (0.0, 0.0))[i] for run in per_run)
                    for i in (0, 1)
                )
                for step in steps
            }
        steps = list(dict.fromkeys(step for mode in per_mode.values() for step in mode))
        inside = median_of(self.cached.inside) if self.cached else {}
        header = ["task (before = Pending → Running; run = Running → final)"]
        for name, _ in modes:
            header += [f"{name} before", f"{name} run"]
        if self.cached:
            header.append("cached inside")
        rows = []
        for step in steps:
            row = [step]
            for name, _ in modes:
                before, running = per_mode[name].get(step, (0.0, 0.0))
                row += [ms(before), ms(running)]
            if self.cached:
                row.append(ms(inside.get(step, 0.0)))
            rows.append(row)
        print_table("Each task: Prefect's bookkeeping vs its run", header, rows)

    def _print_cached(self) -> None:
        if not self.cached:
            return
        plain = median_of(self.cached.plain)
        database = median_of(self.cached.database)
        rows = [[f"plain: {step}", ms(s)] for step, s in plain.items()]
        rows += [[f"in a run: Database.{method}", ms(s)] for method, s in database.items()]
        rows += [[f"alone: {what}", ms(s)] for what, s in self.cached.leases.items()]
        print_table(
            "Cached run: the steps as plain calls, and the appgen database's round trips "
            "(SQLite, the embedded default)",
            ["what", "ms"],
            rows,
        )

    def _print_targets(self) -> None:
        rows = []
        if self.embedded:
            walls = [t.wall - t.generator_seconds for t in self.embedded.timelines]
            rows.append(
                [
                    "embedded publish, first on a fresh machine: wall - generator",
                    f"{statistics.median(walls):.2f} s",
                    "once per machine",
                    "",
                ]
            )
            rows += _status_rows("in its own process", self.embedded)
            rows.append(
                [
                    "  baseline: the same rows, bare python + sqlite3",
                    f"{self.embedded.sqlite_read_seconds:.2f} s",
                    "",
                    "",
                ]
            )
        if self.server:
            spent = statistics.median(t.wall - t.generator_seconds for t in self.server)
            rows.append(["server publish: wall - generator", f"{spent:.2f} s", "", ""])
        if self.managed:
            managed = self.managed
            rows.append(
                [
                    "managed server: `appgen server start`",
                    f"{managed.start_seconds:.2f} s",
                    "once",
                    "",
                ]
            )
            where = "in the warm runner" if managed.warm else "no warm runner"
            if managed.timelines:
                spent = statistics.median(t.wall - t.generator_seconds for t in managed.timelines)
                rows.append(
                    [
                        f"embedded publish, server running, {where}: wall - generator",
                        f"{spent:.2f} s",
                        f"≤ {TARGET_EMBEDDED_SECONDS:g} s",
                        verdict(spent, TARGET_EMBEDDED_SECONDS),
                    ]
                )
            else:
                spent = statistics.median(managed.walls)
                what = f"managed publish, {where}: wall (generator included)"
                rows.append([what, f"{spent:.2f} s", "", ""])
            if managed.cold_timelines:
                cold = statistics.median(
                    t.wall - t.generator_seconds for t in managed.cold_timelines
                )
                what = "  the same in the caller's process (APPGEN_RUNNER=off)"
                rows.append([what, f"{cold:.2f} s", "", ""])
            rows += _status_rows(where, managed)
        if self.cached:
            flow = statistics.median(t.wall for t in self.cached.timelines)
            plain = statistics.median(sum(run.values()) for run in self.cached.plain)
            inside = statistics.median(sum(run.values()) for run in self.cached.inside)
            overhead = flow - plain
            rows.append(["cached flow run: wall", f"{ms(flow)} ms", "", ""])
            rows.append(
                [
                    "  with Prefect's flow-run heartbeats on (a Python caller's default)",
                    f"{ms(self.cached.with_heartbeats)} ms",
                    "",
                    "",
                ]
            )
            rows.append(["  the same steps, plain calls", f"{ms(plain)} ms", "", ""])
            rows.append(["  time inside the task bodies", f"{ms(inside)} ms", "", ""])
            rows.append(
                [
                    "cached flow run: Prefect's cost (wall - plain)",
                    f"{ms(overhead)} ms",
                    f"≤ {ms(TARGET_FLOW_OVERHEAD_SECONDS)} ms",
                    verdict(overhead, TARGET_FLOW_OVERHEAD_SECONDS),
                ]
            )
            rows.append(
                [
                    "cached flow run: wall / plain",
                    f"{flow / plain:.1f}x",
                    f"≤ {TARGET_FLOW_RATIO:g}x",
                    verdict(flow / plain, TARGET_FLOW_RATIO),
                ]
            )
        print_table("Issue #11's targets", ["what", "measured", "target", "ratio"], rows)


def _status_rows(where: str, runs: EmbeddedRuns | ManagedRuns) -> list[list[str]]:
    return [
        [
            f"appgen {command}, {where}",
            f"{seconds:.2f} s",
            f"≤ {TARGET_STATUS_SECONDS:g} s",
            verdict(seconds, TARGET_STATUS_SECONDS),
        ]
        for command, seconds in (
            ("status", runs.status_seconds),
            ("status 1 --json", runs.status_json_seconds),
        )
    ]


# ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--skip-managed", action="store_true", help="leave out `appgen server` even if it exists"
    )
    parser.add_argument("--cached-runs-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cached_runs_into:
        cached_runs_into(args.cached_runs_into, args.repeat)
        return

    work = Path(tempfile.mkdtemp(prefix="appgen-bench-phases-"))
    # This process reads timelines from several servers: it never starts one of its own.
    os.environ.update(
        {"PREFECT_HOME": str(work / "reader"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    )
    os.environ.pop("PREFECT_API_URL", None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up as on Ctrl-C
    report = Report(args.repeat)
    try:
        step("imports")
        report.imports = measure_imports(args.repeat, work)
        step("the temporary Prefect API alone")
        report.api = measure_api_start_up(args.repeat, work)
        managed_command = appgen_has_server_command(work)
        step("embedded publishes and appgen status")
        report.embedded = measure_embedded(args.repeat, work, managed_command)
        (work / "server").mkdir()
        with PrefectServer(work / "server") as server:
            step(f"publishes against {server.api_url}")
            report.server = measure_against_server(server.api_url, args.repeat, work)
            step("cached flow runs in process, and plain calls")
            report.cached = measure_cached(server.api_url, args.repeat, work)
        if args.skip_managed:
            report.managed_note = "skipped (--skip-managed)"
        elif managed_command:
            step("publishes with `appgen server start`")
            report.managed = measure_managed(args.repeat, work)
            report.managed_note = (
                f"API {report.managed.api_url}"
                if report.managed.api_url
                else "`appgen server status` names no API URL"
            )
        else:
            report.managed_note = "this appgen has no `server` command"
            step("no `appgen server` command: managed mode not measured")
    except BaseException:
        report.print()  # what was measured before the failure
        raise
    else:
        report.print()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step(text: str) -> None:
    print(f"measuring: {text} …", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
