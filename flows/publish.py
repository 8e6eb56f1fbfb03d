"""generate_and_publish: a prompt in, a published repository and a database row out.

    register → claim → run_generator → fetch_artifact → filtered_stage → scan_secrets
             → create_repository → render_deploy_files → verify_deploy → git_push → update_db
             → summary

``flows/revise.py`` runs the same steps for a follow-up prompt (a revision), from
the tree the repository holds (``fetch_base``) instead of an empty directory.

Registering, claiming, the status updates on the way and the summary are plain calls;
the steps that do the work (and the final update_db) are task runs in the UI.

run_generator is cached on its inputs, so running the same request again after a
failed publish redoes only the cheap steps. The secret scan runs before the repository
is created, so a blocked publish leaves nothing on the Git host. The row's terminal
state is written by the flow's state hooks (failed, crashed, cancelled), so it lands
however the run ends.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from blocks.configuration import RunBlocks, run_blocks
from core.errors import InvalidRequest
from core.launch.gate import enforce
from core.models import (
    BaseTree,
    CommitAuthor,
    GenerationSpec,
    LeaseHolder,
    PublishOutcome,
    PublishRequest,
    RemoteRepository,
    RequestStatus,
    RequestUpdate,
    RevisionRecord,
)
from core.processes import current_process, make_non_dumpable
from core.settings import Settings
from tasks.claim_request import Heartbeat, check_crashes, claim_request
from tasks.create_repository import create_repository
from tasks.fetch_artifact import fetch_artifact
from tasks.filtered_stage import filtered_stage
from tasks.git_push import git_push
from tasks.publish_summary import publish_summary
from tasks.render_deploy_files import render_deploy_files
from tasks.run_generator import run_generator
from tasks.scan_secrets import scan_secrets
from tasks.update_db import (
    record_cancelled,
    record_failed,
    record_progress,
    record_revision,
    register_request,
    update_db,
)
from tasks.verify_deploy import verify_deploy


@flow(
    name="generate-and-publish",
    on_failure=[record_failed],
    on_crashed=[record_failed],
    on_cancellation=[record_cancelled],
)
def generate_and_publish(
    prompt: str,
    request_id: int | None = None,
    app_name: str | None = None,
    regenerate: bool = False,
    generator: str | None = None,
    git_host: str | None = None,
    artifact_store: str | None = None,
    database: str | None = None,
    generator_block: str | None = None,
) -> PublishOutcome:
    """Generate the app a prompt asks for and publish it as a Git repository.

    Args:
        prompt: what the app should be.
        request_id: the request to (re)publish; a new one is assigned when omitted
            (a retry of this flow run keeps the one its first attempt registered).
        app_name: repository and Fly app name; derived from the prompt when omitted.
        regenerate: run the generator again even if this request was generated before.
        generator: the saved generator block to run ("block-type-slug/name"); default:
            the saved appgen-<type>-generator/default of APPGEN_GENERATOR's type, else
            the one the settings describe. So are the next three.
        git_host: the saved Git host block to publish to.
        artifact_store: the saved S3 artifact store of an ECS generator.
        database: the saved database block that records the request.
        generator_block: the former name of ``generator``.
    """
    run = start_run(
        _one_of("generator", generator, "generator_block", generator_block),
        git_host,
        artifact_store,
        database,
    )
    records = run.blocks.database
    if request_id is not None and len(records.revisions(request_id)) > 1:
        raise InvalidRequest(
            f"request {request_id} has been revised since its first publish: change it with "
            f"`appgen revise {request_id} --prompt …` (the revise-app flow), which builds on "
            "what its repository holds"
        )
    request = register_request(records, prompt, request_id, app_name, run.holder.flow_run_id)
    with claimed(run, request) as request, ExitStack() as temp:
        revision = records.put_revision(
            request.request_id, 1, request.prompt, run.holder.flow_run_id, error=None
        )
        return publish_revision(run, request, revision, temp, regenerate=regenerate)


@dataclass(frozen=True)
class RunParts:
    """What every step of one run uses: its settings, blocks and lease."""

    settings: Settings
    blocks: RunBlocks
    holder: LeaseHolder
    lease: timedelta


def start_run(
    generator: str | None, git_host: str | None, artifact_store: str | None, database: str | None
) -> RunParts:
    """The settings and blocks of this flow run (saved blocks by name, else the settings)."""
    make_non_dumpable()  # a worker's process too: no agent reads its environment
    settings = Settings()
    blocks = run_blocks(
        settings,
        generator=generator,
        git_host=git_host,
        artifact_store=artifact_store,
        database=database,
    )
    get_run_logger().info("configuration:\n%s", blocks.describe())
    holder = LeaseHolder(flow_run_id=str(flow_run.id), process=current_process())
    return RunParts(settings, blocks, holder, timedelta(seconds=settings.lease_seconds))


@contextlib.contextmanager
def claimed(run: RunParts, request: PublishRequest) -> Iterator[PublishRequest]:
    """Hold the request's claim (heartbeat included) for the block; yields the request
    as its row is once claimed."""
    records = run.blocks.database
    with Heartbeat(records, run.holder, interval=run.lease.total_seconds() / 4):
        row = claim_request(records, request.request_id, run.holder, run.lease, get_run_logger())
        check_crashes(run.holder.flow_run_id, run.settings.crash_resubmits)
        # What an earlier run of the request pushed and created may be newer than the
        # registration: a run that waited for the claim must build on it.
        yield request.model_copy(update={"published_sha": row.commit_sha, "repo_id": row.repo_id})


def publish_revision(
    run: RunParts,
    request: PublishRequest,
    revision: RevisionRecord,
    temp: ExitStack,
    *,
    regenerate: bool = False,
    base: BaseTree | None = None,
    repository: RemoteRepository | None = None,
    earlier: tuple[RevisionRecord, ...] = (),
) -> PublishOutcome:
    """Generate one revision of a claimed request and publish it: the first from
    nothing, a later one from ``base`` (the ``earlier`` revisions' work and whatever
    else the repository holds) into the known ``repository``."""
    settings, blocks, records = run.settings, run.blocks, run.blocks.database
    rid, number = request.request_id, revision.revision
    progress = RequestUpdate(request_id=rid, status=RequestStatus.GENERATING, revision=number)
    record_progress(records, progress)
    record_revision(
        records,
        revision,
        status=RequestStatus.GENERATING,
        base_commit=base.commit if base else None,
    )
    spec = GenerationSpec(
        request_id=rid,
        registered_at=request.registered_at,
        prompt=revision.prompt,
        agent=settings.agent,
        agent_command=settings.agent_command,
        agent_env=tuple(blocks.generator.env_allowlist),
        output=blocks.generator.output_location(),
        revision=number,
        base_commit=base.commit if base else None,
        earlier_prompts=tuple(r.prompt for r in earlier),
    )
    generation = run_generator.with_options(refresh_cache=regenerate)(
        spec, blocks.generator, records, run.holder, settings.generator_slots, run.lease, base
    )
    if receipt := generation.receipt:
        usage = {"agent_tokens": receipt.usage.tokens, "agent_cost_usd": receipt.cost_usd}
        record_progress(records, progress.model_copy(update=usage | {"receipt": receipt}))
        revision = record_revision(records, revision, status=RequestStatus.GENERATING, **usage)
    source = fetch_artifact(generation, blocks.artifact_store)
    if source.temporary:
        temp.callback(remove_tree, source.path)
    staged = filtered_stage(source.path, settings.max_file_bytes, settings.staging_dir)
    temp.callback(remove_tree, staged.path)
    scan = scan_secrets(
        staged,
        settings.secret_scan,
        spec.agent_env,
        revision.prompt,
        tuple(blocks.known_secrets()),
    )
    repository = repository or create_repository(request, blocks.git_host)
    publishing = RequestUpdate(
        request_id=rid,
        status=RequestStatus.PUBLISHING,
        app_name=repository.name,
        repo_url=repository.url,
        repo_id=repository.id,
    )
    record_progress(records, publishing)
    last_rendered = earlier[-1].rendered if earlier else None
    deploy = render_deploy_files(staged, repository.name, settings.fly_region, last_rendered)
    check = verify_deploy(
        staged, deploy, settings.verify, settings.verify_timeout, settings.verify_answer_seconds
    )
    checked = {
        "deployable": deploy.deployable,
        "deploy_reason": deploy.deploy_reason,
        "verified": check.verified,
        "verify_detail": check.detail if check.verified is not None else None,
    }
    record_progress(records, publishing.model_copy(update=checked))
    enforce(deploy, check, require_deployable=settings.require_deployable)  # before the push
    author = CommitAuthor(name=settings.git_author_name, email=settings.git_author_email)
    published = git_push(
        staged,
        request,
        repository,
        blocks.git_host,
        author,
        settings.publish_mode,
        revision,
        earlier,
        base.commit if base else None,
    )
    outcome = {
        "repo_url": published.url,
        "commit_sha": published.commit_sha,
        "branch": published.branch,
        "pull_request_url": published.pull_request_url,
    }
    revision = record_revision(
        records,
        revision,
        status=RequestStatus.PUBLISHED,
        commit_sha=published.commit_sha,
        changed=published.new_commit,
        rendered=deploy.rendered,
        error=None,
    )
    update_db(
        records,
        run.holder,
        RequestUpdate(request_id=rid, status=RequestStatus.PUBLISHED, error=None, **outcome),
    )
    publish_summary(
        request,
        generation,
        staged,
        deploy,
        published,
        scan=scan,
        deploy_check=check,
        configuration=blocks.parts,
        revision=revision,
        earlier=earlier,
    )
    return PublishOutcome(
        request_id=rid,
        status=RequestStatus.PUBLISHED,
        app_name=repository.name,
        repo_id=repository.id,
        secret_findings=scan.findings,
        agent_tokens=generation.receipt.usage.tokens if generation.receipt else None,
        agent_cost_usd=generation.receipt.cost_usd if generation.receipt else None,
        receipt=generation.receipt,
        revision=number,
        changed=published.new_commit,
        **checked,
        **outcome,
    )


def _one_of(name: str, value: str | None, alias: str, alias_value: str | None) -> str | None:
    if value and alias_value and value != alias_value:
        raise InvalidRequest(
            f"{name}={value!r} and {alias}={alias_value!r} name different blocks; "
            f"{alias} is the former name of {name}: give only {name}"
        )
    return value or alias_value


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    import sys

    print(generate_and_publish(" ".join(sys.argv[1:]) or "a counter app").model_dump_json())
