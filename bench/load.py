#!/usr/bin/env python3
"""Many requests at once: deployment runs on a Prefect server backed by PostgreSQL.

Starts, all on 127.0.0.1 and all removed again on exit (Ctrl-C included):

  - two fresh PostgreSQL databases: one for the Prefect server, one for appgen;
  - `prefect server start` on a free port, on the first database, analytics off;
  - `appgen setup` (work pool `appgen-local`, the `local` deployment);
  - two process workers on `appgen-local`, each with its own APPGEN_HOME and
    PREFECT_HOME as two machines would have, sharing the appgen database and the Git
    root, each taking up to --worker-limit runs at once;

then submits --requests deployment runs of `generate-and-publish/local` at once,
with APPGEN_GENERATOR_SLOTS=--slots and a `command` agent that sleeps --agent-seconds,
writes a one-file static site and counts its runs. When every run has ended it
prints the throughput, the end-to-end latency (submitted → terminal state), and what
each run cost beyond its generator (Prefect's overhead, and the wait for a generator
slot, which is queueing, not overhead), then checks that every request was published
exactly once, with one generation, no lost update and no slot left held. It exits 1
if a check fails.

    python bench/load.py [--requests 50] [--slots 8] [--worker-limit 25]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx

from appgen.server import prefect_server_command

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = "generate-and-publish/local"
# The Prefect server's database pool for 50 runs at once, within PostgreSQL's default
# 100 connections (the appgen database shares them).
SERVER_POOL = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "60",
}
POOL = "appgen-local"
POSTGRES = "appgen:appgen@127.0.0.1:5432"
GENERATING = re.compile(r"generating request \d+")
GENERATED = re.compile(r"generation finished in ([0-9.]+)s")


# ---------------------------------------------------------------------------------
# What the benchmark starts, and how it is stopped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


@contextlib.contextmanager
def database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database owned by ``appgen``, dropped on exit (with any
    connection still open to it)."""
    subprocess.run(["su", "postgres", "-c", f"createdb -O appgen {name}"], check=True)
    try:
        yield name
    finally:
        subprocess.run(
            ["su", "postgres", "-c", f"dropdb --if-exists --force {name}"], capture_output=True
        )


@contextlib.contextmanager
def service(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process in a session of its own, so that stopping it stops
    whatever it started too: SIGTERM to the session, SIGKILL after 20 s."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_session(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)


def stop_session(session: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)


@contextlib.contextmanager
def marked_processes_stopped(marker: str) -> Iterator[None]:
    """On exit, stop every process whose environment holds ``marker``. Prefect starts
    each flow run in a session of its own, so stopping a worker's session leaves its
    runs (and their agents) running."""
    try:
        yield
    finally:
        stop_marked(marker)


def stop_marked(marker: str) -> None:
    """SIGTERM, then (10 s later) SIGKILL, to every process whose environment holds
    ``marker``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        marked = processes_with(marker)
        for pid in marked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while marked and time.monotonic() < deadline:
            time.sleep(0.2)
            marked = processes_with(marker)
        if not marked:
            return


def processes_with(marker: str) -> list[int]:
    wanted = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def wait_healthy(api_url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the Prefect server exited with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"the Prefect server at {api_url} did not become healthy in {timeout:g}s")


def run_checked(command: list[str], env: dict[str, str]) -> None:
    completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} exited {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
        )


# ---------------------------------------------------------------------------------
# Submitting and waiting


@dataclass
class Submitted:
    index: int
    flow_run_id: str
    submitted_at: float  # epoch seconds, just before the API call


@dataclass
class Ended:
    submitted: Submitted
    state: str
    message: str
    pending_at: float | None  # a worker took it
    running_at: float | None  # its process started the flow
    ended_at: float
    generator_seconds: float | None
    slot_wait_seconds: float | None

    @property
    def latency(self) -> float:
        return self.ended_at - self.submitted.submitted_at

    @property
    def overhead(self) -> float | None:
        """What the run cost beyond its generator and its wait for a slot."""
        if self.generator_seconds is None or self.slot_wait_seconds is None:
            return None
        return self.latency - self.generator_seconds - self.slot_wait_seconds


def wait_for_workers(names: list[str], timeout: float = 180) -> None:
    """Until both workers poll the pool: runs submitted before would time the
    workers' own start-up."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            online = {
                worker.name
                for worker in client.read_workers_for_work_pool(POOL)
                if worker.status.value == "ONLINE"
            }
            if online >= set(names):
                return
            time.sleep(1)
    raise SystemExit(f"the workers {names} were not polling {POOL} after {timeout:g}s")


async def submit(requests: int) -> list[Submitted]:
    """Create every deployment run at once (as `prefect deployment run` would, one
    API call each)."""
    from prefect import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)

        async def one(index: int) -> Submitted:
            submitted_at = time.time()
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters={
                    "prompt": f"A load test page number {index}",
                    "app_name": f"load-{index:03d}",
                },
            )
            return Submitted(index, str(run.id), submitted_at)

        return list(await asyncio.gather(*(one(i) for i in range(1, requests + 1))))


def wait_until_ended(submitted: list[Submitted], timeout: float) -> list[Ended]:
    """Poll until every run is in a terminal state; then read each run's state
    timestamps and its generator's own time and slot wait from its log."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort

    ids = [s.flow_run_id for s in submitted]
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            print(f"\r  {len(final)}/{len(ids)} runs ended", end="", file=sys.stderr, flush=True)
            if len(final) == len(ids):
                print(file=sys.stderr)
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"\nonly {len(final)} of {len(ids)} runs ended in {timeout:g}s")
            time.sleep(2)
        ended = []
        for one in submitted:
            states = client.read_flow_run_states(UUID(one.flow_run_id))
            pending = [s.timestamp.timestamp() for s in states if s.type.value == "PENDING"]
            running = [s.timestamp.timestamp() for s in states if s.type.value == "RUNNING"]
            final_state = max((s for s in states if s.is_final()), key=lambda s: s.timestamp)
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[one.flow_run_id])),
                sort=LogSort.TIMESTAMP_ASC,
                limit=200,
            )
            generator_seconds, slot_wait = generator_time(logs)
            ended.append(
                Ended(
                    one,
                    final_state.type.value,
                    last_line(final_state.message),
                    min(pending, default=None),
                    min(running, default=None),
                    final_state.timestamp.timestamp(),
                    generator_seconds,
                    slot_wait,
                )
            )
    return ended


def last_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return lines[-1][:300] if lines else ""


def generator_time(logs: list[Any]) -> tuple[float | None, float | None]:
    """The generator's own time ("generation finished in 5.0s") and the wait for a
    slot before it: from "generating request N" to the end of the generation, minus
    the generation itself."""
    began = next((log.timestamp for log in logs if GENERATING.search(log.message)), None)
    for log in logs:
        if found := GENERATED.search(log.message):
            seconds = float(found[1])
            if began is None:
                return seconds, None
            return seconds, max(0.0, (log.timestamp - began).total_seconds() - seconds)
    return None, None


# ---------------------------------------------------------------------------------
# Checks


@dataclass
class Check:
    what: str
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def check_outcome(
    ended: list[Ended], database_url: str, git_root: Path, counter: Path
) -> list[Check]:
    """Every request published exactly once: one row per run, status published, one
    commit in its repository (the one the row names), one generation, every field the
    run wrote still there, its claim and its generator slot released."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(sa.text("SELECT * FROM requests"))]
        held_slots = connection.execute(
            sa.text("SELECT slot, holder FROM generator_slots WHERE holder IS NOT NULL")
        ).all()
    engine.dispose()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["flow_run_id"], []).append(row)
    generations = Counter(counter.read_text().split()) if counter.exists() else Counter()

    completed, one_row, published, one_commit, one_generation, whole = ([] for _ in range(6))
    for run in ended:
        name = f"run {run.submitted.index} ({run.submitted.flow_run_id})"
        if run.state != "COMPLETED":
            completed.append(f"{name}: {run.state}: {run.message}")
        mine = by_run.get(run.submitted.flow_run_id, [])
        if len(mine) != 1:
            one_row.append(f"{name}: {len(mine)} rows")
            continue
        row = mine[0]
        if row["status"] != "published":
            published.append(f"{name}: request {row['request_id']} is {row['status']}")
        commits = repository_commits(git_root / f"{row['app_name']}.git")
        if commits != [row["commit_sha"]]:
            one_commit.append(f"{name}: main holds {commits}, the row says {row['commit_sha']}")
        if generations[str(row["request_id"])] != 1:
            count = generations[str(row["request_id"])]
            one_generation.append(f"{name}: request {row['request_id']} generated {count} times")
        lost = [
            column
            for column in ("app_name", "repo_url", "repo_id", "commit_sha", "deployable")
            if row[column] is None
        ]
        if lost or row["claimed_by"] is not None:
            whole.append(f"{name}: missing {lost}, claimed by {row['claimed_by']}")
    others = [r for r in rows if r["flow_run_id"] not in {e.submitted.flow_run_id for e in ended}]
    one_row += [f"request {r['request_id']}: a row no submitted run made" for r in others]
    extra = sum(generations.values()) - len(ended)
    if extra:
        one_generation.append(f"{sum(generations.values())} generations for {len(ended)} runs")
    return [
        Check("every run completed", completed),
        Check("one row per request", one_row),
        Check("every request published", published),
        Check("one commit in each repository, the row's", one_commit),
        Check("one generation per request (the agent's counter)", one_generation),
        Check("0 lost updates (every field the run wrote, claim released)", whole),
        Check(
            "no generator slot left held",
            [f"slot {slot} held by {holder}" for slot, holder in held_slots],
        ),
    ]


def repository_commits(bare: Path) -> list[str]:
    listed = subprocess.run(
        ["git", f"--git-dir={bare}", "rev-list", "main"], capture_output=True, text=True
    )
    return listed.stdout.split() if listed.returncode == 0 else []


# ---------------------------------------------------------------------------------
# Report


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def print_report(args: argparse.Namespace, ended: list[Ended], checks: list[Check]) -> None:
    first_submit = min(e.submitted.submitted_at for e in ended)
    last_end = max(e.ended_at for e in ended)
    span = last_end - first_submit
    latencies = [e.latency for e in ended]
    pickup = [e.pending_at - e.submitted.submitted_at for e in ended if e.pending_at]
    process_start = [e.running_at - e.pending_at for e in ended if e.running_at and e.pending_at]
    generator = [e.generator_seconds for e in ended if e.generator_seconds is not None]
    slot_wait = [e.slot_wait_seconds for e in ended if e.slot_wait_seconds is not None]
    overhead = [e.overhead for e in ended if e.overhead is not None]
    floor = -(-len(ended) // args.slots) * args.agent_seconds  # rounds of full slots

    def row(what: str, values: list[float]) -> str:
        if not values:
            return f"  {what:<52} (no data)"
        return (
            f"  {what:<52} {statistics.median(values):7.1f} {percentile(values, 0.95):7.1f} "
            f"{max(values):7.1f}"
        )

    print(
        f"{len(ended)} deployment runs submitted at once; Prefect server on PostgreSQL; "
        f"2 process workers (limit {args.worker_limit} each, polling every "
        f"{args.worker_query_seconds:g} s); {args.slots} generator slots; "
        f"agent sleeps {args.agent_seconds:g} s"
    )
    print(
        f"  all ended {span:.1f} s after the first submit: {len(ended) / span * 60:.1f} "
        f"requests per minute (the generator slots alone allow "
        f"{args.slots / args.agent_seconds * 60:.0f}/min; {floor:g} s for {len(ended)})"
    )
    print(f"  {'seconds per run':<52} {'p50':>7} {'p95':>7} {'max':>7}")
    print(row("end to end (submitted → terminal state)", latencies))
    print(row("  submitted → Pending (a worker picks it up)", pickup))
    print(row("  Pending → Running (the flow-run process starts)", process_start))
    print(row("  generator's own time (run log)", generator))
    print(row("  waiting for a generator slot (run log)", slot_wait))
    print(row("  Prefect overhead (end to end - generator - slot wait)", overhead))
    print(row("end to end - generator", [e.latency - (e.generator_seconds or 0) for e in ended]))
    print("checks:")
    for check in checks:
        print(f"  {'ok  ' if check.passed else 'FAIL'} {check.what}")
        for failure in check.failures[:10]:
            print(f"         {failure}")
        if len(check.failures) > 10:
            print(f"         … and {len(check.failures) - 10} more")


# ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50, help="deployment runs to submit")
    parser.add_argument("--slots", type=int, default=8, help="APPGEN_GENERATOR_SLOTS")
    parser.add_argument("--worker-limit", type=int, default=25, help="runs per worker at once")
    parser.add_argument("--agent-seconds", type=float, default=5.0, help="the agent's sleep")
    parser.add_argument(
        "--worker-query-seconds",
        type=float,
        default=10.0,
        help="how often a worker polls its pool (PREFECT_WORKER_QUERY_SECONDS; Prefect's default)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait for every run to end"
    )
    args = parser.parse_args()
    # SIGTERM cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    suffix = secrets.token_hex(4)
    marker = f"BENCH_LOAD_RUN={suffix}"
    work = Path(tempfile.mkdtemp(prefix="appgen-bench-load-"))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    counter, git_root = work / "agent-runs", work / "repos"
    git_root.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        prefect_db = stack.enter_context(database(f"prefect_bench_{suffix}"))
        appgen_db = stack.enter_context(database(f"appgen_bench_{suffix}"))
        appgen_url = f"postgresql+psycopg://{POSTGRES}/{appgen_db}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("APPGEN_", "PREFECT_"))}
        base |= {"BENCH_LOAD_RUN": suffix, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        stack.enter_context(marked_processes_stopped(marker))

        step(f"Prefect server on {api_url}, database {prefect_db}")
        server_env = base | {
            "PREFECT_HOME": str(work / "server"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{POSTGRES}/{prefect_db}",
            # Prefect's default pool (5 + 10 overflow) times out under 50 runs at once
            # and answers 500: the README's "Under load" says so.
            **SERVER_POOL,
        }
        server = stack.enter_context(
            service(
                prefect_server_command(port, ui=False),
                server_env,
                work / "server.log",
            )
        )
        wait_healthy(api_url, server)

        # Each a printf line: files the agent writes into its app directory.
        agent = (
            f"sleep {args.agent_seconds:g} && "
            "printf '<!doctype html><title>%s</title><h1>%s</h1>\\n' "
            '"$APPGEN_REQUEST_ID" "$APPGEN_PROMPT" > index.html && '
            f'echo "$APPGEN_REQUEST_ID" >> "{counter}"'
        )
        appgen_env = base | {
            "PREFECT_API_URL": api_url,
            "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",  # an overloaded server, briefly
            "APPGEN_DATABASE_URL": appgen_url,
            "APPGEN_GIT_ROOT": str(git_root),
            "APPGEN_GENERATOR_SLOTS": str(args.slots),
            "APPGEN_AGENT": "command",
            "APPGEN_TRUST_AGENT": "true",  # unconfined: it counts its runs outside its app
            "APPGEN_AGENT_COMMAND": agent,
        }
        step("appgen setup: blocks, the work pool, the `local` deployment")
        run_checked(
            [sys.executable, "-m", "appgen", "setup"],
            appgen_env | {"APPGEN_HOME": str(work / "setup"), "PREFECT_HOME": str(work / "p0")},
        )
        workers = [f"bench-{suffix}-{machine}" for machine in (1, 2)]
        for machine, worker in enumerate(workers, start=1):
            step(f"process worker {worker} on {POOL}")
            stack.enter_context(
                service(
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "worker",
                        "start",
                        "--pool",
                        POOL,
                        "--type",
                        "process",
                        "--name",
                        worker,
                        "--limit",
                        str(args.worker_limit),
                    ],
                    appgen_env
                    | {
                        "APPGEN_HOME": str(work / f"machine-{machine}"),
                        "PREFECT_HOME": str(work / f"machine-{machine}-prefect"),
                        "PREFECT_WORKER_QUERY_SECONDS": f"{args.worker_query_seconds:g}",
                    },
                    work / f"worker-{machine}.log",
                )
            )

        os.environ.update(
            {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "client")}
            | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        )
        wait_for_workers(workers)
        step(f"submitting {args.requests} runs of {DEPLOYMENT}")
        submitted = asyncio.run(submit(args.requests))
        ended = wait_until_ended(submitted, args.timeout)
        step("checking rows, repositories, generations and slots")
        checks = check_outcome(ended, appgen_url, git_root, counter)
        print_report(args, ended, checks)
        if not all(check.passed for check in checks):
            # The runs' own output (in the worker logs) and the server's say why.
            kept = Path(tempfile.mkdtemp(prefix="appgen-bench-load-logs-"))
            for log in work.glob("*.log"):
                shutil.copy(log, kept)
            print(f"logs of the server and the workers kept in {kept}")
        step("cleaning up: workers, runs, server, databases, temp dirs")
    return 0 if all(check.passed for check in checks) else 1


def step(text: str) -> None:
    print(f"{text} …", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
