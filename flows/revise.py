"""revise_app: a follow-up prompt for a published request, as one more commit.

    [read_review →] register revision → claim → create_repository (the request's own)
             → fetch_base → the steps of generate_and_publish (flows/publish.py), from
             that base [→ reply_to_review]

The agent starts from the tree at the tip of the request's branch on the Git host,
whatever put it there, so commits a person pushed since are the base and are never
overwritten. Two revisions of one request at once are serialized by the request's
claim: the second fetches its base after the first has pushed, and builds on it.
The same prompt after a failed revision resumes that revision; its generation is
cached on the request, revision, base commit and prompt, so a failed push never runs
its agent again.
"""

from __future__ import annotations

from contextlib import ExitStack

from prefect import flow

from core.errors import InvalidRequest
from core.models import PublishOutcome, RequestStatus
from flows.publish import claimed, publish_revision, remove_tree, start_run
from tasks.create_repository import create_repository
from tasks.fetch_base import fetch_base
from tasks.git_push import request_branch
from tasks.review_feedback import addressed_notes, read_review, reply_to_review, review_prompt
from tasks.update_db import (
    published_request,
    record_cancelled,
    record_failed,
    register_revision,
)


@flow(
    name="revise-app",
    on_failure=[record_failed],
    on_crashed=[record_failed],
    on_cancellation=[record_cancelled],
)
def revise_app(
    request_id: int,
    prompt: str | None = None,
    from_review: bool = False,
    generator: str | None = None,
    git_host: str | None = None,
    artifact_store: str | None = None,
    database: str | None = None,
) -> PublishOutcome:
    """Change a published app as a follow-up prompt asks, and publish the change as one
    more commit of its repository (on main, or on its pull request's branch).

    Args:
        request_id: the published request to change.
        prompt: what to change.
        from_review: instead of a prompt, address the review comments and review
            bodies on the request's pull request that no revision addressed yet, then
            reply to each with the commit.
        generator: the saved generator block to run ("block-type-slug/name"); default:
            as for generate-and-publish. So are the next three.
        git_host: the saved Git host block the request is published on.
        artifact_store: the saved S3 artifact store of an ECS generator.
        database: the saved database block that records the request.
    """
    if (prompt is None) == (not from_review):
        raise InvalidRequest("give a prompt, or from_review=true to address review feedback")
    run = start_run(generator, git_host, artifact_store, database)
    records, host = run.blocks.database, run.blocks.git_host
    request = published_request(records, request_id)
    branch = request_branch(request_id)
    review = None
    if from_review and (earlier_attempt := records.revision_of_flow_run(run.holder.flow_run_id)):
        prompt, review = earlier_attempt.prompt, earlier_attempt.review  # a retry of this run
    elif from_review:
        repository = create_repository(request, host)
        review = read_review(
            repository, host, branch, addressed_notes(records.revisions(request_id))
        )
        prompt = review_prompt(review)
    assert prompt is not None
    revision = register_revision(records, request, prompt, run.holder.flow_run_id, review)
    with claimed(run, request) as request, ExitStack() as temp:
        row = records.get(request_id)
        assert row is not None  # registered before it was claimed
        earlier = tuple(
            r
            for r in records.revisions(request_id)
            if r.revision < revision.revision and r.status is RequestStatus.PUBLISHED
        )
        repository = create_repository(request, host)
        on_branch = run.settings.publish_mode == "pull-request" or row.branch is not None
        branches = (branch, "main") if on_branch else ("main",)
        base = fetch_base(
            repository, host, branches, run.settings.staging_dir, resume_from=revision.base_commit
        )
        temp.callback(remove_tree, base.path)
        outcome = publish_revision(
            run, request, revision, temp, base=base, repository=repository, earlier=earlier
        )
        published = next(
            r for r in records.revisions(request_id) if r.revision == revision.revision
        )
        reply_to_review(repository, host, branch, published)
    return outcome
