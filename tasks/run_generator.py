"""run_generator: the expensive step (5-15 minutes of a coding agent), cached so that
a failed publish never runs it again.

The cache key is the generation's inputs (request, prompt, agent) plus the generator
block's configuration (which includes where the output lands) and this task's source;
never the flow-run id. Results are persisted, so a retry, a new deployment run or a
Python call with the same request reuses the generation.
"""

from __future__ import annotations

from prefect import get_client, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from blocks.generators import GeneratorBlock
from core.models import GenerationSpec, GeneratorRun

GENERATOR_SLOTS = "appgen-generator-slots"


def ensure_generator_slots(default_slots: int) -> None:
    """Create the global concurrency limit on generators if nobody has (``appgen
    setup`` sets it from APPGEN_GENERATOR_SLOTS; an existing limit is left alone)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GENERATOR_SLOTS)
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(GENERATOR_SLOTS, default_slots)


@task(cache_policy=(INPUTS - "slots") + TASK_SOURCE, persist_result=True)
def run_generator(spec: GenerationSpec, generator: GeneratorBlock, slots: int = 4) -> GeneratorRun:
    """Run the agent for one request, in one of ``slots`` generator slots, and return
    where its app was left."""
    logger = get_run_logger()
    logger.info(
        "generating request %d with the %r agent (%s)",
        spec.request_id,
        spec.agent,
        type(generator).__name__,
    )
    ensure_generator_slots(slots)
    with concurrency(GENERATOR_SLOTS, occupy=1, strict=True):
        run = generator.run(spec, logger)
    logger.info("generation finished in %.1fs: %s", run.duration_seconds, run.artifact.location)
    return run
