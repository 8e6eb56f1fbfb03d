"""fetch_base: the tree a revision starts from, checked out from the Git host with the
orchestrator's credentials. The generator is handed the files, never the token.

The base is the tip of the request's branch as the host has it now, whoever put it
there: commits a person pushed since the last revision are part of it. Its files are
untrusted input, like the agent's: they go through the same staging and scans.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.git_hosts import GitHost
from core.errors import PublishError
from core.git import BASE_CONFIG, GitRunner, git_environment
from core.models import BaseTree, RemoteRepository
from core.processes import temp_prefix
from tasks.step_timings import remember_timing


@task(cache_policy=NO_CACHE, on_completion=[remember_timing], on_failure=[remember_timing])
def fetch_base(
    repository: RemoteRepository,
    host: GitHost,
    branches: tuple[str, ...],
    staging_dir: Path | None = None,
    resume_from: str | None = None,
) -> BaseTree:
    """Check out the tip of the first of ``branches`` the repository has. A revision
    resumed after a failure passes the commit its first attempt started from
    (``resume_from``): that one is checked out while the branch still contains it, so
    the resumed attempt finds its generation in the cache."""
    path = Path(tempfile.mkdtemp(prefix=temp_prefix("base"), dir=staging_dir))
    try:
        run = GitRunner(path, repository, git_environment(BASE_CONFIG | host.git_config()))
        run("init", "--quiet", "--template=")
        run("remote", "add", "origin", repository.push_url)
        refs = [f"refs/heads/{branch}" for branch in branches]
        listed = run("ls-remote", "--heads", "origin", *refs).splitlines()
        heads = {ref: sha for sha, _, ref in (line.partition("\t") for line in listed)}
        branch = next((b for b in branches if f"refs/heads/{b}" in heads), None)
        if branch is None:
            raise PublishError(
                f"{repository.url} has no {' or '.join(branches)} branch to revise: publish "
                "the request first, or restore the branch"
            )
        tip = heads[f"refs/heads/{branch}"]
        run("fetch", "--quiet", "--no-tags", "origin", f"refs/heads/{branch}")
        commit = tip
        if resume_from and resume_from != tip:
            if run.succeeds("merge-base", "--is-ancestor", resume_from, tip):
                commit = resume_from
            else:
                get_run_logger().warning(
                    "%s no longer holds %s, which the revision started from: it starts from "
                    "the tip %s instead",
                    branch,
                    resume_from[:12],
                    tip[:12],
                )
        run("checkout", "--quiet", "--detach", commit)
        shutil.rmtree(path / ".git")
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    get_run_logger().info("the revision starts from %s at %s", branch, commit[:12])
    return BaseTree(path=path, commit=commit, branch=branch)
