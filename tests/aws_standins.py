"""Local stand-ins for AWS: SeaweedFS for S3 (it enforces presigned signatures,
expiry and Content-Type) and moto for ECS, EC2 and CloudWatch Logs, plus a fake ECS
agent that runs the real generator program for each task moto accepts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import boto3
import httpx

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ACCESS_KEY, SECRET_KEY = "appgen-test-key", "appgen-test-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return cast(int, probe.getsockname()[1])


class SeaweedS3:
    """`weed mini` bound to 127.0.0.1, telemetry off."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._data = data
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SeaweedS3:
        env = os.environ | {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        # The server writes its log through its own descriptor; ours closes here.
        with open(self._data / "weed.log", "w") as log:
            self._process = subprocess.Popen(
                [
                    "weed",
                    "mini",
                    f"-dir={self._data}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    f"-s3.port={self.port}",
                    "-master.telemetry=false",
                    "-admin.ui=false",
                    f"-master.port={free_port()}",
                    f"-volume.port={free_port()}",
                    f"-filer.port={free_port()}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return self
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS did not start; see {self._data / 'weed.log'}")

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=30)

    def client(self) -> S3Client:
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


class MotoAWS:
    """moto's server in this process (exit codes can only be set on its backend)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)

    def __enter__(self) -> MotoAWS:
        self._server.start()
        # Tasks stay where they are until the fake agent stops them, as on ECS.
        httpx.post(
            f"{self.endpoint}/moto-api/state-manager/set-transition",
            json={
                "model_name": "ecs::task",
                "transition": {"progression": "manual", "times": 1_000_000},
            },
        ).raise_for_status()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    @overload
    def client(self, service: Literal["ecs"]) -> ECSClient: ...
    @overload  # boto3-stubs[ecs,s3] only: these clients are untyped
    def client(self, service: Literal["ec2", "logs"]) -> Any: ...
    def client(self, service: Literal["ecs", "ec2", "logs"]) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


class FakeEcsAgent:
    """Runs `python -m generator` for each task started on the cluster, with the
    task's override environment, writes its output to the awslogs stream, then sets
    the container's exit code and stops the task as ECS would.

    ``exit_code`` forces an exit code (None: no exit code at all, as when a task fails
    to start); ``hold`` keeps the task running until the test or a stop_task ends it.
    """

    def __init__(
        self,
        aws: MotoAWS,
        cluster: str,
        log_group: str,
        stream_prefix: str,
        container: str,
        repo_root: Path,
    ) -> None:
        self._aws, self._cluster, self._group = aws, cluster, log_group
        self._prefix, self._container, self._repo_root = stream_prefix, container, repo_root
        self.exit_code: int | Literal["real"] | None = "real"
        self.hold = False
        self.started: list[str] = []
        self.environments: list[dict[str, str]] = []  # each task's container overrides
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="fake-ecs-"))

    def __enter__(self) -> FakeEcsAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        ecs = self._aws.client("ecs")
        while not self._stop.is_set():
            for arn in ecs.list_tasks(cluster=self._cluster)["taskArns"]:
                if arn not in self.started:
                    self.started.append(arn)
                    threading.Thread(target=self._execute, args=(arn,), daemon=True).start()
            time.sleep(0.1)

    def _execute(self, arn: str) -> None:
        from moto.ecs.models import ecs_backends

        ecs, logs = self._aws.client("ecs"), self._aws.client("logs")
        task = ecs.describe_tasks(cluster=self._cluster, tasks=[arn])["tasks"][0]
        override = task["overrides"]["containerOverrides"][0]
        env = {item["name"]: item["value"] for item in override["environment"]}
        self.environments.append(dict(env))
        task_id = arn.rsplit("/", 1)[-1]
        env["APPGEN_APP_DIR"] = str(self._workdir / task_id / "app")  # the task's own disk
        stream = f"{self._prefix}/{self._container}/{task_id}"
        logs.create_log_stream(logGroupName=self._group, logStreamName=stream)
        process = subprocess.Popen(
            [sys.executable, "-m", "generator", "--fresh"],
            env={
                "PATH": os.environ["PATH"],
                "PYTHONPATH": str(self._repo_root),
                "HOME": str(self._workdir),
            }
            | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            logs.put_log_events(
                logGroupName=self._group,
                logStreamName=stream,
                logEvents=[{"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")}],
            )
        code = process.wait()
        while self.hold and not self._stopped(ecs, arn):
            time.sleep(0.1)
        if self._stopped(ecs, arn):
            return  # stopped from outside (stop_task): no exit code, as on ECS
        container = ecs_backends[ACCOUNT][REGION].tasks[self._cluster][arn].containers[0]
        exit_code = code if self.exit_code == "real" else self.exit_code
        # moto types exitCode as int (its default, 0); None stands for ECS leaving it out.
        container.exitCode = exit_code  # type: ignore[assignment]
        ecs.stop_task(cluster=self._cluster, task=arn, reason="Essential container exited")

    def _stopped(self, ecs: ECSClient, arn: str) -> bool:
        task = ecs.describe_tasks(cluster=self._cluster, tasks=[arn])["tasks"][0]
        return task.get("lastStatus") == "STOPPED" or task.get("desiredStatus") == "STOPPED"
