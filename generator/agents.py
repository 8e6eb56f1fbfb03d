"""The coding agents the generator can run. Each writes an app into ``app_dir`` or
raises ``AgentError`` with a message that says what went wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from generator import template
from generator.reaper import kill_descendants


class AgentError(Exception):
    """The agent did not produce an app; the message is printed on stderr."""


class Agent(Protocol):
    def __call__(
        self,
        *,
        request_id: str,
        prompt: str,
        app_dir: Path,
        command: str | None,
        earlier_prompts: list[str],
    ) -> None: ...


def run_template(
    *, request_id: str, prompt: str, app_dir: Path, command: str | None, earlier_prompts: list[str]
) -> None:
    """Offline scaffold: a small Express app named after the prompt."""
    for relative in template.write_app(prompt, app_dir):
        print(f"template: wrote {relative}", flush=True)


def run_command(
    *, request_id: str, prompt: str, app_dir: Path, command: str | None, earlier_prompts: list[str]
) -> None:
    """Run ``APPGEN_AGENT_COMMAND`` through the shell in the app directory (a
    revision's earlier prompts are in the file ``APPGEN_PROMPT_HISTORY`` names)."""
    if not command:
        raise AgentError("the 'command' agent needs APPGEN_AGENT_COMMAND (a shell command)")
    env = os.environ | {
        "APPGEN_REQUEST_ID": request_id,
        "APPGEN_PROMPT": prompt,
        "APPGEN_APP_DIR": str(app_dir),
    }
    _stream(["/bin/sh", "-c", command], cwd=app_dir, env=env, what=f"agent command {command!r}")


_CLAUDE_KEYS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
_CLAUDE_INSTRUCTIONS = (
    "You are writing a complete, runnable web application in the current directory. "
    "Include a package.json (or requirements.txt) with a start command, a README.md and "
    "a .gitignore. Do not run git. The app must listen on the port in $PORT."
)
_CLAUDE_REVISION = (
    "You are changing an existing, working web application in the current directory: "
    "read it first, keep what the request does not ask to change, and keep it runnable "
    "(its start command, listening on the port in $PORT). Do not run git. It was built "
    "from these requests, oldest first:\n"
)


def claude_instructions(earlier_prompts: list[str]) -> str:
    """The system prompt appended for Claude Code: a new app, or a change to one."""
    if not earlier_prompts:
        return _CLAUDE_INSTRUCTIONS
    return _CLAUDE_REVISION + "\n".join(
        f"{number}. {prompt}" for number, prompt in enumerate(earlier_prompts, 1)
    )


def run_claude(
    *, request_id: str, prompt: str, app_dir: Path, command: str | None, earlier_prompts: list[str]
) -> None:
    """Run the Claude Code CLI non-interactively on the prompt, streaming its progress."""
    executable = shutil.which("claude")
    if executable is None:
        raise AgentError(
            "the Claude Code CLI ('claude') is not on PATH: install it with "
            "'npm install -g @anthropic-ai/claude-code' in the generator image"
        )
    if not any(os.environ.get(key) for key in _CLAUDE_KEYS):
        raise AgentError(
            "the claude agent has no way to its model: the egress gateway attaches the "
            "model key, and this generation's APPGEN_AGENT_EGRESS is none (set it to model "
            "or registries, and ANTHROPIC_API_KEY for the orchestrator)"
        )
    argv = [
        executable,
        "-p",
        prompt,
        "--append-system-prompt",
        claude_instructions(earlier_prompts),
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "bypassPermissions",
    ]
    # Telemetry and update checks would only be refused by the egress gateway.
    env = os.environ | {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    _stream(argv, cwd=app_dir, env=env, what="claude", render=_render_claude_event)


def _render_claude_event(line: str) -> Iterable[str]:
    """Turn one stream-json event into readable lines; other output passes through."""
    try:
        event = json.loads(line)
    except ValueError:
        yield line
        return
    if not isinstance(event, dict):
        yield line
        return
    if event.get("type") == "assistant":
        for block in event.get("message", {}).get("content", []):
            if block.get("type") == "text" and block.get("text", "").strip():
                yield f"claude: {block['text'].strip()}"
            elif block.get("type") == "tool_use":
                target = block.get("input", {}).get("file_path") or ""
                yield f"claude: [{block.get('name')}] {target}".rstrip()
    elif event.get("type") == "result":
        if event.get("is_error"):
            raise AgentError(f"claude reported an error: {event.get('result') or event}")
        yield f"claude: finished after {event.get('num_turns', '?')} turns"


def _stream(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    what: str,
    render: Callable[[str], Iterable[str]] = lambda line: (line,),
) -> None:
    """Run argv, printing each output line as it comes; raise if it exits non-zero.

    The agent is done when it exits, not when its output ends: processes it left
    running (a background server, a ``setsid`` child) still hold the pipe, and are
    killed then."""
    failures: list[AgentError] = []
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        output = process.stdout

        def relay() -> None:
            try:
                for line in output:
                    for shown in render(line.rstrip("\n")):
                        print(shown, flush=True)
            except AgentError as exc:
                failures.append(exc)
                process.kill()

        reader = threading.Thread(target=relay, name="agent-output", daemon=True)
        reader.start()
        process.wait()
        left = kill_descendants()
        reader.join()
    if left:
        print(f"generator: stopped {left} process(es) the agent left running", flush=True)
    if failures:
        raise failures[0]
    if process.returncode != 0:
        raise AgentError(f"{what} exited with code {process.returncode}")


AGENTS: dict[str, Agent] = {
    "template": run_template,
    "command": run_command,
    "claude": run_claude,
}
