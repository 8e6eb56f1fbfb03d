"""A hostile agent, through the real flow: it reaches for what the orchestrator holds.

The agent runs model-written commands, so this one does what such a command could:
it dumps every ``/proc/*/environ`` and ``/proc/*/cmdline`` it can see, copies
``APPGEN_HOME``, ``PREFECT_HOME``, the database and the repositories into its app,
hardlinks the database into the app, plants a bare repository with a ``pre-receive``
hook where the local Git host will look for the request's repository, and sets a
global ``init.templateDir`` (and ``core.hooksPath``) with the same hook in its HOME.

Confined (process mode in the bubblewrap sandbox, Docker mode) it finds nothing to
steal: none of the orchestrator's secrets (fake values planted in its environment,
and in the environment and command line of a same-user process it could see if it
were not confined) appears anywhere in the published repository, and the hook never
runs. Unconfined (``APPGEN_TRUST_AGENT``) it can read whatever this user can, so only
what the orchestrator itself guarantees is checked: the hardlink is left out and
reported, the planted repository is not reused, and no hook runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypedDict
from urllib.parse import unquote, urlparse

import pytest

from core.errors import AppgenError
from core.models import RequestStatus
from flows.publish import generate_and_publish
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("flow_env")

SECRETS = {
    "APPGEN_GITHUB_TOKEN": "ghp_plantedFakeToken4242424242",
    "AWS_SECRET_ACCESS_KEY": "plantedFakeAwsSecret/4242abcdXYZ",
    "OPENAI_API_KEY": "sk-plantedFakeOpenAIKey42424242",
    "DATABASE_URL": "postgresql://appgen:plantedFakeDbPassword42@db.internal:5432/appgen",
}
SECRET_IN_COMMAND_LINE = "plantedFakeCliSecret4242"
SQLITE_HEADER = "SQLite format 3"
APP_NAME = "hostile-app"

# What the agent does to get at what the orchestrator holds. @NAME@ is filled in.
STEAL = r"""
mkdir -p stolen
for d in /proc/[0-9]*; do
  n=${d#/proc/}
  cat "$d/environ" > "stolen/environ-$n" 2>/dev/null
  cat "$d/cmdline" > "stolen/cmdline-$n" 2>/dev/null
done
echo "processes seen: $(ls -d /proc/[0-9]* | wc -l)" >> report.txt
for p in "@APPGEN_HOME@" "@PREFECT_HOME@" "@DATABASE@" "@REPOS@"; do
  if cp -R "$p" stolen/ 2>/dev/null; then echo "copied $p" >> report.txt; fi
done
grep CapEff /proc/self/status >> report.txt
if touch /usr/appgen-probe 2>/dev/null; then echo "usr: writable" >> report.txt
else echo "usr: read-only" >> report.txt; fi
if [ -e /var/run/docker.sock ] || [ -e /run/docker.sock ]; then
  echo "docker socket: present" >> report.txt
else echo "docker socket: absent" >> report.txt; fi
"""
TAMPER = r"""
if ln "@DATABASE@" stolen-db.sqlite 2>/dev/null; then
  echo "hardlinked the database" >> report.txt
fi
hook='#!/bin/sh
env > "@MARKER@"
'
r="@REPOS@/@APP_NAME@.git"
if mkdir -p "$r/hooks" "$r/objects" "$r/refs/heads" 2>/dev/null; then
  printf 'ref: refs/heads/main\n' > "$r/HEAD"
  printf '[core]\n\tbare = true\n[appgen]\n\trequestid = @REQUEST_ID@\n' > "$r/config"
  printf '\ttoken = forged\n' >> "$r/config"
  printf '%s' "$hook" > "$r/hooks/pre-receive" && chmod +x "$r/hooks/pre-receive"
  echo "planted a repository" >> report.txt
fi
mkdir -p "$HOME/template/hooks"
printf '%s' "$hook" > "$HOME/template/hooks/pre-receive"
chmod +x "$HOME/template/hooks/pre-receive"
printf '[init]\n\ttemplateDir = %s/template\n[core]\n\thooksPath = %s/template/hooks\n' \
  "$HOME" "$HOME" >> "$HOME/.gitconfig" && echo "set a global template" >> report.txt
"""


def agent_command(python: str, script: str, **values: str) -> str:
    """The template app, then ``script`` with its @NAME@ placeholders filled in."""
    for name, value in values.items():
        script = script.replace(f"@{name}@", value)
    return f"set +e\n{python} -m generator --agent template\n{script}\ntrue\n"


@pytest.fixture
def planted_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The fake secrets in the orchestrator's environment, and a same-user process
    holding them in its environment and command line, as ``/proc`` shows them.
    HOME is the test's own, so the agent's global git config lands there."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_TEMPLATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; print('ready', flush=True); sys.stdin.read()",
            "--token",
            SECRET_IN_COMMAND_LINE,
        ],
        env=SECRETS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        # The attack is real: outside a sandbox this user reads them.
        environ = Path(f"/proc/{holder.pid}/environ").read_bytes().decode()
        assert SECRETS["OPENAI_API_KEY"] in environ
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def targets(appgen_home: Path) -> dict[str, str]:
    return {
        "APPGEN_HOME": str(appgen_home),
        "PREFECT_HOME": os.environ["PREFECT_HOME"],
        "DATABASE": str(appgen_home / "appgen.db"),
        "REPOS": str(appgen_home / "repos"),
        "APP_NAME": APP_NAME,
    }


def publish(request_id: int):
    """The outcome, or the clear error a refused publish ends with."""
    try:
        return generate_and_publish("a counter app", request_id=request_id, app_name=APP_NAME)
    except AppgenError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        return exc


def repository_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def git(bare: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", f"--git-dir={bare}", *args], capture_output=True, text=True, check=check
    )


def assert_no_secret_published(bare: Path, *, published: bool = True) -> None:
    """No planted value in any file of any commit, nor in any file name."""
    revisions = git(bare, "rev-list", "--all", check=published).stdout.split()
    if not published and not revisions:
        return
    assert revisions, "nothing was published"
    names = git(bare, "log", "--all", "--format=", "--name-only").stdout
    for value in [*SECRETS.values(), SECRET_IN_COMMAND_LINE]:
        found = git(bare, "grep", "-a", "-l", "-F", "-e", value, *revisions, check=False)
        assert found.returncode == 1, f"{value!r} was published in {found.stdout}"
        assert value not in names
    database = git(bare, "grep", "-a", "-l", "-F", "-e", SQLITE_HEADER, *revisions, check=False)
    assert database.returncode == 1, f"the database was published: {database.stdout}"


def published_file(bare: Path, path: str) -> str:
    return git(bare, "show", f"main:{path}").stdout


def test_a_confined_agent_steals_nothing_and_plants_no_hook(
    confined_mode, planted_secrets, appgen_home, tmp_path, monkeypatch
):
    request_id = 301 if confined_mode == "sandbox" else 302
    marker = tmp_path / "hook-ran"
    values = targets(appgen_home) | {"MARKER": str(marker), "REQUEST_ID": str(request_id)}
    command = agent_command("python3", STEAL + TAMPER, **values)
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", command)

    outcome = publish(request_id)

    assert not marker.exists(), "a planted hook ran"
    assert not (Path(os.environ["HOME"]) / ".gitconfig").exists()  # only its own HOME
    assert not (appgen_home / "repos" / f"{APP_NAME}-2.git").exists()
    refused = isinstance(outcome, AppgenError)
    assert refused or outcome.status is RequestStatus.PUBLISHED
    bare = appgen_home / "repos" / f"{APP_NAME}.git"
    assert_no_secret_published(bare, published=not refused)
    if refused:
        return
    assert git(bare, "config", "appgen.token").stdout.strip() != "forged"
    assert repository_path(outcome.repo_url) == bare
    report = published_file(bare, "report.txt")
    # The attack ran, and found only the sandbox or container itself.
    assert "processes seen:" in report and "copied" not in report
    assert "hardlinked" not in report
    assert "CapEff:\t0000000000000000" in report
    assert "usr: read-only" in report and "docker socket: absent" in report
    environ_dumps = git(bare, "ls-tree", "--name-only", "main", "stolen/").stdout.split()
    assert any(name.startswith("stolen/environ-") for name in environ_dumps)


def test_an_unconfined_agent_cannot_publish_a_hardlink_or_run_a_hook(
    planted_secrets, appgen_home, tmp_path, monkeypatch, caplog
):
    """APPGEN_TRUST_AGENT: the agent sees what this user can, by choice. What the
    orchestrator guarantees still holds against the workspace and the Git root."""
    marker = tmp_path / "hook-ran"
    values = targets(appgen_home) | {"MARKER": str(marker), "REQUEST_ID": "303"}
    monkeypatch.setenv("APPGEN_AGENT", "command")
    monkeypatch.setenv("APPGEN_TRUST_AGENT", "true")
    monkeypatch.setenv("APPGEN_AGENT_COMMAND", agent_command(sys.executable, TAMPER, **values))

    outcome = publish(303)

    assert outcome.status is RequestStatus.PUBLISHED
    bare = repository_path(outcome.repo_url)
    report = published_file(bare, "report.txt")
    # Each attack was made, and each came to nothing.
    assert {"hardlinked the database", "planted a repository", "set a global template"} <= set(
        report.splitlines()
    )
    assert not marker.exists(), "a planted hook ran"
    assert bare == appgen_home / "repos" / f"{APP_NAME}-2.git"  # the planted one is not reused
    assert list((bare / "hooks").iterdir()) == []  # no template was copied
    assert "stolen-db.sqlite" not in git(bare, "ls-tree", "--name-only", "main").stdout.split()
    assert "left out stolen-db.sqlite: a hard link (2 names for one file)" in caplog.text
    assert_no_secret_published(bare)


class RunAs(TypedDict, total=False):
    """The arguments of subprocess.Popen and run that start a process as another user."""

    user: int
    group: int
    extra_groups: list[int]


def test_a_non_dumpable_process_environment_is_hidden_from_its_own_user(tmp_path):
    """prctl(PR_SET_DUMPABLE, 0), as core.processes.make_non_dumpable does it: a
    sibling process of the same (non-root) user reads a normal process's
    environment, and not that of a non-dumpable one."""
    python = shutil.which("python3", path="/usr/bin:/bin") if os.getuid() == 0 else sys.executable
    if python is None:
        pytest.skip("no system python3 to run as an unprivileged user")
    # Root may read any process's environment (CAP_SYS_PTRACE): run both as another uid.
    as_user: RunAs = {"user": 54321, "group": 54321, "extra_groups": []} if os.getuid() == 0 else {}
    # The helper, where that user can import it (the checkout may not be readable).
    module_dir = Path(tempfile.mkdtemp(prefix="appgen-dumpable-"))
    try:
        module_dir.chmod(0o755)
        shutil.copy(REPO_ROOT / "core/processes.py", module_dir / "appgen_processes.py")
        (module_dir / "appgen_processes.py").chmod(0o644)
        seen = {}
        for hidden in (False, True):
            secret = f"plantedFakeSecret-{hidden}-4242"
            call = "appgen_processes.make_non_dumpable(); " if hidden else ""
            holder = subprocess.Popen(
                [
                    python,
                    "-c",
                    f"import sys, appgen_processes; {call}print('ready', flush=True); "
                    "sys.stdin.read()",
                ],
                env={"PYTHONPATH": str(module_dir), "HOLDER_SECRET": secret},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                **as_user,
            )
            try:
                assert holder.stdout is not None
                assert holder.stdout.readline().strip() == "ready"
                reader = subprocess.run(
                    ["cat", f"/proc/{holder.pid}/environ"],
                    capture_output=True,
                    **as_user,
                )
                seen[hidden] = (reader.returncode, secret.encode() in reader.stdout)
            finally:
                holder.kill()
                holder.wait()
        assert seen[False] == (0, True)  # the same user reads a dumpable process
        assert seen[True][1] is False and seen[True][0] != 0
    finally:
        shutil.rmtree(module_dir, ignore_errors=True)
