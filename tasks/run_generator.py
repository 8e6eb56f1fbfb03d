"""run_generator: the expensive step (5-15 minutes of a coding agent), cached so that
a failed publish never runs it again.

The cache key is the generation's inputs (request, prompt, agent) plus the generator
block's configuration (which includes where the output lands) and this task's source;
never the flow-run id. Results are persisted, so a retry, a new deployment run or a
Python call with the same request reuses the generation.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from blocks.generators import GeneratorBlock
from core.models import GenerationSpec, GeneratorRun


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def run_generator(spec: GenerationSpec, generator: GeneratorBlock) -> GeneratorRun:
    """Run the agent for one request and return where its app was left."""
    logger = get_run_logger()
    logger.info(
        "generating request %d with the %r agent (%s)",
        spec.request_id,
        spec.agent,
        type(generator).__name__,
    )
    run = generator.run(spec, logger)
    logger.info("generation finished in %.1fs: %s", run.duration_seconds, run.artifact.location)
    return run
