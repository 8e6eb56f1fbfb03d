"""Dockerfile instructions every runtime's Dockerfile is made of: the runtime user and
its home, COPY sources, ENV and CMD lines, the app folder."""

from __future__ import annotations

import json
import posixpath

from core.launch import LaunchPlan
from core.launch.shell import ShellCommand

USER = "10001:10001"
HOME = "/home/app"


def copy_source(folder: str) -> str:
    """A folder as a COPY source: '.' for the root, 'folder/' otherwise."""
    return f"{folder}/" if folder else "."


def in_folder(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if folder else name


def json_list(words: list[str] | tuple[str, ...]) -> str:
    return json.dumps(list(words))


def prepare_workdir(workdir: str) -> list[str]:
    """WORKDIR, then a home and an app folder the runtime user owns."""
    folders = " ".join(dict.fromkeys(["/app", workdir, HOME]))
    return [f"WORKDIR {workdir}", f"RUN mkdir -p {folders} && chown {USER} {folders}"]


def env_line(env: dict[str, str]) -> str:
    return "ENV " + " ".join(f"{key}={json.dumps(value)}" for key, value in env.items())


def start_command(plan: LaunchPlan) -> str:
    if plan.shell_start:
        command = ShellCommand.parse(plan.shell_start).for_container()
        return f"CMD {json_list(['sh', '-c', command])}"
    return f"CMD {json_list(plan.start)}"


def app_workdir(plan: LaunchPlan) -> str:
    """The app folder in the image: /app, or /app/<server> beside /app/<client>."""
    if plan.client is not None:
        return f"/app/{posixpath.basename(plan.folder)}"
    return "/app"
