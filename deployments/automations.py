"""The automations ``appgen setup`` creates, so that Prefect itself notices a lost
worker host instead of showing its run as Running for ever:

- **crash unresponsive runs**: a deployment run of the flow whose heartbeats
  (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, set for the deployments in
  ``prefect.yaml``) stop is marked Crashed (Prefect's zombie-run recipe);
- **resubmit crashed runs**: a crashed deployment run is scheduled again, the same
  flow run with the same parameters, so any worker of its pool picks it up; the flow
  finds its request again and resumes it, and refuses to go on after
  ``APPGEN_CRASH_RESUBMITS`` crashes (``tasks.claim_request.check_crashes``).

Only deployment runs of appgen's flows (``generate-and-publish``, ``revise-app``)
match: a run the CLI started is watched by its caller and repaired by ``appgen reap``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

FLOW_NAMES = ["generate-and-publish", "revise-app"]
HEARTBEAT_SECONDS = 30  # Prefect's smallest; prefect.yaml sets it for the deployments
MISSED_HEARTBEATS = 4
_OUR_DEPLOYMENT_RUNS = dict(
    match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
    match_related=[
        ResourceSpecification(
            {"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAMES}
        ),
        ResourceSpecification({"prefect.resource.role": "deployment"}),
    ],
    for_each={"prefect.resource.id"},
)
_FINAL = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


def appgen_automations() -> list[AutomationCore]:
    silent = timedelta(seconds=HEARTBEAT_SECONDS * MISSED_HEARTBEATS)
    return [
        AutomationCore(
            name="appgen: crash unresponsive runs",
            description=f"An appgen deployment run with no heartbeat for {silent} lost "
            "its worker (its host died or was cut off): mark it Crashed.",
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", *_FINAL},
                posture=Posture.Proactive,
                threshold=1,
                within=silent,
                **_OUR_DEPLOYMENT_RUNS,
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    message=f"no heartbeat for {silent}: its worker or host was lost "
                    "(appgen's automation)",
                )
            ],
        ),
        AutomationCore(
            name="appgen: resubmit crashed runs",
            description="Schedule a crashed appgen deployment run again, so that a "
            "live worker resumes its request (bounded by APPGEN_CRASH_RESUBMITS).",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"},
                posture=Posture.Reactive,
                threshold=1,
                **_OUR_DEPLOYMENT_RUNS,
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.SCHEDULED,
                    name="Resubmitted",
                    message="crashed: scheduled again to resume its request (appgen's automation)",
                    force=True,
                )
            ],
        ),
    ]


def ensure_automations(log: Callable[[str], None]) -> None:
    """Create each automation that does not exist yet (by name); update an existing
    one to this definition."""
    with get_client(sync_client=True) as client:
        for automation in appgen_automations():
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                log(f"updated automation {automation.name!r}")
            else:
                client.create_automation(automation)
                log(f"created automation {automation.name!r}")
