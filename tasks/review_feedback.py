"""Review feedback as a revision's prompt: the pull request's review comments and
review bodies that no revision has addressed yet, read through the Git host's API
(``read_review``); after the push, each gets a reply naming the commit that
addressed it (``reply_to_review``)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.git_hosts import GitHost
from core.errors import AppgenError, InvalidRequest
from core.models import RemoteRepository, RequestStatus, ReviewNote, RevisionRecord
from tasks.step_timings import remember_timing

_PROMPT_HEAD = (
    "Address this review feedback on the app's pull request. Change what each note asks "
    "for and keep the rest of the app as it is:\n\n"
)


def review_prompt(notes: list[ReviewNote]) -> str:
    """The prompt that asks the agent to address ``notes``, quoting each with its place."""
    return _PROMPT_HEAD + "\n".join(
        f"{number}. {note.quoted()}" for number, note in enumerate(notes, 1)
    )


def addressed_notes(revisions: list[RevisionRecord]) -> set[int]:
    """The ids of the review notes that published revisions addressed."""
    return {
        note.id
        for revision in revisions
        if revision.status is RequestStatus.PUBLISHED
        for note in revision.review or []
    }


@task(cache_policy=NO_CACHE, on_completion=[remember_timing], on_failure=[remember_timing])
def read_review(
    repository: RemoteRepository, host: GitHost, branch: str, addressed: set[int]
) -> list[ReviewNote]:
    """The review feedback on ``branch``'s pull request that no revision addressed."""
    notes = [n for n in host.review_feedback(repository, branch) if n.id not in addressed]
    if not notes:
        raise InvalidRequest(
            f"the pull request from {branch} in {repository.url} has no review comments or "
            "review bodies that a revision has not addressed yet: nothing to revise"
        )
    get_run_logger().info(
        "addressing %d review note(s) by %s",
        len(notes),
        ", ".join(sorted({note.author for note in notes})),
    )
    return notes


@task(cache_policy=NO_CACHE, on_completion=[remember_timing], on_failure=[remember_timing])
def reply_to_review(
    repository: RemoteRepository,
    host: GitHost,
    branch: str,
    revision: RevisionRecord,
) -> None:
    """Reply to each note the revision addressed with its commit. The revision is
    published and recorded by now: a reply that fails is a warning, not a failure."""
    if not revision.review:
        return
    commit = (revision.commit_sha or "")[:12]
    text = (
        f"Addressed in {commit} (appgen revision {revision.revision})."
        if revision.changed is not False
        else f"appgen revision {revision.revision} looked at this and changed nothing "
        f"(the branch stays at {commit})."
    )
    try:
        host.reply_to_review(repository, branch, revision.review, text)
    except AppgenError as exc:
        get_run_logger().warning("could not reply to the review feedback: %s", exc)
        return
    get_run_logger().info("replied to %d review note(s): %s", len(revision.review), text)
