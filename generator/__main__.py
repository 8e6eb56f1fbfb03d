"""Command line of the generator: ``python -m generator [--agent NAME] ...``.

Every option falls back to the environment variable the orchestrator sets
(``APPGEN_REQUEST_ID``, ``APPGEN_PROMPT``, ``APPGEN_APP_DIR``, ``APPGEN_AGENT``,
``APPGEN_AGENT_COMMAND``, ``APPGEN_TIMEOUT_SECONDS``, ``APPGEN_GATEWAY_DIR``), so a
container needs no command-line overrides.

A revision (``APPGEN_BASE_COMMIT`` set) finds the app it changes already in the app
directory (or downloads it from ``APPGEN_BASE_URL``, on ECS), and the earlier
prompts in ``APPGEN_EARLIER_PROMPTS`` (a JSON list,
oldest first); the ``command`` agent reads them from the JSON file named by
``APPGEN_PROMPT_HISTORY``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from generator.agents import AGENTS, AgentError
from generator.egress import open_gateway
from generator.package import PackageError, download_and_unpack, package_and_upload
from generator.reaper import Reaper


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__)
    parser.add_argument("--request-id", default=env("APPGEN_REQUEST_ID"))
    parser.add_argument("--prompt", default=env("APPGEN_PROMPT"))
    parser.add_argument("--app-dir", type=Path, default=env("APPGEN_APP_DIR"))
    parser.add_argument("--agent", choices=sorted(AGENTS), default=env("APPGEN_AGENT", "template"))
    parser.add_argument("--agent-command", default=env("APPGEN_AGENT_COMMAND"))
    parser.add_argument(
        "--upload-url",
        default=env("APPGEN_UPLOAD_URL"),
        help="presigned PUT URL: package the app as a tarball and upload it there",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=env("APPGEN_TIMEOUT_SECONDS"),
        help="seconds after which the generator stops the agent and exits 124, whether "
        "or not anyone is still watching",
    )
    parser.add_argument(
        "--gateway-dir",
        type=Path,
        default=env("APPGEN_GATEWAY_DIR"),
        help="directory of the egress gateway's sockets: the agent reaches the network "
        "and its model only through them",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="empty the app directory first, so a new generation never mixes in old "
        "files (a revision's directory holds its base, and is kept)",
    )
    return parser


def empty_directory(path: Path) -> None:
    """Remove what is inside ``path`` (links are removed, never followed)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def _earlier_prompts(text: str | None) -> list[str]:
    try:
        prompts = json.loads(text or "[]")
    except ValueError:
        prompts = None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise SystemExit("generator: APPGEN_EARLIER_PROMPTS is not a JSON list of prompts")
    return prompts


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    missing = [name for name in ("request_id", "prompt", "app_dir") if not getattr(args, name)]
    if missing:
        parser.error("missing " + ", ".join("--" + name.replace("_", "-") for name in missing))
    app_dir = Path(args.app_dir).absolute()
    app_dir.mkdir(parents=True, exist_ok=True)
    base_commit = os.environ.get("APPGEN_BASE_COMMIT")
    base_url = os.environ.get("APPGEN_BASE_URL")
    if args.fresh and not (base_commit and not base_url):  # else the base is in place
        empty_directory(app_dir)
    earlier = _earlier_prompts(os.environ.get("APPGEN_EARLIER_PROMPTS"))
    if base_commit:
        revision = os.environ.get("APPGEN_REVISION", "?")
        print(f"generator: revision {revision}, changing the app at {base_commit[:12]}", flush=True)
    if args.gateway_dir:
        os.environ.update(open_gateway(Path(args.gateway_dir)))
        print("generator: network and model API through the egress gateway", flush=True)
    if base_url:
        try:
            unpacked = download_and_unpack(base_url, app_dir)
        except PackageError as exc:
            print(f"generator: error: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"generator: unpacked the revision's base ({unpacked} files)", flush=True)
    started = time.monotonic()
    print(f"generator: request {args.request_id}: agent {args.agent!r} in {app_dir}", flush=True)
    try:
        with Reaper(args.timeout), tempfile.TemporaryDirectory(prefix="appgen-history-") as temp:
            history = Path(temp) / "prompts.json"  # [] for a first generation
            history.write_text(json.dumps(earlier), encoding="utf-8")
            os.environ["APPGEN_PROMPT_HISTORY"] = str(history)
            AGENTS[args.agent](
                request_id=str(args.request_id),
                prompt=args.prompt,
                app_dir=app_dir,
                command=args.agent_command,
                earlier_prompts=earlier,
            )
        if args.upload_url:
            print(f"generator: {package_and_upload(app_dir, args.upload_url)}", flush=True)
    except (AgentError, PackageError) as exc:
        print(f"generator: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"generator: done in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
