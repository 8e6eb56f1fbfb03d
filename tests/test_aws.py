"""AWS mode on loopback stand-ins: the generator as an ECS Fargate task (moto, with
a fake agent running the real generator program), the app handed back through S3
(SeaweedFS, which enforces presigned URLs), and resuming on any worker."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest

from blocks import defaults
from core.errors import GeneratorFailed, PublishError
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish
from flows.revise import revise_app
from generator.package import PackageError, upload
from tests.conftest import command_spec, load_block

pytestmark = pytest.mark.usefixtures("flow_env")


def test_a_fargate_generation_is_published_through_s3(aws, s3_server, tmp_path, caplog):
    outcome = generate_and_publish("Build me a counter app", request_id=1)
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.repo_url is not None
    assert len(aws.started) == 1
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", outcome.repo_url, str(clone)], check=True)
    assert (clone / "server.js").exists() and (clone / "fly.toml").exists()
    keys = [
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=Settings().s3.bucket)["Contents"]
    ]
    assert len(keys) == 1 and keys[0].startswith("generations/") and keys[0].endswith("/1.tar.gz")
    assert "template: wrote package.json" in caplog.text  # tailed from CloudWatch Logs


def test_a_fargate_revision_gets_its_base_through_a_presigned_url(
    aws, s3_server, monkeypatch, tmp_path
):
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        f'[ -f server.js ] || "{sys.executable}" -m generator --agent template; '
        'echo "- $APPGEN_PROMPT" >> FEATURES.md',
    )
    generate_and_publish("a counter app", request_id=5)
    revised = revise_app(5, "add a reset button")
    assert (revised.status, revised.revision) == (RequestStatus.PUBLISHED, 2)
    assert len(aws.started) == 2
    assert revised.repo_url is not None
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", revised.repo_url, str(clone)], check=True)
    assert (clone / "FEATURES.md").read_text() == "- a counter app\n- add a reset button\n"
    override = aws.environments[-1]
    assert override["APPGEN_BASE_URL"].startswith(s3_server.endpoint)
    assert "X-Amz-Signature" in override["APPGEN_BASE_URL"]
    assert not any(name.startswith("AWS_") for name in override)  # the task holds no key
    keys = [
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=Settings().s3.bucket)["Contents"]
    ]
    assert sum(key.endswith("/5-base.tar.gz") for key in keys) == 1


def test_saved_blocks_run_an_ecs_generation_with_no_aws_setting_left(
    aws, s3_server, default_blocks, monkeypatch
):
    from blocks.configuration import run_blocks
    from blocks.s3_artifact_store import S3ArtifactStore
    from deployments.setup import save_default_blocks

    save_default_blocks(Settings(), log=lambda line: None)
    bucket = Settings().s3.bucket
    store = load_block(S3ArtifactStore, "default")  # edited in the UI: the generator refers to it
    store.prefix = "edited"
    store.save("default", overwrite=True)
    for name in list(os.environ):
        if name.startswith(("APPGEN_ECS_", "APPGEN_S3_", "APPGEN_AWS_")):
            monkeypatch.delenv(name)
    used = run_blocks(Settings()).generator.artifact_store()
    assert isinstance(used, S3ArtifactStore)
    assert used.prefix == "edited"
    outcome = generate_and_publish("Build me a counter app", request_id=7)
    assert outcome.status is RequestStatus.PUBLISHED
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("edited/") and keys[0].endswith("/7.tar.gz")


def test_a_failed_push_then_a_rerun_starts_no_second_task(aws, monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "file/repos"))
    with pytest.raises(PublishError):
        generate_and_publish("a recipe book", request_id=2)
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "repos"))
    assert generate_and_publish("a recipe book", request_id=2).status is RequestStatus.PUBLISHED
    assert len(aws.started) == 1


def test_a_failing_agent_reports_the_exit_code_and_the_log_tail(aws, run_logger):
    generator = defaults.generator(Settings())
    with pytest.raises(GeneratorFailed) as failure:
        generator.run(command_spec(3, "echo 'build broke'; exit 4"), run_logger)
    assert "generator for request 3 exited with code 1" in str(failure.value)
    assert "build broke" in str(failure.value)


def test_a_task_without_an_exit_code_is_a_clear_error(aws, run_logger):
    aws.exit_code = None
    with pytest.raises(GeneratorFailed, match="stopped without an exit code"):
        defaults.generator(Settings()).run(command_spec(4, "true"), run_logger)


def test_a_timeout_stops_the_task(aws, run_logger, moto_server, monkeypatch):
    from blocks.ecs_generator import EcsGenerator

    aws.hold = True
    monkeypatch.setenv("APPGEN_GENERATOR_TIMEOUT", "2")
    generator = defaults.generator(Settings())
    assert isinstance(generator, EcsGenerator)
    with pytest.raises(GeneratorFailed, match="timed out after 2s"):
        generator.run(command_spec(5, "echo started"), run_logger)
    task = moto_server.client("ecs").describe_tasks(
        cluster=generator.cluster, tasks=aws.started[-1:]
    )["tasks"][0]
    assert task["lastStatus"] == "STOPPED" and "timed out" in task["stoppedReason"]


def test_a_subnet_that_does_not_exist_is_a_clear_error(aws, run_logger, monkeypatch):
    monkeypatch.setenv("APPGEN_ECS_SUBNETS", '["subnet-00000000"]')
    with pytest.raises(GeneratorFailed, match="ECS"):
        defaults.generator(Settings()).run(command_spec(6, "true"), run_logger)


def test_presigned_urls_are_enforced_by_the_s3_server(aws, tmp_path):
    store = defaults.s3_artifact_store(Settings())
    archive = tmp_path / "app.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    key = store.new_key(7)
    expired = store.upload_url(key, expires_in=1)
    time.sleep(2)
    with pytest.raises(PackageError, match="HTTP 403"):
        upload(archive, expired)
    tampered = store.upload_url(key, expires_in=60).replace("X-Amz-Signature=", "X-Amz-Signature=0")
    with pytest.raises(PackageError, match="HTTP 403"):
        upload(archive, tampered)
    other_type = urllib.request.Request(
        store.upload_url(key, expires_in=60),
        method="PUT",
        data=b"x",
        headers={"Content-Type": "text/plain"},
    )
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(other_type)
    upload(archive, store.upload_url(key, expires_in=60))  # the real thing works


def test_the_bucket_setup_is_idempotent_with_a_lifecycle_rule(aws, s3_server):
    store = defaults.s3_artifact_store(Settings())
    store.ensure_bucket()
    rules = s3_server.client().get_bucket_lifecycle_configuration(Bucket=store.bucket)["Rules"]
    assert [(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in rules] == [
        ("generations/", 30)
    ]


def test_results_in_s3_let_another_worker_resume(aws, s3_server, monkeypatch, tmp_path):
    from prefect.settings import (
        PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    s3_server.client().create_bucket(Bucket=f"{Settings().s3.bucket}-results")
    S3Bucket(
        bucket_name=f"{Settings().s3.bucket}-results",
        credentials=AwsCredentials(
            aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint)
        ),
    ).save("appgen-results", overwrite=True)
    (tmp_path / "file").write_text("")
    with temporary_settings(
        {
            PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: "s3-bucket/appgen-results",
            PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "worker-a",
        }
    ):
        monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "file/repos"))
        with pytest.raises(PublishError):
            generate_and_publish("a shop", request_id=8)
    monkeypatch.setenv("APPGEN_GIT_ROOT", str(tmp_path / "repos"))
    with temporary_settings(
        {
            PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: "s3-bucket/appgen-results",
            PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "worker-b",
        }
    ):
        assert generate_and_publish("a shop", request_id=8).status is RequestStatus.PUBLISHED
    assert len(aws.started) == 1  # worker b found worker a's generation in S3
    assert not (tmp_path / "worker-a").exists() and not (tmp_path / "worker-b").exists()
