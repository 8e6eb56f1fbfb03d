"""``python -m generator``: the agents, as the container runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from generator.template import files_for
from tests.conftest import REPO_ROOT, processes_like, tree_digest, unique_sleep, wait_until_gone


def run_generator(
    app_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    prompt: str = "Build me a counter app",
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "generator",
            "--request-id",
            "7",
            "--prompt",
            prompt,
            "--app-dir",
            str(app_dir),
            *args,
        ],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_template_writes_a_runnable_express_app_deterministically(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_generator(first).returncode == 0
    assert run_generator(second).returncode == 0
    assert tree_digest(first) == tree_digest(second)
    package = json.loads((first / "package.json").read_text())
    assert package["scripts"]["start"] == "node server.js"
    assert "express" in package["dependencies"]
    assert "Counter" in (first / "public/index.html").read_text()
    for script in ("server.js", "public/app.js", "test/api.test.js"):
        check = subprocess.run(["node", "--check", str(first / script)], capture_output=True)
        assert check.returncode == 0, check.stderr


def test_template_differs_by_prompt_and_escapes_it_in_html():
    hostile = files_for('<script>alert("x")</script> tracker')
    assert "<script>alert" not in hostile["public/index.html"]
    assert files_for("a recipe book") != files_for("a counter")


def test_command_agent_runs_in_the_app_dir_with_the_request_in_its_environment(tmp_path):
    app = tmp_path / "app"
    command = (
        'printf "%s|%s|%s|%s" "$APPGEN_REQUEST_ID" "$APPGEN_PROMPT" "$APPGEN_APP_DIR" '
        '"$PWD" > out.txt'
    )
    result = run_generator(app, "--agent", "command", "--agent-command", command, prompt="a blog")
    assert result.returncode == 0, result.stderr
    assert (app / "out.txt").read_text() == f"7|a blog|{app}|{app}"


def test_a_failing_agent_exits_non_zero_with_the_reason_on_stderr(tmp_path):
    result = run_generator(
        tmp_path / "app",
        env={"APPGEN_AGENT": "command", "APPGEN_AGENT_COMMAND": "echo half; exit 3"},
    )
    assert result.returncode == 1
    assert "half" in result.stdout
    assert "agent command 'echo half; exit 3' exited with code 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_arguments_are_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "generator"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 2
    assert "missing --request-id, --prompt, --app-dir" in result.stderr


@pytest.fixture
def fake_claude(tmp_path: Path) -> Path:
    """A stand-in `claude` CLI: checks its arguments, writes a file, streams JSON events."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "claude"
    script.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        args = sys.argv[1:]
        assert args[0] == "-p" and "--output-format" in args, args
        prompt = args[1]
        open("system.txt", "w").write(args[args.index("--append-system-prompt") + 1])
        open("index.html", "w").write("<h1>" + prompt + "</h1>")
        events = [
            {{"type": "system", "subtype": "init"}},
            {{"type": "assistant", "message": {{"content": [
                {{"type": "text", "text": "Writing the page."}},
                {{"type": "tool_use", "name": "Write",
                  "input": {{"file_path": "index.html"}}}}]}}}},
            {{"type": "result", "subtype": "success", "is_error": prompt == "fail",
              "num_turns": 2, "result": "model refused"}},
        ]
        for event in events:
            print(json.dumps(event), flush=True)
        """)
    )
    script.chmod(0o755)
    return bin_dir


def test_claude_agent_runs_the_cli_on_the_prompt_and_streams_its_progress(tmp_path, fake_claude):
    env = {"PATH": f"{fake_claude}:{os.environ['PATH']}", "ANTHROPIC_API_KEY": "sk-test"}
    result = run_generator(tmp_path / "app", "--agent", "claude", env=env, prompt="a landing page")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app/index.html").read_text() == "<h1>a landing page</h1>"
    assert "claude: Writing the page." in result.stdout
    assert "claude: [Write] index.html" in result.stdout
    assert "claude: finished after 2 turns" in result.stdout


def test_a_revision_keeps_its_base_and_tells_claude_the_earlier_prompts(tmp_path, fake_claude):
    app = tmp_path / "app"
    app.mkdir()
    (app / "server.js").write_text("// the published app\n")
    env = {
        "PATH": f"{fake_claude}:{os.environ['PATH']}",
        "ANTHROPIC_API_KEY": "sk-test",
        "APPGEN_BASE_COMMIT": "0123456789abcdef",
        "APPGEN_REVISION": "3",
        "APPGEN_EARLIER_PROMPTS": json.dumps(["a counter app", "add a reset button"]),
    }
    result = run_generator(app, "--agent", "claude", "--fresh", env=env, prompt="add dark mode")
    assert result.returncode == 0, result.stderr
    assert (app / "server.js").read_text() == "// the published app\n"  # not emptied
    assert "revision 3, changing the app at 0123456789ab" in result.stdout
    system = (app / "system.txt").read_text()
    assert "changing an existing, working web application" in system
    assert system.endswith("1. a counter app\n2. add a reset button")


def test_claude_agent_reports_an_error_result(tmp_path, fake_claude):
    env = {"PATH": f"{fake_claude}:{os.environ['PATH']}", "ANTHROPIC_API_KEY": "sk-test"}
    result = run_generator(tmp_path / "app", "--agent", "claude", env=env, prompt="fail")
    assert result.returncode == 1
    assert "claude reported an error: model refused" in result.stderr


def test_claude_agent_without_the_cli_says_how_to_install_it(tmp_path):
    result = run_generator(
        tmp_path / "app",
        "--agent",
        "claude",
        env={"PATH": str(tmp_path), "ANTHROPIC_API_KEY": "sk-test"},
    )
    assert result.returncode == 1
    assert "Claude Code CLI ('claude') is not on PATH" in result.stderr


def test_claude_agent_without_a_gateway_says_which_setting_gives_it_its_model(
    tmp_path, fake_claude
):
    result = run_generator(
        tmp_path / "app", "--agent", "claude", env={"PATH": f"{fake_claude}:{os.environ['PATH']}"}
    )
    assert result.returncode == 1
    assert "APPGEN_AGENT_EGRESS is none" in result.stderr
    assert not (tmp_path / "app/index.html").exists()


def test_fresh_empties_the_app_dir_without_following_links(tmp_path):
    app, outside = tmp_path / "app", tmp_path / "outside"
    (app / "old/deep").mkdir(parents=True)
    (app / "old/deep/file.txt").write_text("stale")
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    (app / "link").symlink_to(outside)
    result = run_generator(app, "--fresh")
    assert result.returncode == 0, result.stderr
    assert not (app / "old").exists() and not (app / "link").is_symlink()
    assert (outside / "keep.txt").read_text() == "not ours"
    assert (app / "package.json").exists()


def test_the_agent_dies_with_an_orchestrator_killed_mid_generation(tmp_path):
    """SIGKILL of the orchestrator leaves the generator a stdout pipe nobody reads;
    the stop its parent's death sends must still end the agent, not wait on it."""
    sleep = unique_sleep()
    orchestrator = textwrap.dedent(
        f"""
        import subprocess, sys, time
        from core.processes import die_with_parent
        subprocess.Popen(
            [sys.executable, "-m", "generator", "--request-id", "7", "--prompt", "x",
             "--app-dir", {str(tmp_path / "app")!r}, "--agent", "command",
             "--agent-command", "echo started > started; {sleep}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        time.sleep(3600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", orchestrator], env=os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    )
    try:
        started = tmp_path / "app" / "started"
        for _ in range(600):
            if started.exists() or parent.poll() is not None:
                break
            time.sleep(0.1)
        assert started.exists(), "the agent never started"
        assert processes_like(sleep)
    finally:
        parent.kill()
        parent.wait()
    assert wait_until_gone(sleep, timeout=30) == []
