#!/usr/bin/env python3
"""Where the time of `appgen publish` and `appgen status` goes, as ratios against
baselines measured in the same run, next to their targets.

Every figure is the median of --repeat measurements, each command in its own
process, the way a person runs it:

  baselines   `python -c pass`, `python -c "import prefect"` and
              `python -c "import sqlite3, json"`
  imports     `python -c "import X"` for appgen.cli, flows.publish and prefect, and
              the largest first imports under flows.publish (-X importtime)
  publish     `appgen publish --json` (template agent) against the local server
              `appgen server start` runs (warm: one publish first, not counted), and
              its phases from the Prefect API: start-up until the flow run is
              created, the flow run itself, and the end of the run until the
              process exits
  floor       what any Prefect flow run costs in its own process on the same server:
              a script whose flow runs as many no-op tasks as a publish runs tasks;
              appgen's own share of a publish is what it takes beyond this
  status      `appgen status` and `appgen status 1 --json` on the same home

Targets (issue #19):  publish ≤ 1.8 x import prefect;  status ≤ 10 x import sqlite3, json.

    python bench/phases.py [--repeat 5] [--check]

``--check`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The console script pip installed beside this Python, not a version manager's shim
# (pyenv's adds its own start-up to every figure).
_SCRIPT = Path(sys.executable).parent / "appgen"
APPGEN = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "appgen"]
PROMPT = "Build me a counter app"

TARGET_PUBLISH_RATIO = 1.8  # appgen publish ÷ python -c "import prefect"
TARGET_STATUS_RATIO = 10.0  # appgen status ÷ python -c "import sqlite3, json"
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any APPGEN_* or PREFECT_* variable: the
    defaults a newcomer has, plus ``settings``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("APPGEN_", "PREFECT_"))}
    return kept | settings


@dataclass
class Timed:
    started: float  # epoch seconds
    ended: float
    stdout: str
    stderr: str

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def timed(command: list[str], env: dict[str, str], cwd: Path) -> Timed:
    """Run ``command`` to its end; a failure stops the benchmark with its output."""
    started = time.time()
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    ended = time.time()
    if completed.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} exited {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
        )
    return Timed(started, ended, completed.stdout, completed.stderr)


def python(code: str, env: dict[str, str], cwd: Path) -> float:
    return timed([sys.executable, "-c", code], env, cwd).seconds


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


# ---------------------------------------------------------------------------------
# Imports


def largest_imports(
    env: dict[str, str], cwd: Path, module: str, count: int
) -> list[tuple[str, float]]:
    """What importing ``module`` costs, from one ``python -X importtime`` run: the
    ``count`` largest third-party packages (cumulative, so a package another one
    imports is inside that one's figure too), and this project's modules (their own
    time only), in seconds."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    packages: dict[str, float] = {}
    own = 0.0
    for line in completed.stderr.splitlines():
        if (match := _IMPORT_LINE.match(line)) is None:
            continue
        own_time, cumulative, name = int(match[1]) / 1e6, int(match[2]) / 1e6, match[3]
        if name.split(".")[0] in _PROJECT:
            own += own_time
        elif "." not in name:
            packages[name] = cumulative
    largest = sorted(packages.items(), key=lambda item: -item[1])[:count]
    return [*largest, ("this project's modules (own time)", own)]


_PROJECT = frozenset({"appgen", "blocks", "core", "deployments", "flows", "tasks"})


# ---------------------------------------------------------------------------------
# Publishes and their phases


@dataclass
class Publish:
    flow_run_id: str
    wall: float
    start_up: float  # process start → flow run created (imports, settings, API connect)
    flow_run: float  # flow run created → final state
    exit: float  # final state → process exited


def flow_run_times(api_url: str, flow_run_id: str) -> tuple[float, float]:
    """When the flow run was created and when it reached its final state (epoch)."""
    with _NO_PROXY.open(f"{api_url}/flow_runs/{flow_run_id}", timeout=30) as response:
        run = json.loads(response.read())
    created = datetime.fromisoformat(run["created"]).timestamp()
    ended = datetime.fromisoformat(run["end_time"] or run["state"]["timestamp"]).timestamp()
    return created, ended


def publish(env: dict[str, str], cwd: Path, api_url: str, prompt: str) -> Publish:
    run = timed([*APPGEN, "publish", "--prompt", prompt, "--json"], env, cwd)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if result["status"] != "published":
        raise SystemExit(f"the benchmark's publish failed: {result['error']}")
    created, ended = flow_run_times(api_url, result["flow_run_id"])
    return Publish(
        result["flow_run_id"],
        run.seconds,
        created - run.started,
        ended - created,
        run.ended - ended,
    )


# A flow of no-op tasks: Prefect's own cost of a flow run (import, parameter
# serialization, flow and task runs through the API, exit), with no appgen code.
FLOOR_FLOW = """
import sys
from prefect import flow, task

@task
def step(n: int) -> int:
    return n + 1

@flow
def floor(prompt: str, tasks: int) -> int:
    n = 0
    for _ in range(tasks):
        n = step(n)
    return n

floor(sys.argv[1], int(sys.argv[2]))
"""


def task_run_count(api_url: str, flow_run_id: str) -> int:
    body = json.dumps({"flow_runs": {"id": {"any_": [flow_run_id]}}}).encode()
    request = urllib.request.Request(
        f"{api_url}/task_runs/filter", body, {"Content-Type": "application/json"}
    )
    with _NO_PROXY.open(request, timeout=30) as response:
        return len(json.loads(response.read()))


def floor_flow(env: dict[str, str], cwd: Path, api_url: str, tasks: int) -> float:
    # As appgen's CLI runs its flows: no telemetry, no heartbeat thread.
    floor_env = env | {"PREFECT_API_URL": api_url, "DO_NOT_TRACK": "1"}
    command = [sys.executable, "-c", FLOOR_FLOW, PROMPT, str(tasks)]
    return timed(command, floor_env, cwd).seconds


def server_api_url(env: dict[str, str], cwd: Path) -> str:
    shown = timed([*APPGEN, "server", "status"], env, cwd).stdout
    match = re.search(r"\(API (http://127\.0\.0\.1:\d+/api)", shown)
    if match is None:
        raise SystemExit(f"`appgen server status` names no API: {shown}")
    return match[1]


# ---------------------------------------------------------------------------------
# Report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    repeat = args.repeat

    with tempfile.TemporaryDirectory(prefix="appgen-bench-phases-") as scratch:
        work = Path(scratch)
        env = clean_environment(
            APPGEN_HOME=str(work / "home"), PREFECT_HOME=str(work / "prefect-home")
        )
        print(f"appgen: {' '.join(APPGEN)}; Python {sys.version.split()[0]}; {repeat} repeats")
        bare = median_of(repeat, lambda: python("pass", env, work))
        prefect = median_of(repeat, lambda: python("import prefect", env, work))
        sqlite = median_of(repeat, lambda: python("import sqlite3, json", env, work))
        imports = {
            module: median_of(repeat, functools.partial(python, f"import {module}", env, work))
            for module in ("appgen.cli", "flows.publish")
        }
        largest = largest_imports(env, ROOT, "flows.publish", 12)

        timed([*APPGEN, "server", "start"], env, work)
        try:
            api_url = server_api_url(env, work)
            publish(env, work, api_url, f"{PROMPT} warm-up")  # the server's first run
            runs = [publish(env, work, api_url, f"{PROMPT} {n}") for n in range(repeat)]
            tasks = task_run_count(api_url, runs[-1].flow_run_id)
            floor = median_of(repeat, lambda: floor_flow(env, work, api_url, tasks))
            status = median_of(repeat, lambda: timed([*APPGEN, "status"], env, work).seconds)
            status_json = median_of(
                repeat, lambda: timed([*APPGEN, "status", "1", "--json"], env, work).seconds
            )
        finally:
            subprocess.run([*APPGEN, "server", "stop"], env=env, cwd=work, capture_output=True)

    print_table(
        "Baselines (a fresh interpreter each)",
        ["command", "wall"],
        [
            ["python -c pass", ms(bare)],
            ['python -c "import prefect"', ms(prefect)],
            ['python -c "import sqlite3, json"', ms(sqlite)],
            [f"a Prefect flow of {tasks} no-op tasks, same server", ms(floor)],
        ],
    )
    print_table(
        "Imports (wall of `python -c 'import X'`)",
        ["module", "wall", "x import prefect"],
        [[m, ms(s), f"{s / prefect:.2f}"] for m, s in imports.items()],
    )
    print_table(
        "Largest first imports under flows.publish (one -X importtime run, cumulative)",
        ["package or module", "import"],
        [[name, ms(seconds)] for name, seconds in largest],
    )
    wall = statistics.median(r.wall for r in runs)
    print_table(
        "appgen publish --json, template agent, warm local server (median)",
        ["phase", "time", "share"],
        [
            [name, ms(seconds), f"{seconds / wall:.0%}"]
            for name, seconds in (
                ("start-up → flow run created", statistics.median(r.start_up for r in runs)),
                ("the flow run", statistics.median(r.flow_run for r in runs)),
                ("flow run final → process exited", statistics.median(r.exit for r in runs)),
                ("wall", wall),
            )
        ],
    )
    print_table(
        "appgen publish against the floor (any flow run of as many tasks)",
        ["", "wall", "x import prefect"],
        [
            ["the floor", ms(floor), f"{floor / prefect:.2f}"],
            ["appgen publish", ms(wall), f"{wall / prefect:.2f}"],
            ["appgen's own share", ms(wall - floor), f"{(wall - floor) / prefect:.2f}"],
        ],
    )
    results = [
        ("appgen publish", wall, prefect, "import prefect", TARGET_PUBLISH_RATIO),
        ("appgen status", status, sqlite, "import sqlite3, json", TARGET_STATUS_RATIO),
        (
            "appgen status 1 --json",
            status_json,
            sqlite,
            "import sqlite3, json",
            TARGET_STATUS_RATIO,
        ),
    ]
    rows, missed = [], []
    for what, seconds, baseline, against, target in results:
        ratio = seconds / baseline
        ok = ratio <= target
        if not ok:
            missed.append(what)
        rows.append(
            [
                what,
                ms(seconds),
                f"{ratio:.2f} x {against}",
                f"≤ {target:g}",
                "ok" if ok else "MISSED",
            ]
        )
    print_table("Targets", ["command", "wall", "ratio", "target", ""], rows)
    if args.check and missed:
        raise SystemExit(f"missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
