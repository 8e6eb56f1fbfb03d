"""Start commands that need a shell (a Procfile's ``web:`` line): where they split into
steps, and how to run them as a container's command so that the server, not the
shell, receives the stop signal."""

from __future__ import annotations

import re
from dataclasses import dataclass

# List operators after which exec would cut the command short: the shell stays.
_KEEPS_SHELL = ("|", "&", "||")
_OPERATOR = re.compile(r"&&|\|\||[;&|\n]")


@dataclass(frozen=True)
class ShellCommand:
    """A command line as ``sh -c`` reads it, split at its top-level ``&&`` and ``;``
    (not inside quotes, ``$(…)`` or parentheses)."""

    text: str
    steps: tuple[str, ...]
    server_at: int  # where the last step starts in ``text``
    keeps_shell: bool  # a pipe, a background job or `||` at the top level

    @classmethod
    def parse(cls, text: str) -> ShellCommand:
        text = text.strip()
        steps: list[str] = []
        keeps_shell = False
        start = 0
        for position, operator in _top_level_operators(text):
            if operator in _KEEPS_SHELL:
                keeps_shell = True
            if text[start:position].strip():
                steps.append(text[start:position].strip())
            start = position + len(operator)
        server_at = start + len(text[start:]) - len(text[start:].lstrip())
        if text[start:].strip():
            steps.append(text[start:].strip())
        return cls(text, tuple(steps), server_at, keeps_shell)

    @property
    def server(self) -> str:
        """The last step: the long-running one, after the one-off steps."""
        return self.steps[-1] if self.steps else ""

    @property
    def one_off_steps(self) -> tuple[str, ...]:
        return self.steps[:-1]

    def for_container(self) -> str:
        """The command with ``exec`` on the server step, so that the server replaces
        the shell (and gets the stop signal) once the steps before it have run. A
        pipeline or a background job stays under the shell as written."""
        if self.keeps_shell or not self.steps:
            return self.text
        server = self.text[self.server_at :]
        if server.startswith("exec "):
            return self.text
        return f"{self.text[: self.server_at]}exec {server}"


@dataclass(frozen=True)
class OneOffStep:
    """Where a step that must run before serving (a migration, ``init-db``) goes."""

    release_command: str | None  # fly.toml's [deploy] release_command, or None
    start: str  # the start command, with the step in front when it runs at start-up
    note: str  # for the README: which, and why


def before_serving(what: str, server: str, *, command: str, external_database: bool) -> OneOffStep:
    """Run ``what`` (``command``) once per deploy on Fly's release machine when the
    database is elsewhere; else at each start, before ``server``: a database that is a
    file in the image is one a release machine's changes would never reach."""
    if external_database:
        note = (
            f"{what} (`{command}`) is Fly's release_command: it runs once before each "
            "deploy, since the database is external (DATABASE_URL)"
        )
        return OneOffStep(command, server, note)
    note = (
        f"{what} (`{command}`) runs at each start, before the server: with no "
        "DATABASE_URL the database is a file in the image, which a release machine's "
        "changes would never reach"
    )
    return OneOffStep(None, f"{command} && {server}", note)


def _top_level_operators(text: str) -> list[tuple[int, str]]:
    """(position, operator) of every list operator outside quotes and parentheses."""
    found: list[tuple[int, str]] = []
    quote: str | None = None
    depth = 0
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and quote != "'":
            position += 2
            continue
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "&" and text[position - 1 : position] in (">", "<"):
            pass  # a redirection: 2>&1
        elif depth == 0 and (match := _OPERATOR.match(text, position)):
            found.append((position, ";" if match[0] == "\n" else match[0]))
            position += len(match[0])
            continue
        position += 1
    return found
