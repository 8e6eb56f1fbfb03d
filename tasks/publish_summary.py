"""publish_summary: what a person sees in the Prefect UI for a run — a markdown
artifact (files kept and left out, the largest exclusions, what was skipped for
safety, deploy files, per-task timings, the commit) and a link to the repository.

Paths come from the generated app: they arrive as display text (``display_path``)
and go into the markdown as code spans that cannot break out of a table cell."""

from __future__ import annotations

import re

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run

from core.models import (
    ConfiguredPart,
    DeployCheck,
    DeployFiles,
    GenerationReceipt,
    GeneratorRun,
    PublishedRepo,
    PublishRequest,
    RevisionRecord,
    SecretScan,
    StagedTree,
)
from core.paths import display_path
from tasks.step_timings import StepTiming, timings_of

_LARGEST = 10


def _code(text: str, *, in_table: bool = True) -> str:
    """``text`` as an inline code span: valid UTF-8, fenced by more backticks than it
    contains, pipes escaped in a table cell."""
    text = _cell(text) if in_table else display_path(text)
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    """``text`` as valid UTF-8 that stays inside one markdown table cell."""
    return display_path(text).replace("|", "\\|")


def summary_markdown(
    request: PublishRequest,
    generation: GeneratorRun,
    staged: StagedTree,
    deploy: DeployFiles,
    published: PublishedRepo,
    timings: list[StepTiming],
    scan: SecretScan | None = None,
    deploy_check: DeployCheck | None = None,
    configuration: tuple[ConfiguredPart, ...] = (),
    revision: RevisionRecord | None = None,
    earlier: tuple[RevisionRecord, ...] = (),
) -> str:
    commit = "a new commit" if published.new_commit else "no new commit (unchanged tree)"
    number = revision.revision if revision else 1
    title = f"Request {request.request_id}" + (f", revision {number}" if number > 1 else "")
    lines = [
        f"## {title}: {published.name}",
        "",
        f"Published [{published.url}]({published.url}) at `{published.commit_sha[:12]}`: {commit}.",
        *_revision_lines(revision, earlier, published),
        *_branch_lines(published),
        "",
        f"The agent ran {generation.confinement or 'in an unrecorded way (an older generation)'}.",
        *_receipt_lines(generation.receipt),
        "",
        "| | paths | bytes |",
        "|---|---:|---:|",
        f"| kept | {staged.kept_files} files, {staged.kept_links} links | {staged.kept_bytes:,} |",
        f"| left out | {len(staged.excluded)} | {staged.excluded_bytes:,} in files "
        "(directories are skipped unread) |",
        "",
        "### Largest exclusions",
        "",
    ]
    if staged.excluded:
        lines += ["| path | why | size |", "|---|---|---:|"]
        lines += [
            f"| {_code(item.path)} | {_cell(item.detail)} | "
            f"{'directory' if item.size is None else f'{item.size:,}'} |"
            for item in staged.largest_excluded(_LARGEST)
        ]
    else:
        lines.append("Nothing was left out.")
    if skipped := staged.skipped():
        lines += ["", "### Left out for safety or size", ""]
        lines += [
            f"- {_code(item.path, in_table=False)}: {display_path(item.detail)}" for item in skipped
        ]
    lines += _secret_scan_lines(scan)
    lines += _configuration_lines(configuration)
    lines += [
        "",
        "### Deploy files",
        "",
        *_deploy_lines(deploy, deploy_check),
        "",
        "### Timings",
        "",
        "| task | state | seconds |",
        "|---|---|---:|",
    ]
    for timing in timings:
        state = timing.state
        if timing.step == "run_generator":
            state += f" (generation took {generation.duration_seconds:.1f}s)"
        lines.append(f"| {timing.name} | {state} | {timing.seconds:.2f} |")
    return "\n".join(lines) + "\n"


def _receipt_lines(receipt: GenerationReceipt | None) -> list[str]:
    """What the agent contacted, was refused and spent, from its egress gateway."""
    if receipt is None:
        return []
    usage = receipt.usage
    lines = [
        "",
        "### Receipt",
        "",
        f"Egress `{receipt.egress}`; {usage.requests} model calls, {usage.input_tokens:,} "
        f"input and {usage.output_tokens:,} output tokens, about ${receipt.cost_usd:.4f}"
        + (f"; image `{receipt.image}`" if receipt.image else "")
        + ".",
    ]
    if receipt.attempts_dropped:
        lines += [
            "",
            "**The agent tried so many connections that the gateway stopped recording "
            "them**: the counts below are the first ones.",
        ]
    if receipt.refused:
        lines += [
            "",
            f"**The agent was refused {sum(receipt.refused.values())} time(s)**; if it "
            "needed one of these, allow it with APPGEN_AGENT_EGRESS:",
            "",
        ]
        lines += [f"- {_cell(target)}: {n}" for target, n in sorted(receipt.refused.items())]
    if receipt.contacted:
        lines += ["", "| contacted | requests |", "|---|---:|"]
        lines += [f"| {_cell(t)} | {n} |" for t, n in sorted(receipt.contacted.items())]
    return lines


def _revision_lines(
    revision: RevisionRecord | None, earlier: tuple[RevisionRecord, ...], published: PublishedRepo
) -> list[str]:
    """A revision's prompt and what it built on: the previous revision and its run."""
    if revision is None or revision.revision == 1:
        return []
    lines = ["", f"Asked: {_code(' '.join(revision.prompt.split())[:500], in_table=False)}."]
    if not published.new_commit:
        lines += ["", f"**Revision {revision.revision} changed nothing**: no commit was made."]
    if earlier:
        previous = earlier[-1]
        run = f", flow run {_flow_run_link(previous.flow_run_id)}" if previous.flow_run_id else ""
        lines += [
            "",
            f"It builds on `{(revision.base_commit or '')[:12]}`: revision {previous.revision} "
            f"(commit `{(previous.commit_sha or '')[:12]}`{run}) and whatever was pushed since.",
        ]
    return lines


def _flow_run_link(flow_run_id: str) -> str:
    """A link to the flow run in the Prefect UI, when its address is known."""
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"[`{flow_run_id}`]({ui}/runs/flow-run/{flow_run_id})" if ui else f"`{flow_run_id}`"


def _configuration_lines(parts: tuple[ConfiguredPart, ...]) -> list[str]:
    if not parts:
        return []
    lines = ["", "### Configuration", "", "| part | block | from |", "|---|---|---|"]
    lines += [f"| {part.part} | {part.kind} | {_cell(part.source)} |" for part in parts]
    return lines


def _branch_lines(published: PublishedRepo) -> list[str]:
    """Where the commit went when it was not main."""
    if published.branch is None:
        return []
    why = (
        "main holds commits appgen did not make, so"
        if published.main_moved_on
        else "APPGEN_PUBLISH_MODE=pull-request:"
    )
    where = (
        f"[its pull request]({published.pull_request_url})"
        if published.pull_request_url
        else "no pull request (the host has none)"
    )
    return ["", f"{why} the commit went to the branch `{published.branch}`, with {where}."]


def _secret_scan_lines(scan: SecretScan | None) -> list[str]:
    """The secret scan's section: what it found (path, line, rule; never the secret)."""
    if scan is None:
        return []
    lines = ["", "### Secret scan", ""]
    if scan.mode == "off":
        return [*lines, "Skipped (`APPGEN_SECRET_SCAN=off`)."]
    if not scan.findings:
        return [*lines, f"No secrets found in {scan.scanned_files} files."]
    lines += [
        f"**{len(scan.findings)} found and published anyway** (`APPGEN_SECRET_SCAN=warn`): "
        "rotate them, then remove them from the repository.",
        "",
        "| path | line | rule |",
        "|---|---:|---|",
    ]
    lines += [f"| {_code(f.path)} | {f.line} | {_cell(f.rule)} |" for f in scan.findings]
    return lines


def _deploy_lines(deploy: DeployFiles, check: DeployCheck | None) -> list[str]:
    """Deployable or not and why (app-derived text as code spans), what was written,
    and the deploy check's outcome."""
    reason = _code(deploy.deploy_reason, in_table=False)
    if deploy.deployable:
        head = f"**Deployable**: {deploy.framework} app on port {deploy.internal_port}: {reason}."
    else:
        head = (
            f"**Not deployable**: {reason}. fly.toml and the README claim nothing more "
            "(`APPGEN_REQUIRE_DEPLOYABLE=true` makes this a failed publish)."
        )
    lines = [
        head,
        "",
        f"Wrote {', '.join(deploy.written) or 'nothing'}; kept the generator's "
        f"{', '.join(deploy.kept_from_generator) or 'nothing'}.",
    ]
    if deploy.kept_edited:
        kept = ", ".join(_code(name, in_table=False) for name in deploy.kept_edited)
        lines += ["", f"Kept as they are, edited since appgen wrote them: {kept}."]
    if deploy.notes:
        lines += ["", *(f"- note: {_code(note, in_table=False)}" for note in deploy.notes)]
    if check is not None and check.verified is not None:
        lines += [
            "",
            f"Deploy check (`APPGEN_VERIFY={check.mode}`): **{check.verified}** in "
            f"{check.seconds:.1f}s ({_code(check.detail, in_table=False)}).",
        ]
    elif check is not None:
        lines += ["", f"Deploy check: not run ({_code(check.detail, in_table=False)})."]
    return lines


def publish_summary(
    request: PublishRequest,
    generation: GeneratorRun,
    staged: StagedTree,
    deploy: DeployFiles,
    published: PublishedRepo,
    scan: SecretScan | None = None,
    deploy_check: DeployCheck | None = None,
    configuration: tuple[ConfiguredPart, ...] = (),
    revision: RevisionRecord | None = None,
    earlier: tuple[RevisionRecord, ...] = (),
) -> None:
    """The run's summary and repository link, as artifacts. The publish is recorded
    before: a Prefect API that fails here (it answers 500 under load) costs the
    summary, never the outcome."""
    try:
        _create_artifacts(
            request,
            generation,
            staged,
            deploy,
            published,
            scan,
            deploy_check,
            configuration,
            revision,
            earlier,
        )
    except Exception as exc:
        get_run_logger().warning(
            "the run summary could not be written (%s); the publish is recorded", exc
        )


def _create_artifacts(
    request: PublishRequest,
    generation: GeneratorRun,
    staged: StagedTree,
    deploy: DeployFiles,
    published: PublishedRepo,
    scan: SecretScan | None,
    deploy_check: DeployCheck | None,
    configuration: tuple[ConfiguredPart, ...],
    revision: RevisionRecord | None,
    earlier: tuple[RevisionRecord, ...],
) -> None:
    timings = timings_of(flow_run.id)
    key = f"appgen-request-{request.request_id}"
    create_markdown_artifact(
        summary_markdown(
            request,
            generation,
            staged,
            deploy,
            published,
            timings,
            scan,
            deploy_check,
            configuration,
            revision,
            earlier,
        ),
        key=key,
        description=f"What request {request.request_id} published",
    )
    if published.pull_request_url:
        create_link_artifact(
            published.pull_request_url,
            link_text=f"{published.name}: pull request from {published.branch}",
            key=f"{key}-repository",
            description="The pull request of this publish",
        )
        return
    create_link_artifact(
        published.url,
        link_text=f"{published.name} @ {published.commit_sha[:12]}",
        key=f"{key}-repository",
        description="The published repository",
    )
