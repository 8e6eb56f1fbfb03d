"""The Docker generator on this machine's real engine."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from docker import DockerClient
from docker.models.containers import Container

from blocks.docker_generator import LABEL_DEADLINE, LABEL_MANAGED, LABEL_OWNER, DockerGenerator
from blocks.docker_generator import LABEL_REQUEST as REQUEST
from core.errors import GeneratorFailed
from core.models import RequestStatus
from flows.publish import generate_and_publish
from tests.conftest import command_spec, flow_run_logs, generation_of, load_block, tree_digest

pytestmark = pytest.mark.usefixtures("docker_settings")


def containers_of(client: DockerClient, request_id: int) -> list[Container]:
    return client.containers.list(all=True, filters={"label": f"{REQUEST}={request_id}"})


def block(image: str, workspace: Path, **fields) -> DockerGenerator:
    return DockerGenerator(image=image, workspace=workspace, network_mode="none", **fields)


def test_a_container_generates_the_app_and_the_flow_publishes_it(
    flow_env, docker_engine, appgen_home, tmp_path
):
    outcome = generate_and_publish("Build me a counter app", request_id=101)
    assert outcome.status is RequestStatus.PUBLISHED
    assert outcome.repo_url is not None
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", outcome.repo_url, str(clone)], check=True)
    assert (clone / "server.js").exists() and (clone / "fly.toml").exists()
    assert containers_of(docker_engine, 101) == []


def test_a_second_run_of_the_request_starts_no_container(flow_env, monkeypatch, appgen_home):
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND", "echo run >> ../runs && python3 -m generator --agent template"
    )
    generate_and_publish("a counter", request_id=102)
    generate_and_publish("a counter", request_id=102)
    assert (generation_of(appgen_home / "workspace", 102) / "runs").read_text() == "run\n"


def test_generator_lines_reach_the_flow_run_log(flow_env):
    from blocks import defaults
    from core.settings import Settings

    outcome = generate_and_publish("a counter", request_id=103)
    assert outcome.request_id is not None
    row = defaults.database(Settings()).get(outcome.request_id)
    assert row is not None and row.flow_run_id is not None
    flow_run_id = row.flow_run_id
    expected = {
        "generator: request 103: agent 'template' in /workspace/103/app",
        "template: wrote package.json",
    }
    assert expected <= set(flow_run_logs([flow_run_id], expect=expected))


def test_an_edited_docker_generator_block_is_what_the_next_run_uses(
    flow_env, docker_engine, generator_image, appgen_home
):
    from blocks import defaults
    from core.settings import Settings

    edited_image = "appgen-generator:edited-in-the-ui"
    docker_engine.images.get(generator_image).tag(edited_image)  # another tag, same image
    name = f"t-{uuid.uuid4().hex[:8]}"
    block(generator_image, appgen_home / "workspace").save(name)
    images = []
    for request_id in (107, 108):
        generate_and_publish(
            "a counter", request_id=request_id, generator=f"appgen-docker-generator/{name}"
        )
        row = defaults.database(Settings()).get(request_id)
        assert row is not None and row.flow_run_id is not None
        images.append(created_from(row.flow_run_id))
        saved = load_block(DockerGenerator, name)  # as the UI's form would change it
        saved.image = edited_image
        saved.save(name, overwrite=True)
    assert images == [generator_image, edited_image]
    docker_engine.images.remove(edited_image)


def created_from(flow_run_id: str) -> str:
    """The image the run's container was created from, as its log says."""
    deadline = time.monotonic() + 30
    while True:
        for message in flow_run_logs([flow_run_id]):
            if message.startswith("created container "):
                return message.rsplit(" from ", 1)[1]
        assert time.monotonic() < deadline, "no 'created container' line in the run log"
        time.sleep(0.5)


def test_a_failing_agent_reports_the_exit_code_and_last_lines(
    docker_engine, generator_image, tmp_path, run_logger
):
    generator = block(generator_image, tmp_path)
    with pytest.raises(GeneratorFailed) as failure:
        generator.run(command_spec(104, "echo 'npm ERR! code E404'; exit 5"), run_logger)
    message = str(failure.value)
    assert "generator for request 104 exited with code 1" in message
    assert "npm ERR! code E404" in message
    assert "agent command \"echo 'npm ERR! code E404'; exit 5\" exited with code 5" in message
    assert containers_of(docker_engine, 104) == []


def test_a_timeout_kills_and_removes_the_container(
    docker_engine, generator_image, tmp_path, run_logger
):
    generator = block(generator_image, tmp_path, timeout_seconds=2)
    started = time.monotonic()
    with pytest.raises(GeneratorFailed, match=r"timed out after 2s and was killed"):
        generator.run(command_spec(105, "echo waiting; sleep 120"), run_logger)
    assert time.monotonic() - started < 30
    assert containers_of(docker_engine, 105) == []


def test_the_container_holds_no_credentials(
    docker_engine, generator_image, tmp_path, run_logger, monkeypatch
):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_orchestrator_token")
    monkeypatch.setenv("APPGEN_DATABASE_URL", "postgresql://u:db_password@db/appgen")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-agent-key")
    generator = block(generator_image, tmp_path, env_allowlist=["ANTHROPIC_API_KEY"])
    seen: dict[str, list[str]] = {}

    def inspect_while_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen:
            for container in containers_of(docker_engine, 106):
                container.reload()
                if container.status == "running":
                    seen["env"] = container.attrs["Config"]["Env"]
                    seen["mounts"] = [m["Destination"] for m in container.attrs["Mounts"]]
            time.sleep(0.1)

    inspector = threading.Thread(target=inspect_while_running)
    inspector.start()
    run = generator.run(command_spec(106, "env > ../environment.txt; sleep 2"), run_logger)
    inspector.join()
    inside = (Path(run.artifact.location).parent / "environment.txt").read_text()
    for evidence in ("\n".join(seen["env"]), inside):
        for secret in ("ghp_orchestrator_token", "db_password", "aws_secret_key"):
            assert secret not in evidence
        assert "sk-agent-key" not in evidence  # listed, and withheld: the gateway attaches it
    # Its own request's directory, and the gateway's sockets: nothing else.
    assert sorted(seen["mounts"]) == ["/run/appgen-gateway", "/workspace/106"]


@pytest.mark.parametrize("read_only_root", [True, False])
def test_the_container_is_confined_and_read_only_root_can_be_turned_off(
    docker_engine, generator_image, tmp_path, run_logger, read_only_root
):
    generator = block(generator_image, tmp_path, read_only_root=read_only_root)
    probe = (
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status > ../probe.txt; "
        "touch /opt/probe 2>/dev/null && echo 'root: writable' >> ../probe.txt; "
        "touch \"$HOME/probe\" && echo 'home: writable' >> ../probe.txt; "
        "python3 -m generator --agent template"
    )
    run = generator.run(command_spec(107, probe), run_logger)
    lines = (Path(run.artifact.location).parent / "probe.txt").read_text().splitlines()
    assert {"CapEff:\t0000000000000000", "NoNewPrivs:\t1", "home: writable"} <= set(lines)
    assert ("root: writable" in lines) is not read_only_root
    assert (Path(run.artifact.location) / "package.json").exists()  # it still generates


def test_three_requests_at_once(flow_env, docker_engine):
    prompts = {201: "a counter", 202: "a blog", 203: "a shop"}
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(
            pool.map(
                lambda item: generate_and_publish(item[1], request_id=item[0]), prompts.items()
            )
        )
    assert [o.status for o in outcomes] == [RequestStatus.PUBLISHED] * 3
    urls = [o.repo_url for o in outcomes if o.repo_url is not None]
    assert sorted(url.rsplit("/", 1)[1] for url in urls) == [
        "blog.git",
        "counter.git",
        "shop.git",
    ]
    assert all(containers_of(docker_engine, rid) == [] for rid in prompts)


def test_three_containers_run_side_by_side(docker_engine, generator_image, tmp_path, run_logger):
    generator = block(generator_image, tmp_path)
    command = "date +%s.%N > ../started; sleep 2; date +%s.%N > ../finished"
    with ThreadPoolExecutor(3) as pool:
        runs = list(
            pool.map(
                lambda rid: generator.run(command_spec(rid, command), run_logger), (211, 212, 213)
            )
        )
    assert [run.request_id for run in runs] == [211, 212, 213]
    spans = [
        [
            float((generation_of(tmp_path, rid) / mark).read_text())
            for mark in ("started", "finished")
        ]
        for rid in (211, 212, 213)
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # they overlapped


def test_files_written_as_root_are_read_and_never_modified(
    flow_env, monkeypatch, appgen_home, tmp_path
):
    monkeypatch.setenv("APPGEN_DOCKER_USER", "0:0")
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv(
        "APPGEN_AGENT_COMMAND",
        "umask 077; python3 -m generator --agent template; echo private > notes.md",
    )
    outcome = generate_and_publish("a counter", request_id=107)
    assert outcome.repo_url is not None
    app = generation_of(appgen_home / "workspace", 107) / "app"
    assert (app / "notes.md").stat().st_uid == 0
    assert oct((app / "notes.md").stat().st_mode & 0o777) == "0o600"
    before = tree_digest(app)
    generate_and_publish("a counter", request_id=107)
    assert tree_digest(app) == before
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", outcome.repo_url, str(clone)], check=True)
    assert (clone / "notes.md").read_text() == "private\n"


def test_reap_removes_only_containers_nobody_will_remove(docker_engine, generator_image, tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()
    host = os.uname().nodename
    common = {LABEL_MANAGED: "true", LABEL_DEADLINE: str(int(time.time()) + 600)}
    docker_engine.containers.run(
        generator_image,
        entrypoint=["sleep", "300"],
        detach=True,
        network_mode="none",
        labels=common | {REQUEST: "301", LABEL_OWNER: f"{host}:{finished.pid}"},
    )
    docker_engine.containers.create(
        generator_image,
        entrypoint=["sleep", "300"],
        network_mode="none",
        labels=common
        | {
            REQUEST: "302",
            LABEL_OWNER: "elsewhere:1",
            LABEL_DEADLINE: str(int(time.time()) - 3600),
        },
    )
    alive = docker_engine.containers.run(
        generator_image,
        entrypoint=["sleep", "300"],
        detach=True,
        network_mode="none",
        labels=common | {REQUEST: "303", LABEL_OWNER: f"{host}:{os.getpid()}"},
    )
    try:
        reaped = block(generator_image, tmp_path).reap()
        assert {r.request_id: r.reason for r in reaped} == {
            "301": f"its orchestrator (pid {finished.pid}) is gone",
            "302": "past its deadline",
        }
        assert containers_of(docker_engine, 301) == containers_of(docker_engine, 302) == []
        assert [c.id for c in containers_of(docker_engine, 303)] == [alive.id]
    finally:
        for request_id in (301, 302, 303):
            for container in containers_of(docker_engine, request_id):
                container.remove(force=True)


def test_a_missing_image_says_how_to_build_it(tmp_path, run_logger, docker_engine):
    generator = block("appgen-generator:does-not-exist", tmp_path)
    with pytest.raises(GeneratorFailed, match="appgen build-image"):
        generator.run(command_spec(108, "true"), run_logger)
