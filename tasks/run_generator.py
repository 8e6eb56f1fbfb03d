"""run_generator: the expensive step (5-15 minutes of a coding agent), cached so that
a failed publish never runs it again.

The cache key is what determines the generated output — the ``GenerationSpec``
(request, revision, the commit it starts from, prompt, agent, its command and
variable names, where output lands) — and
this task's source; never the flow-run id, and not the generator's limits, poll
intervals or timeouts. Results are persisted, so a retry, a new deployment run or a
Python call with the same request reuses the generation.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import TASK_SOURCE, Inputs

from blocks.database import Database
from blocks.generators import GeneratorBlock
from core.models import BaseTree, GenerationSpec, GeneratorRun, LeaseHolder
from tasks.claim_request import generator_slot
from tasks.step_timings import remember_timing

# The base's checkout is a temporary directory; the spec names its commit.
_NOT_THE_OUTPUT = ("generator", "database", "holder", "slots", "lease", "base")


@task(
    cache_policy=Inputs(exclude=list(_NOT_THE_OUTPUT)) + TASK_SOURCE,
    persist_result=True,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def run_generator(
    spec: GenerationSpec,
    generator: GeneratorBlock,
    database: Database,
    holder: LeaseHolder,
    slots: int,
    lease: timedelta,
    base: BaseTree | None = None,
) -> GeneratorRun:
    """Run the agent for one request, in one of ``slots`` generator slots, and return
    where its app was left. A revision's agent starts from ``base``."""
    logger = get_run_logger()
    logger.info(
        "generating request %d%s with the %r agent (%s)",
        spec.request_id,
        f", revision {spec.revision} from {spec.base_commit[:12]}" if spec.base_commit else "",
        spec.agent,
        type(generator).__name__,
    )
    with generator_slot(database, holder, slots, lease, logger):
        run = generator.run(spec, logger, base.path if base else None)
    logger.info("generation finished in %.1fs: %s", run.duration_seconds, run.artifact.location)
    return run
