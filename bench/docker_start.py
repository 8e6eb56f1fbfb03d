#!/usr/bin/env python3
"""Docker generator start-up: how long from DockerGenerator.run() to the generator's
first output line, and to the end of a trivial generation, against `docker run --rm`
of the same image measured in the same run.

    python bench/docker_start.py [--repeat 5] [--image appgen-generator:local]

Needs a Docker engine and the generator image (`appgen build-image`).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocks.docker_generator import DockerGenerator  # noqa: E402
from core.models import GenerationSpec  # noqa: E402


class FirstLine(logging.LoggerAdapter[logging.Logger]):
    """Remembers when the first line of the generator's output arrived."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("bench"), {})
        self.first: float | None = None

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if self.first is None and str(msg).startswith("generator:"):
            self.first = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--image", default="appgen-generator:local")
    args = parser.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="appgen-bench-docker-"))
    generator = DockerGenerator(image=args.image, workspace=workspace, network_mode="none")
    to_first_line, to_done, docker_run = [], [], []
    for attempt in range(args.repeat + 1):  # the first round warms up and is not counted
        spec = GenerationSpec(
            request_id=attempt + 1,
            registered_at=datetime.now(UTC),
            prompt="a counter",
            agent="command",
            agent_command="true",
        )
        logger = FirstLine()
        started = time.perf_counter()
        generator.run(spec, logger)
        done = time.perf_counter()
        started_cli = time.perf_counter()
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "python3",
                args.image,
                "-c",
                "pass",
            ],
            check=True,
        )
        cli = time.perf_counter() - started_cli
        if attempt:
            assert logger.first is not None, "the generator logged no line"
            to_first_line.append(logger.first - started)
            to_done.append(done - started)
            docker_run.append(cli)
    first, whole, baseline = (statistics.median(v) for v in (to_first_line, to_done, docker_run))
    print(f"median of {args.repeat}:")
    print(f"  run() → first generator line : {first * 1000:7.0f} ms")
    print(f"  run() → generation done      : {whole * 1000:7.0f} ms")
    print(f"  docker run --rm (same image) : {baseline * 1000:7.0f} ms")
    print(f"  generation / docker run      : {whole / baseline:7.2f}")


if __name__ == "__main__":
    main()
