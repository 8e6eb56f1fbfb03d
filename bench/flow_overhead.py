#!/usr/bin/env python3
"""Prefect's own cost per flow run, on the seed-size app, against a real Prefect server.

Runs generate_and_publish for one request on the full seed workspace
(../shared/bench/make_workspace.py --seed 1, copied in by a `command` agent), then
re-runs it --repeat times: the generation is cached and the tree unchanged, so each
re-run does the cheap steps only. The same steps are then timed as plain function
calls, without Prefect. The difference is what Prefect costs per run (task and flow
run creation, state changes, server round-trips, log shipping, the artifacts).

    python bench/flow_overhead.py [--repeat 5] [--api-url http://127.0.0.1:4200/api]

Without --api-url a `prefect server start` is run on a free loopback port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.prefect_server import PrefectServer  # noqa: E402

MAKE_WORKSPACE = ROOT.parent / "shared" / "bench" / "make_workspace.py"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--api-url")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="appgen-bench-flow-"))
    seed = work / "seed"
    subprocess.run(
        [sys.executable, str(MAKE_WORKSPACE), str(seed), "--seed", "1"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with contextlib.ExitStack() as stack:
        if args.api_url is None:
            (work / "prefect").mkdir()
            args.api_url = stack.enter_context(PrefectServer(work / "prefect")).api_url
        flow_times, plain_times = measure_against(args.api_url, args.repeat, work, seed)
    flow, plain = statistics.median(flow_times), statistics.median(plain_times)
    print(f"seed-size app, cached generation, unchanged tree; median of {args.repeat}:")
    print(f"  flow run through Prefect       {flow * 1000:8.0f} ms")
    print(f"  the same steps, plain calls    {plain * 1000:8.0f} ms")
    print(
        f"  Prefect's cost per run         {(flow - plain) * 1000:8.0f} ms "
        f"({flow / plain:.1f}x the tasks' own work)"
    )
    shutil.rmtree(work, ignore_errors=True)


def measure_against(
    api_url: str, repeat: int, work: Path, seed: Path
) -> tuple[list[float], list[float]]:
    os.environ.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(work / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "APPGEN_HOME": str(work / "home"),
            "APPGEN_AGENT": "command",
            "APPGEN_AGENT_COMMAND": f"cp -a '{seed}/.' .",
        }
    )
    from blocks import defaults
    from core.models import CommitAuthor, GeneratorRun, RequestStatus
    from core.settings import Settings
    from flows.publish import generate_and_publish
    from tasks.filtered_stage import stage_tree
    from tasks.git_push import commit_and_push
    from tasks.render_deploy_files import render_into

    generate_and_publish("a counter with a server", request_id=1, app_name="counter-app")
    flow_times = []
    for _ in range(repeat):
        started = time.perf_counter()
        generate_and_publish("a counter with a server", request_id=1)
        flow_times.append(time.perf_counter() - started)

    settings = Settings()
    database, host = defaults.database(settings), defaults.git_host(settings)
    generation = GeneratorRun.model_validate(
        {
            "request_id": 1,
            "duration_seconds": 0,
            "artifact": {"kind": "volume", "location": str(settings.workspace / "1/app")},
        }
    )
    author = CommitAuthor(name="appgen", email="appgen@localhost")
    plain_times = []
    for _ in range(repeat):
        started = time.perf_counter()
        record = database.get(1)
        for status in (RequestStatus.GENERATING, RequestStatus.PUBLISHING):
            database.upsert(1, status=status)
        source = defaults.generator(settings).artifact_store().fetch(generation)
        staged = stage_tree(source.path, Path(tempfile.mkdtemp(dir=work)))
        remote = host.ensure_repository("counter-app", 1)
        render_into(staged.path, remote.name, settings.fly_region)
        commit_and_push(
            staged,
            remote,
            message="m",
            author=author,
            host_config={},
            expected_head=record.commit_sha,
        )
        database.upsert(1, status=RequestStatus.PUBLISHED)
        shutil.rmtree(staged.path)
        plain_times.append(time.perf_counter() - started)
    return flow_times, plain_times


if __name__ == "__main__":
    main()
