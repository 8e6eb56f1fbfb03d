"""Which blocks a run uses: a named saved block, else the saved default of the
settings' kind, else the settings; and `appgen config`, which says so."""

from __future__ import annotations

import json
import uuid

import pytest

from blocks.configuration import run_blocks
from blocks.generators import ProcessGenerator
from blocks.git_hosts import LocalGitHost
from core.errors import InvalidRequest
from core.models import RequestStatus
from core.settings import Settings
from flows.publish import generate_and_publish

pytestmark = pytest.mark.usefixtures("flow_env")


def test_a_saved_default_block_is_used_when_no_parameter_names_one(
    default_blocks, tmp_path, appgen_home
):
    LocalGitHost(root=tmp_path / "saved-root").save("default")
    outcome = generate_and_publish("a counter", request_id=1)
    assert outcome.status is RequestStatus.PUBLISHED
    assert (tmp_path / "saved-root/counter.git").is_dir()
    assert not (appgen_home / "repos").exists()  # the settings' root, not used


def test_a_parameter_beats_the_saved_default(default_blocks, tmp_path):
    LocalGitHost(root=tmp_path / "default-root").save("default")
    LocalGitHost(root=tmp_path / "named-root").save(name := f"t-{uuid.uuid4().hex[:8]}")
    generate_and_publish("a counter", request_id=2, git_host=f"appgen-local-git-host/{name}")
    assert (tmp_path / "named-root/counter.git").is_dir()
    assert not (tmp_path / "default-root").exists()


def test_each_part_says_where_it_came_from(default_blocks, tmp_path):
    LocalGitHost(root=tmp_path / "saved-root").save("default")
    parts = {part.part: part.source for part in run_blocks(Settings()).parts}
    assert parts == {
        "generator": "settings (APPGEN_*)",
        "git_host": "saved block appgen-local-git-host/default",
        "artifact_store": "settings (APPGEN_*)",
        "database": "settings (APPGEN_DATABASE_*)",
    }


def test_generator_and_its_former_name_must_agree(tmp_path):
    ProcessGenerator(workspace=tmp_path / "a").save(name := f"t-{uuid.uuid4().hex[:8]}")
    saved = f"appgen-process-generator/{name}"
    outcome = generate_and_publish(
        "a counter", request_id=3, generator=saved, generator_block=saved
    )
    assert outcome.status is RequestStatus.PUBLISHED
    with pytest.raises(InvalidRequest, match="generator_block is the former name of generator"):
        generate_and_publish(
            "a counter", generator=saved, generator_block="appgen-process-generator/other"
        )


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"artifact_store": "appgen-s3-artifact-store/x"}, "only for the ECS generator"),
        ({"git_host": "appgen-local-git-host"}, "name a saved block as 'block-type-slug/name'"),
        ({"database": "appgen-local-git-host/nope"}, "no saved block"),
    ],
)
def test_a_bad_block_parameter_is_a_clear_error(parameters, message):
    with pytest.raises(InvalidRequest, match=message):
        run_blocks(Settings(), **parameters)


def test_a_saved_block_of_the_wrong_type_is_refused(tmp_path):
    LocalGitHost(root=tmp_path).save(name := f"t-{uuid.uuid4().hex[:8]}")
    with pytest.raises(InvalidRequest, match="is a LocalGitHost, not a GeneratorBlock"):
        run_blocks(Settings(), generator=f"appgen-local-git-host/{name}")


def test_config_shows_each_part_with_secrets_masked_and_names_ignored_variables(appgen):
    token = "ghp_configShowsNoSecret0123456789"
    result = appgen(
        "config",
        "--json",
        APPGEN_GIT_HOST="github",
        APPGEN_GITHUB_OWNER="acme",
        APPGEN_GITHUB_TOKEN=token,
        APPGEN_DOCKER_NETWORK="none",  # the former name of APPGEN_DOCKER_NETWORK_MODE
    )
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    (host,) = [part for part in shown["parts"] if part["part"] == "git_host"]
    assert host["kind"] == "GitHubHost" and host["source"] == "settings (APPGEN_GITHUB_*)"
    assert host["fields"]["owner"] == "acme" and host["fields"]["token"] == "**********"
    assert shown["ignored"] == [
        "APPGEN_DOCKER_NETWORK is not a setting; did you mean APPGEN_DOCKER_NETWORK_MODE?"
    ]


def test_config_refuses_an_incomplete_part_naming_its_variables(appgen):
    result = appgen("config", APPGEN_GENERATOR="ecs")
    assert result.returncode == 2
    assert "APPGEN_ECS_CLUSTER: not set" in result.stderr
    assert "APPGEN_ECS_SUBNETS: not set" in result.stderr


def test_an_ecs_generator_from_the_settings_uses_the_saved_s3_store(default_blocks, monkeypatch):
    """APPGEN_GENERATOR=ecs with its APPGEN_ECS_* but no APPGEN_S3_*: the saved
    appgen-s3-artifact-store/default is the store, and nothing asks for a bucket."""
    from blocks.ecs_generator import EcsGenerator
    from blocks.s3_artifact_store import S3ArtifactStore

    S3ArtifactStore(bucket="saved-bucket", prefix="saved").save("default")
    monkeypatch.setenv("APPGEN_GENERATOR", "ecs")
    monkeypatch.setenv("APPGEN_ECS_CLUSTER", "appgen")
    monkeypatch.setenv("APPGEN_ECS_TASK_DEFINITION", "appgen-generator")
    monkeypatch.setenv("APPGEN_ECS_SUBNETS", '["subnet-1"]')
    blocks = run_blocks(Settings())
    generator = blocks.generator
    assert isinstance(generator, EcsGenerator)
    assert (generator.artifacts.bucket, generator.artifacts.prefix) == (
        "saved-bucket",
        "saved",
    )
    assert blocks.artifact_store is generator.artifacts
    parts = {part.part: part.source for part in blocks.parts}
    assert parts["generator"] == "settings (APPGEN_ECS_*)"
    assert parts["artifact_store"] == "saved block appgen-s3-artifact-store/default"
