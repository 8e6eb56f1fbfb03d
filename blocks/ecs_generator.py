"""The ECS generator: one Fargate task per request (AWS mode).

prefect-aws 0.7 has no ECS infrastructure block, so this block owns the task's
lifecycle on ``AwsCredentials.get_client("ecs")``: ``run_task`` with the request in
container overrides (and a presigned upload URL — the task holds no AWS
credentials), polling until STOPPED with backoff while the task's CloudWatch log
stream is tailed into the run log, ``stop_task`` at the deadline, and a clear error
for every way a task can fail to produce an app.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.artifact_stores import ArtifactStore
from blocks.generators import (
    GeneratorBlock,
    OutputFollower,
    allowed_environment,
    generator_environment,
)
from blocks.s3_artifact_store import S3ArtifactStore
from core.errors import GeneratorFailed
from core.models import ArtifactRef, GenerationSpec, GeneratorRun, RunLogger
from core.options import EcsOptions

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import (
        ContainerTypeDef,
        TaskOverrideTypeDef,
        TaskTypeDef,
    )

# The presigned URL must outlive the generation: upload happens at its very end.
_UPLOAD_URL_MARGIN_SECONDS = 900
_MAX_POLL_SECONDS = 30.0
# ECS limits container overrides to 8 KiB in all.
_MAX_OVERRIDES_BYTES = 8192
# A revision's earlier prompts that go into the overrides: the latest that fit in this.
_HISTORY_BYTES = 2048


class EcsGenerator(GeneratorBlock, EcsOptions):
    """Runs the generator as an ECS Fargate task per request; the app comes back as a
    tarball through the S3 artifact store.

    Example:
        ```python
        from blocks.ecs_generator import EcsGenerator

        generator = EcsGenerator.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Appgen ECS Generator"
    _block_type_slug = "appgen-ecs-generator"
    _description = "Runs the app generator as an ECS Fargate task per request."

    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="Credentials for ECS and CloudWatch Logs."
    )
    artifacts: S3ArtifactStore = Field(description="Where the task uploads the app.")

    def artifact_store(self) -> ArtifactStore:
        return self.artifacts

    def output_location(self) -> str:
        return self.artifacts.location(self.artifacts.prefix)

    def run(
        self, spec: GenerationSpec, logger: RunLogger, base: Path | None = None
    ) -> GeneratorRun:
        if spec.agent != "template":
            logger.warning(
                "the ECS generator has no egress gateway yet: APPGEN_AGENT_EGRESS and the "
                "model budgets are not enforced, and the task's network is its subnets'"
            )
        ecs: ECSClient = self.credentials.get_client("ecs")
        key = self.artifacts.new_key(spec.request_id)
        environment = allowed_environment(self.env_allowlist)
        environment |= generator_environment(
            spec, self.container_app_dir, self.timeout_seconds, _HISTORY_BYTES
        )
        expires_in = int(self.timeout_seconds) + _UPLOAD_URL_MARGIN_SECONDS
        environment["APPGEN_UPLOAD_URL"] = self.artifacts.upload_url(key, expires_in)
        if base is not None:  # the task shares no disk with us: it downloads the base
            environment["APPGEN_BASE_URL"] = self.artifacts.put_base(
                spec.request_id, base, expires_in
            )
        task_arn = self._start(ecs, spec, environment)
        logger.info("started ECS task %s", task_arn)
        log_stream = self._log_stream(ecs, task_arn)

        def stop() -> None:
            ecs.stop_task(
                cluster=self.cluster,
                task=task_arn,
                reason=f"appgen: timed out after {self.timeout_seconds:g}s",
            )

        with OutputFollower(logger, self.timeout_seconds, stop) as output:
            try:
                task = self._wait_stopped(ecs, task_arn, output, log_stream)
            except BaseException:
                stop()  # cancelled or crashed: the task must not run on unwatched
                raise
        empty: ContainerTypeDef = {}
        container = next(
            (c for c in task.get("containers", []) if c.get("name") == self.container_name), empty
        )
        exit_code = container.get("exitCode")
        if exit_code is None and not output.timed_out:
            raise GeneratorFailed(
                f"generator task {task_arn} stopped without an exit code "
                f"({task.get('stopCode', 'no stop code')}: "
                f"{task.get('stoppedReason') or container.get('reason') or 'no reason given'})"
            )
        artifact = ArtifactRef(kind="s3", location=self.artifacts.location(key))
        exit_code = exit_code if exit_code is not None else -1
        return output.result(spec, exit_code, artifact, f"in the ECS task {task_arn}")

    def _start(self, ecs: ECSClient, spec: GenerationSpec, environment: dict[str, str]) -> str:
        overrides: TaskOverrideTypeDef = {
            "containerOverrides": [
                {
                    "name": self.container_name,
                    "environment": [
                        {"name": k, "value": v} for k, v in sorted(environment.items())
                    ],
                }
            ]
        }
        if len(str(overrides).encode()) > _MAX_OVERRIDES_BYTES:
            raise GeneratorFailed(
                f"request {spec.request_id}: the prompt and settings exceed ECS's 8 KiB limit "
                "on container overrides; shorten the prompt"
            )
        try:
            response = ecs.run_task(
                cluster=self.cluster,
                taskDefinition=self.task_definition,
                launchType="FARGATE",
                count=1,
                startedBy=f"appgen-{spec.request_id}"[:36],
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": self.subnets,
                        "securityGroups": self.security_groups,
                        "assignPublicIp": "ENABLED" if self.assign_public_ip else "DISABLED",
                    }
                },
                overrides=overrides,
                tags=[{"key": "appgen-request-id", "value": str(spec.request_id)}],
            )
        except (ClientError, BotoCoreError) as exc:
            raise GeneratorFailed(f"ECS refused to run the generator task: {exc}") from exc
        if response.get("failures") or not response.get("tasks"):
            reasons = "; ".join(
                " ".join(str(f.get(k, "")) for k in ("reason", "arn", "detail")).strip()
                for f in response.get("failures", [])
            )
            raise GeneratorFailed(
                f"ECS could not start the generator task: {reasons or 'no task was started'}"
            )
        return response["tasks"][0]["taskArn"]

    def _wait_stopped(
        self,
        ecs: ECSClient,
        task_arn: str,
        output: OutputFollower,
        log_stream: tuple[str, str] | None,
    ) -> TaskTypeDef:
        delay = self.poll_seconds
        tail = _LogTail(self.credentials, log_stream)
        while True:
            described = ecs.describe_tasks(cluster=self.cluster, tasks=[task_arn])
            if not described.get("tasks"):
                raise GeneratorFailed(
                    f"ECS lost track of the generator task {task_arn} ({described.get('failures')})"
                )
            task = described["tasks"][0]
            output.follow(tail.new_lines())
            if task.get("lastStatus") == "STOPPED":
                output.follow(tail.new_lines())
                return task
            time.sleep(delay)
            delay = min(delay * 1.5, _MAX_POLL_SECONDS)

    def _log_stream(self, ecs: ECSClient, task_arn: str) -> tuple[str, str] | None:
        """The awslogs group and stream of the generator container, if it logs there."""
        definition = ecs.describe_task_definition(taskDefinition=self.task_definition)
        for container in definition["taskDefinition"]["containerDefinitions"]:
            if container.get("name") != self.container_name:
                continue
            config = container.get("logConfiguration")
            if config is None:
                continue
            options = config.get("options", {})
            if config.get("logDriver") == "awslogs" and "awslogs-stream-prefix" in options:
                task_id = task_arn.rsplit("/", 1)[-1]
                stream = f"{options['awslogs-stream-prefix']}/{self.container_name}/{task_id}"
                return options["awslogs-group"], stream
        return None


class _LogTail:
    """Reads a CloudWatch log stream forward from where it last stopped."""

    def __init__(self, credentials: AwsCredentials, stream: tuple[str, str] | None) -> None:
        self._logs = credentials.get_client("logs") if stream else None
        self._stream = stream
        self._token: str | None = None

    def new_lines(self) -> Iterator[str]:
        if self._logs is None or self._stream is None:
            return
        group, stream = self._stream
        while True:
            request = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
            if self._token:
                request["nextToken"] = self._token
            try:
                page = self._logs.get_log_events(**request)
            except ClientError:
                return  # the stream appears once the container has started
            yield from (event["message"] for event in page.get("events", []))
            if page.get("nextForwardToken") in (None, self._token):
                return
            self._token = page["nextForwardToken"]
