"""Whether a publish may go on to the push, given its deploy files and their check."""

from __future__ import annotations

from core.errors import PublishError
from core.models import DeployCheck, DeployFiles


def refusal(deploy: DeployFiles, check: DeployCheck, require_deployable: bool) -> str | None:
    """Why the publish must stop before anything is pushed, or None."""
    if require_deployable and not deploy.deployable:
        return (
            f"the app is not deployable ({deploy.deploy_reason}) and "
            "APPGEN_REQUIRE_DEPLOYABLE is set"
        )
    if check.verified == "failed":
        tail = "\n".join(check.log_tail)
        return f"the deploy check ({check.mode}) failed: {check.detail}\n{tail}".rstrip()
    return None


def enforce(deploy: DeployFiles, check: DeployCheck, *, require_deployable: bool) -> None:
    """Raise ``PublishError`` when the publish must stop before anything is pushed."""
    why = refusal(deploy, check, require_deployable)
    if why is not None:
        raise PublishError(why)
