"""``appgen``: publish a request and look up recorded ones.

    appgen publish --prompt TEXT [--request-id N] [--app-name NAME] [--regenerate] [--json]
    appgen revise N --prompt TEXT | --from-review [--json]   one more commit of request N
    appgen status [N] [--json]          N: with its revisions
    appgen setup [--no-deploy] [--overwrite]   blocks, work pools, deployments
    appgen config [--json]              the blocks and settings a run would use
    appgen build-image | appgen reap    the Docker generator's image and leftovers
    appgen server start|stop|status     the local Prefect server runs use (appgen/server.py)

Exit codes: 0 published (or found), 1 failed, 2 bad usage or bad input. Expected
failures are printed as one clear message; the full detail stays in the Prefect run
log. With ``--json`` the last line of stdout is one JSON object. ``server status``
exits 0 when the server runs, 1 when it does not.

Read-only commands (``status``, ``server``, ``--help``, bad usage) never import
Prefect, and import the rest only where it is used: each costs a visible fraction
of a second.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from core.processes import make_non_dumpable

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State
    from rich.console import Console

    from appgen.server import ServerState
    from blocks.configuration import RunBlocks
    from core.models import PublishOutcome, RequestOutcome, RequestRecord
    from core.settings import HomeSettings, ReapSettings, Settings

SettingsT = TypeVar("SettingsT", bound="HomeSettings")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The flow's parameters that name saved blocks.
_BLOCK_PARTS = ("generator", "git_host", "artifact_store", "database")
MAX_REQUEST_ID = 2**63 - 1  # request ids are 64-bit database keys


@functools.cache
def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _say(text: object, label: str = "", style: str = "") -> None:
    """One line on stderr: an optional styled label, then ``text`` as plain text
    (never parsed as markup: errors, names and prompts may contain ``[...]``)."""
    from rich.text import Text

    _stderr().print(Text.assemble((label, style), str(text)) if label else Text(str(text), style))


class _UsageError(Exception):
    """Bad input detected before anything ran or was created."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    if value > MAX_REQUEST_ID:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_REQUEST_ID} (request ids are 64-bit), not {value}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appgen", description="Generate apps and publish them as Git repositories."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    publish = commands.add_parser("publish", help="run the whole flow for one request")
    publish.add_argument("--prompt", required=True, help="what the app should be")
    publish.add_argument("--request-id", type=_positive_int, help="re-run this request")
    publish.add_argument("--app-name", help="repository and Fly app name")
    publish.add_argument(
        "--regenerate", action="store_true", help="run the generator even if cached"
    )
    publish.add_argument("--json", action="store_true", help="end with one JSON object")
    _block_arguments(publish)

    revise = commands.add_parser(
        "revise", help="change a published app with a follow-up prompt: one more commit"
    )
    revise.add_argument("request_id", type=_positive_int, metavar="N", help="the request")
    asked = revise.add_mutually_exclusive_group(required=True)
    asked.add_argument("--prompt", help="what to change")
    asked.add_argument(
        "--from-review",
        action="store_true",
        help="address the review comments on the request's pull request not yet addressed",
    )
    revise.add_argument("--json", action="store_true", help="end with one JSON object")
    _block_arguments(revise)

    status = commands.add_parser("status", help="the recorded state of requests")
    status.add_argument("request_id", nargs="?", type=_positive_int, metavar="N")
    status.add_argument("--json", action="store_true", help="print JSON")

    image = commands.add_parser(
        "build-image", help="build the generator image without a registry (debootstrap)"
    )
    image.add_argument("--tag", help="image tag (default: APPGEN_DOCKER_IMAGE)")
    image.add_argument("--mirror", help="Debian mirror for debootstrap")
    image.add_argument("--force", action="store_true", help="rebuild even if up to date")

    commands.add_parser(
        "reap", help="repair rows, slots, temp dirs and containers that killed runs left"
    )

    server = commands.add_parser(
        "server", help="the local Prefect server runs use when PREFECT_API_URL is not set"
    )
    server.add_argument("action", choices=("start", "stop", "status"))

    setup = commands.add_parser(
        "setup", help="register blocks, create work pools and slots, apply deployments"
    )
    setup.add_argument(
        "--no-deploy", action="store_true", help="skip applying prefect.yaml's deployments"
    )
    setup.add_argument(
        "--overwrite",
        action="store_true",
        help="replace saved appgen-*/default blocks with the settings (default: keep them)",
    )

    config = commands.add_parser(
        "config", help="the configuration a run would use: each block and where it comes from"
    )
    _block_arguments(config)
    config.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _block_arguments(parser: argparse.ArgumentParser) -> None:
    """The flow's block parameters: a saved block's "block-type-slug/name" each."""
    for part in _BLOCK_PARTS:
        parser.add_argument(
            f"--{part.replace('_', '-')}",
            metavar="BLOCK",
            help=f"saved {part.replace('_', ' ')} block (default: its appgen-*/default, "
            "else the settings)",
        )


class _Stopped(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's exception: both stop a run the same way."""

    signal = signal.SIGTERM


def _stop_on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: let cleanup finish
    raise _Stopped


def main(argv: list[str] | None = None) -> NoReturn:
    """Run one command and exit with its code."""
    make_non_dumpable()  # no agent of this user reads our environment or memory
    # A temporary Prefect API this process might start inherits this: no telemetry
    # attempts (and no "Failed to send telemetry" error without internet access).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Nor from Prefect's client (its SDK analytics); DO_NOT_TRACK=0 turns them back on.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    from core.errors import AppgenError
    from core.settings import HomeSettings, ReapSettings, Settings

    try:
        if args.command in _HOME_COMMANDS:
            code = _HOME_COMMANDS[args.command](args, _load_settings(HomeSettings))
        elif args.command == "reap":
            code = _reap(args, _load_settings(ReapSettings))
        else:
            settings = _load_settings(Settings)
            if args.command in _PREFECT_API_COMMANDS:
                _use_managed_server(settings)
            code = _COMMANDS[args.command](args, settings)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through _stop_on_sigterm
        stopped_by = signal.Signals(getattr(exc, "signal", signal.SIGINT))
        _say(
            f"stopped by {stopped_by.name}: the generator was stopped, temporary files were "
            "removed, and the request (if it had started) is recorded as cancelled",
            "cancelled: ",
            "yellow",
        )
        code = 128 + stopped_by.value
    except _UsageError as exc:
        _say(exc, "error: ", "red")
        code = EXIT_USAGE
    except AppgenError as exc:
        _say(exc, "error: ", "red")
        code = EXIT_FAILED
    except Exception as exc:
        from appgen.prefect_api import prefect_api_problem

        if (problem := prefect_api_problem(exc)) is None:
            raise
        _say(problem, "error: ", "red")
        code = EXIT_FAILED
    sys.exit(code)


def _load_settings(kind: type[SettingsT]) -> SettingsT:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return kind()
    except ValidationError as exc:
        problems = "; ".join(
            f"APPGEN_{'_'.join(map(str, e['loc'])).upper() or 'SETTINGS'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise _UsageError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # a value pydantic-settings itself could not decode
        raise _UsageError(f"invalid settings: {exc}; check the APPGEN_* variables") from None


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from core.errors import InvalidRequest
    from core.models import check_app_name, check_prompt

    try:
        check_prompt(args.prompt)
        if args.app_name is not None:
            check_app_name(args.app_name)
    except InvalidRequest as exc:
        raise _UsageError(str(exc)) from None

    from flows.publish import generate_and_publish  # before the display: it sets up logging

    def start() -> State:
        return generate_and_publish(
            prompt=args.prompt,
            request_id=args.request_id,
            app_name=args.app_name,
            regenerate=args.regenerate,
            **{part: getattr(args, part) for part in _BLOCK_PARTS},
            return_state=True,
        )

    return _run_flow(args, settings, start)


def _revise(args: argparse.Namespace, settings: Settings) -> int:
    from core.errors import InvalidRequest
    from core.models import check_prompt

    try:
        if args.prompt is not None:
            check_prompt(args.prompt)
    except InvalidRequest as exc:
        raise _UsageError(str(exc)) from None

    def known(blocks: RunBlocks) -> None:
        if blocks.database.get(args.request_id) is None:
            raise _UsageError(
                f"there is no request {args.request_id} in {blocks.database.display_url()}: "
                "publish one with `appgen publish --prompt …`, or see `appgen status`"
            )

    from flows.revise import revise_app  # before the display: it sets up logging

    def start() -> State:
        return revise_app(
            request_id=args.request_id,
            prompt=args.prompt,
            from_review=args.from_review,
            **{part: getattr(args, part) for part in _BLOCK_PARTS},
            return_state=True,
        )

    return _run_flow(args, settings, start, known)


def _run_flow(
    args: argparse.Namespace,
    settings: Settings,
    start: Callable[[], State],
    check: Callable[[RunBlocks], None] = lambda blocks: None,
) -> int:
    """Run a flow (``start``) for ``args.request_id`` once the configuration and
    ``check`` pass, showing its steps, then report its outcome."""
    from appgen.prefect_api import prefect_api_errors
    from core.errors import DatabaseError, InvalidRequest, PrefectApiError, SecretsFound, describe
    from core.models import PublishOutcome, RequestStatus

    try:
        # An incomplete configuration (say APPGEN_GENERATOR=ecs without a cluster)
        # or a place appgen cannot use is bad input too: refuse it before anything
        # is created.
        settings.check_usable()
        with prefect_api_errors():
            server = _use_managed_server(settings)
            blocks = _run_blocks(args, settings)
    except InvalidRequest as exc:
        raise _UsageError(str(exc)) from None
    except PrefectApiError as exc:  # no Prefect server to run on: the request did not start
        return _not_started(args, exc)
    try:
        blocks.database.migrate()  # the URL is good: creating the file is fine
        check(blocks)
    except DatabaseError as exc:  # unreachable, say: the request did not start
        return _not_started(args, exc)

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    # No flow-run heartbeats: waiting for their thread costs up to a second at the end
    # of every run, and a run the CLI started is watched by its caller (a killed one
    # is repaired by appgen's own leases; `appgen reap`).
    try:
        with (
            prefect_api_errors(),
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
            _ProgressDisplay() as progress,
        ):
            state = start()
            progress.stop()
    except PrefectApiError as exc:  # lost as the run started, or while it ran
        lost = PrefectApiError(f"{exc} (a request it had started is repaired by `appgen reap`)")
        return _not_started(args, lost)
    flow_run_id = str(state.state_details.flow_run_id)
    try:
        record = blocks.database.request_of_flow_run(flow_run_id)
    except DatabaseError:  # the run's own error says so; the JSON line still comes
        record = None
    if state.is_completed():
        outcome: PublishOutcome = state.result()
        _report_published(outcome)
        code = EXIT_OK
    else:
        error = state.result(raise_on_failure=False)
        message = describe(error) if isinstance(error, BaseException) else str(state.message)
        failed = {
            "status": RequestStatus.FAILED,
            "error": message,
            "secret_findings": error.findings if isinstance(error, SecretsFound) else [],
        }
        outcome = (
            PublishOutcome.of_record(record, **failed)
            if record
            else PublishOutcome(request_id=args.request_id, **failed)
        )
        rid = record.request_id if record else args.request_id
        where = f"request {rid}" if rid else "the request"
        if record and record.revision and record.revision > 1:
            where += f", revision {record.revision},"
        _say(message, f"{where} failed: ", "red")
        api = f"PREFECT_API_URL={server.api_url} " if server else ""
        _say(f"full log: {api}prefect flow-run logs {flow_run_id}", style="dim")
        code = EXIT_USAGE if isinstance(error, InvalidRequest) else EXIT_FAILED
    if args.json:
        print(json.dumps(_result_json(outcome, flow_run_id)))
    return code


def _report_published(outcome: PublishOutcome) -> None:
    revision = f", revision {outcome.revision}" if (outcome.revision or 1) > 1 else ""
    _say(
        f"request {outcome.request_id}{revision} ({outcome.app_name}): "
        f"{outcome.repo_url} @ {(outcome.commit_sha or '')[:12]}",
        "revised " if revision else "published ",
        "green",
    )
    if outcome.changed is False:
        _say("nothing changed: no new commit was made", style="yellow")
    if outcome.deployable is False:
        _say(
            f"{outcome.deploy_reason} (see the README's Deploy section)",
            "not deployable: ",
            "yellow",
        )
    if outcome.verified is not None:
        detail = f" ({outcome.verify_detail})" if outcome.verify_detail else ""
        _say(f"deploy check: {outcome.verified}{detail}", style="dim")
    if outcome.receipt is not None:
        _say(f"{_model_use(outcome)} (egress {outcome.receipt.egress})", "agent: ")
    if outcome.pull_request_url:
        _say(f"{outcome.pull_request_url} (branch {outcome.branch})", "pull request: ")
    elif outcome.branch:
        _say(f"pushed to the branch {outcome.branch}, not main", "for review: ")
    for finding in outcome.secret_findings:
        _say(f"{finding}, published anyway (APPGEN_SECRET_SCAN=warn)", "secret: ", "yellow")


def _status(args: argparse.Namespace, settings: HomeSettings) -> int:
    # The settings' database, read without Prefect: the block is the same store.
    from core.database import RequestStore
    from core.errors import InvalidRequest

    try:
        settings.check_database_url()
    except InvalidRequest as exc:
        raise _UsageError(str(exc)) from None
    assert settings.database_url is not None  # derived from APPGEN_HOME
    database = RequestStore(settings.database_url)
    if args.request_id is not None:
        record = database.get(args.request_id)
        if record is None:
            raise _UsageError(f"no request {args.request_id} in {database.display_url()}")
        records = [record]
        revisions = database.revisions(args.request_id)
    else:
        records = database.all()
        revisions = []
    if args.json:
        if args.request_id is None:
            print(json.dumps([_record_json(r) for r in records]))
        else:
            revised = [r.model_dump(mode="json", exclude={"rendered"}) for r in revisions]
            print(json.dumps(_record_json(records[0]) | {"revisions": revised}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = Console(width=None if sys.stdout.isatty() else 240)

    table = Table("id", "status", "app", "repository", "commit", "model use", "updated", "error")
    for r in records:
        colour = {"published": "green", "failed": "red"}.get(r.status.value, "yellow")
        table.add_row(
            str(r.request_id),
            Text(r.status.value, colour),
            Text(r.app_name or ""),
            Text(r.repo_url or ""),
            (r.commit_sha or "")[:12],
            _model_use(r),
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
            Text((r.error or "").splitlines()[0][:60] if r.error else ""),
        )
    # Piped output keeps full URLs and hashes rather than truncating to 80 columns.
    out.print(table if records else "no requests yet")
    if revisions:
        history = Table(
            "revision",
            "status",
            "prompt",
            "base",
            "commit",
            "model cost",
            "updated",
            "error",
            title="revisions",
            title_justify="left",
        )
        for v in revisions:
            colour = {"published": "green", "failed": "red"}.get(v.status.value, "yellow")
            commit = (v.commit_sha or "")[:12] + (" (unchanged)" if v.changed is False else "")
            history.add_row(
                str(v.revision),
                Text(v.status.value, colour),
                Text(" ".join(v.prompt.split())[:60]),
                (v.base_commit or "")[:12],
                commit,
                f"${v.agent_cost_usd:.4f}" if v.agent_cost_usd is not None else "",
                f"{v.updated_at:%Y-%m-%d %H:%M:%S}",
                Text((v.error or "").splitlines()[0][:60] if v.error else ""),
            )
        out.print(history)
    return EXIT_OK


def _model_use(outcome: RequestOutcome) -> str:
    """``12,345 tokens, $0.0412`` (and the refusals) from a generation's receipt."""
    receipt = outcome.receipt
    if receipt is None:
        return ""
    refused = sum(receipt.refused.values())
    return f"{receipt.usage.tokens:,} tokens, ${receipt.cost_usd:.4f}" + (
        f"; {refused} refused" if refused else ""
    )


def _server(args: argparse.Namespace, settings: HomeSettings) -> int:
    """``appgen server start|stop|status``: the managed Prefect server (appgen/server.py)."""
    from appgen.server import ManagedServer

    server = ManagedServer(settings.home)
    if dead := server.forget_if_dead():
        _say(
            f"the server (pid {dead.pid}) had stopped without `appgen server stop`; "
            "removed its state file",
            style="dim",
        )
    if args.action == "status":
        state = server.running()
        if state is None:
            print("not running")
            return EXIT_FAILED
        answers = "" if server.healthy(state) else f"; not answering yet, see {server.log}"
        print(f"running at {state.ui_url} (API {state.api_url}, pid {state.pid}{answers})")
        return EXIT_OK
    if args.action == "stop":
        stopped = server.stop()
        print(f"stopped the server at {stopped.ui_url}" if stopped else "not running")
        return EXIT_OK
    state, started = server.ensure_started(
        settings.server_start_timeout, settings.server_idle_minutes
    )
    what = "started" if started else "already running"
    print(f"{what} at {state.ui_url} (API {state.api_url}, pid {state.pid}; log {server.log})")
    return EXIT_OK


def _use_managed_server(settings: HomeSettings) -> ServerState | None:
    """Point Prefect at the managed server unless a Prefect API is configured."""
    from appgen.server import use_for_prefect

    return use_for_prefect(
        settings.home,
        settings.server_start_timeout,
        settings.server_idle_minutes,
        lambda line: _say(line, style="dim"),
    )


def _build_image(args: argparse.Namespace, settings: Settings) -> int:
    from blocks import defaults
    from deployments.generator_image import DEFAULT_MIRROR, build_generator_image

    with defaults.docker_generator(settings).docker_client() as client:
        build = build_generator_image(
            client,
            tag=args.tag or settings.docker.image,
            mirror=args.mirror or DEFAULT_MIRROR,
            force=args.force,
            log=lambda line: _say(line, style="dim"),
        )
    what = "built" if build.built else "up to date:"
    _say(f"{what} {build.tag} ({build.content[:12]}) in {build.seconds:.1f}s")
    return EXIT_OK


def _reap(args: argparse.Namespace, settings: ReapSettings) -> int:
    """Repair what killed orchestrators left: rows and slots they held, their
    temporary directories, and (Docker mode) their generator containers."""
    from datetime import timedelta

    from blocks import defaults
    from core.processes import temp_dir_is_orphaned

    database = defaults.database(settings)
    for record in database.repair_abandoned(timedelta(seconds=settings.lease_seconds)):
        _say(f"request {record.request_id}: {record.status.value} ({record.error})", "repaired ")
    removed = 0
    for parent in {Path(tempfile.gettempdir()), settings.staging_dir or Path("/nonexistent")}:
        for entry in parent.glob("appgen-*"):
            if entry.is_dir() and temp_dir_is_orphaned(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    _say(f"{removed} temporary director{'y' if removed == 1 else 'ies'} of dead runs removed")
    if settings.generator == "docker":
        reaped = defaults.docker_generator(settings).reap()
        for container in reaped:
            _say(
                f"removed {container.container_id} (request {container.request_id}): "
                f"{container.reason}"
            )
        _say(f"{len(reaped)} orphaned generator container(s) removed")
    return EXIT_OK


def _record_json(record: RequestRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _result_json(outcome: PublishOutcome, flow_run_id: str | None) -> dict[str, Any]:
    """``appgen publish --json``'s object: the outcome and the flow run that made it."""
    return outcome.model_dump(mode="json") | {"flow_run_id": flow_run_id}


def _not_started(args: argparse.Namespace, error: Exception) -> int:
    """Report a publish that failed before its flow run could report (with --json, as
    the usual result object)."""
    from core.models import PublishOutcome, RequestStatus

    _say(error, "error: ", "red")
    if args.json:
        outcome = PublishOutcome(
            request_id=args.request_id,
            status=RequestStatus.FAILED,
            app_name=getattr(args, "app_name", None),
            error=str(error),
        )
        print(json.dumps(_result_json(outcome, None)))
    return EXIT_FAILED


def _setup(args: argparse.Namespace, settings: Settings) -> int:
    from deployments.setup import setup

    setup(settings, deploy=not args.no_deploy, overwrite=args.overwrite, log=_say)
    _say("setup complete", style="green")
    return EXIT_OK


def _run_blocks(args: argparse.Namespace, settings: Settings) -> RunBlocks:
    """The blocks a run with these arguments uses (Prefect is imported only here)."""
    from blocks.configuration import run_blocks

    return run_blocks(settings, **{part: getattr(args, part) for part in _BLOCK_PARTS})


def _config(args: argparse.Namespace, settings: Settings) -> int:
    """Each part a run would use, where it comes from and its fields (secrets
    masked), the run's own settings, and APPGEN_* variables that are ignored."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from blocks.configuration import block_fields
    from core.errors import InvalidRequest
    from core.settings import ignored_variables

    try:
        blocks = _run_blocks(args, settings)
    except InvalidRequest as exc:
        raise _UsageError(str(exc)) from None
    parts = [
        part.model_dump()
        | {
            "source": part.source,
            "fields": _flat(block_fields(block, mode="json")),
        }
        for part, block in blocks.chosen()
    ]
    run_settings = _flat(settings.model_dump(mode="json"))
    ignored = ignored_variables(os.environ)
    if args.json:
        print(json.dumps({"parts": parts, "settings": run_settings, "ignored": ignored}))
        return EXIT_OK
    out = Console(width=None if sys.stdout.isatty() else 240, highlight=False)
    for part in parts:
        table = Table(
            "field", "value", title=f"{part['part']}: {part['kind']}", title_justify="left"
        )
        for field, value in part["fields"].items():
            table.add_row(field, Text(json.dumps(value) if not isinstance(value, str) else value))
        out.print(table)
        out.print(Text(f"  from the {part['source']}\n", style="dim"))
    table = Table("setting", "value", title="run settings (APPGEN_*)", title_justify="left")
    for field, value in run_settings.items():
        table.add_row(f"APPGEN_{field.upper()}", Text(str(value)))
    out.print(table)
    for line in ignored:
        _say(line, "ignored: ", "yellow")
    return EXIT_OK


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested fields as dotted names."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


_COMMANDS = {
    "config": _config,
    "publish": _publish,
    "revise": _revise,
    "build-image": _build_image,
    "setup": _setup,
}
# Commands that read only where appgen keeps its state: they run whatever the rest of
# the settings say (as `reap` does, which reads ReapSettings).
_HOME_COMMANDS = {"status": _status, "server": _server}
# Commands that talk to the Prefect API: without PREFECT_API_URL they use the managed
# server (publish connects itself, after the checks that need no server).
_PREFECT_API_COMMANDS = frozenset({"setup", "config"})


# Prefect's own modules that log each run's state changes.
_ENGINE_MODULES = frozenset({"task_engine", "flow_engine"})


class _ProgressDisplay(logging.Handler):
    """Shows the run's steps on stderr in place of Prefect's console log, which
    would print tracebacks for expected failures. The Prefect API still receives
    every record, so the run log keeps the full detail."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._status = _stderr().status("starting", spinner="dots")

    def __enter__(self) -> _ProgressDisplay:
        from prefect.logging.handlers import PrefectConsoleHandler

        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]:
            root.removeHandler(handler)
        root.addHandler(self)
        self._status.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Prefect's console handler stays out until the process exits: its shutdown
        # messages are not for people either.
        self.stop()

    def stop(self) -> None:
        self._status.stop()

    def emit(self, record: logging.LogRecord) -> None:
        from rich.text import Text

        if record.levelno >= logging.ERROR:
            return  # the failure is reported once, after the run
        if record.levelno < logging.WARNING and record.module in _ENGINE_MODULES:
            return  # "Finished in state Completed()" after every step says nothing
        step = getattr(record, "task_name", None)
        if step:  # a task run's record; flow-level ones would repeat the final error
            _stderr().print(Text.assemble((f"{step:<20} ", "dim"), record.getMessage()))
            self._status.update(f"{step}")
        elif record.levelno >= logging.WARNING:
            _say(record.getMessage(), "warning: ", "yellow")
