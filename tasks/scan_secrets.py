"""scan_secrets: look for secrets in the staged tree before anything is created or
pushed, and apply APPGEN_SECRET_SCAN: ``block`` fails the publish (nothing is
created on the Git host), ``warn`` lets it go on with the findings in the summary
and ``--json``, ``off`` skips the scan.

Findings name the path, the line and the rule, never the secret: not in the error,
the log, the row, the summary or the task's result. The rules are in
``core.secret_scan``."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.errors import SecretsFound
from core.models import SecretFinding, SecretScan, SecretScanMode, StagedTree
from core.redaction import register_secret
from core.secret_scan import KnownSecret, held_secrets, scan_tree
from tasks.step_timings import remember_timing

# How a finding in the prompt (published in the commit message) is named.
PROMPT_NAME = "(the prompt, in the commit message)"
# Findings listed in one error message; the rest are counted.
_LISTED = 20


def findings_text(findings: list[SecretFinding]) -> str:
    """One ``path:line (rule)`` a line, at most ``_LISTED`` of them."""
    lines = [f"  {finding}" for finding in findings[:_LISTED]]
    if len(findings) > _LISTED:
        lines.append(f"  … and {len(findings) - _LISTED} more")
    return "\n".join(lines)


@task(
    cache_policy=NO_CACHE,
    on_completion=[remember_timing],
    on_failure=[remember_timing],
)
def scan_secrets(
    staged: StagedTree,
    mode: SecretScanMode,
    agent_env: tuple[str, ...] = (),
    prompt: str = "",
    configured: tuple[KnownSecret, ...] = (),
) -> SecretScan:
    """Scan the staged tree for secrets and the prompt, which the commit message
    carries. Besides the rules, the values looked for are those of ``configured`` (the
    run's blocks' secrets) and the keys among ``agent_env`` (names of the variables
    the agent was given)."""
    logger = get_run_logger()
    if mode == "off":
        logger.info("secret scan skipped (APPGEN_SECRET_SCAN=off)")
        return SecretScan(mode=mode)
    held = held_secrets(configured, agent_env)
    register_secret(*(secret.value for secret in held))  # and masked in every log line
    started = time.monotonic()
    scanned, findings = scan_tree(staged.path, held, {PROMPT_NAME: prompt})
    took = time.monotonic() - started
    if not findings:
        logger.info("no secrets in %d files (%.2fs)", scanned, took)
        return SecretScan(mode=mode, scanned_files=scanned)
    count = f"{len(findings)} secret{'s' if len(findings) != 1 else ''}"
    if mode == "block":
        raise SecretsFound(
            f"the generated app holds {count}; nothing was created or pushed "
            f"(APPGEN_SECRET_SCAN=block):\n{findings_text(findings)}\n"
            "Remove them from the generated app and publish the request again (the "
            "generation is reused), or publish it with --regenerate; a value that is no "
            "secret can stay with `pragma: allowlist secret` in a comment on its line.",
            findings,
        )
    logger.warning(
        "the generated app holds %s, published anyway (APPGEN_SECRET_SCAN=warn):\n%s",
        count,
        findings_text(findings),
    )
    return SecretScan(mode=mode, scanned_files=scanned, findings=findings)
