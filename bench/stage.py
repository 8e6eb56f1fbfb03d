#!/usr/bin/env python3
"""Staging benchmark: filtered_stage against rsync and the lower bound, same run.

    python bench/stage.py [--scale 1.0] [--repeat 5] [--work DIR]

Builds the seed-size workspace (../shared/bench/make_workspace.py --seed 1: 36,182
node_modules files) and one with 10x the node_modules files, then times, best of
--repeat on a warm page cache:

  stage      tasks.filtered_stage.stage_tree, in process
  rsync      rsync -a with the same excludes (default rules + the app's .gitignore files)
  lower      tar of the exact kept-file list (what any copier must at least do)

All three write into --dest (default: the system temp dir); on a disk where creating
a file costs ~0.7 ms, a tmpfs such as /dev/shm is several times faster for all three.

and prints each against the lower bound, and stage's time at 10x node_modules
against its time at 1x (flat = 1.0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.excludes import DEFAULT_EXCLUDES  # noqa: E402
from tasks.filtered_stage import stage_tree  # noqa: E402

MAKE_WORKSPACE = ROOT.parent / "shared" / "bench" / "make_workspace.py"


def build_workspace(out: Path, node_files: int) -> None:
    if out.exists():
        return
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(MAKE_WORKSPACE),
            str(out),
            "--seed",
            "1",
            "--node-files",
            str(node_files),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(
        f"  built {out.name} ({node_files:,} node_modules files) in "
        f"{time.perf_counter() - started:.0f}s",
        file=sys.stderr,
    )


def best_of(repeat: int, scratch: Path, run: Callable[[Path], object]) -> float:
    times = []
    for attempt in range(repeat + 1):  # the first run warms the cache and is not counted
        destination = scratch / f"dest-{attempt}"
        destination.mkdir()
        started = time.perf_counter()
        run(destination)
        elapsed = time.perf_counter() - started
        shutil.rmtree(destination)
        if attempt:
            times.append(elapsed)
    return min(times)


def measure(source: Path, scratch: Path, repeat: int) -> dict[str, float]:
    kept_list = scratch / "kept.txt"
    probe = scratch / "probe"
    probe.mkdir()
    staged = stage_tree(source, probe)
    kept = sorted(
        str(p.relative_to(probe)) for p in probe.rglob("*") if p.is_file() or p.is_symlink()
    )
    kept_list.write_text("\n".join(kept) + "\n")
    shutil.rmtree(probe)
    excludes = scratch / "excludes"
    excludes.write_text("\n".join(DEFAULT_EXCLUDES) + "\n")

    def rsync(destination: Path) -> None:
        subprocess.run(
            [
                "rsync",
                "-a",
                f"--exclude-from={excludes}",
                "--filter=:- .gitignore",
                f"{source}/",
                f"{destination}/",
            ],
            check=True,
        )

    def lower(destination: Path) -> None:
        subprocess.run(
            f"tar -C '{source}' -cf - -T '{kept_list}' | tar -C '{destination}' -xf -",
            shell=True,
            check=True,
        )

    return {
        "files": staged.kept_files + staged.kept_links,
        "stage": best_of(repeat, scratch, lambda d: stage_tree(source, d)),
        "rsync": best_of(repeat, scratch, rsync),
        "lower": best_of(repeat, scratch, lower),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply node_modules files")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, help="keep workspaces here between runs")
    parser.add_argument("--dest", type=Path, help="where copies are made (default: TMPDIR)")
    args = parser.parse_args()
    for tool in ("rsync", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    work = args.work or Path(tempfile.mkdtemp(prefix="appgen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    node_files = int(36182 * args.scale)
    results = {}
    for label, count in (("1x", node_files), ("10x", node_files * 10)):
        source = work / f"workspace-{count}"
        build_workspace(source, count)
        scratch = Path(tempfile.mkdtemp(prefix="appgen-bench-scratch-", dir=args.dest))
        results[label] = measure(source, scratch, args.repeat)
        shutil.rmtree(scratch)
    print(
        f"{'node_modules':>14} {'kept':>6} {'stage':>9} {'rsync':>9} {'lower':>9} "
        f"{'stage/lower':>12} {'rsync/lower':>12}"
    )
    for label, count in (("1x", node_files), ("10x", node_files * 10)):
        r = results[label]
        print(
            f"{count:>14,} {r['files']:>6} {r['stage'] * 1000:>7.1f}ms {r['rsync'] * 1000:>7.1f}ms"
            f" {r['lower'] * 1000:>7.1f}ms {r['stage'] / r['lower']:>12.2f} "
            f"{r['rsync'] / r['lower']:>12.2f}"
        )
    print(
        f"stage time at 10x node_modules / at 1x: "
        f"{results['10x']['stage'] / results['1x']['stage']:.2f}"
    )
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
