"""core.launch.shell: a Procfile's web command as a container runs it, with the server
(the last step) replacing the shell so that it gets the stop signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from core.launch.shell import ShellCommand


@pytest.mark.parametrize(
    ("web", "container"),
    [
        ("gunicorn app:app --bind 0.0.0.0:$PORT", "exec gunicorn app:app --bind 0.0.0.0:$PORT"),
        (
            "python manage.py migrate && python manage.py collectstatic --no-input"
            " && gunicorn project.wsgi",
            "python manage.py migrate && python manage.py collectstatic --no-input"
            " && exec gunicorn project.wsgi",
        ),
        ("flask init-db; flask run", "flask init-db; exec flask run"),
        ('echo "a && b" && serve', 'echo "a && b" && exec serve'),
        ("(cd web && make) && serve 2>&1", "(cd web && make) && exec serve 2>&1"),
        ("exec node web.js", "exec node web.js"),
        # Kept under the shell as written: exec would cut a pipeline or a job short.
        ("serve | tee log", "serve | tee log"),
        ("migrate || true", "migrate || true"),
        ("worker & serve", "worker & serve"),
    ],
)
def test_the_server_step_replaces_the_shell(web, container):
    assert ShellCommand.parse(web).for_container() == container


def test_steps_split_at_top_level_lists_only():
    command = ShellCommand.parse("a 'x; y' && b \"$(c && d)\"; e")
    assert command.steps == ("a 'x; y'", 'b "$(c && d)"', "e")
    assert command.one_off_steps == ("a 'x; y'", 'b "$(c && d)"') and command.server == "e"
    assert not command.keeps_shell
    assert ShellCommand.parse("a | b").keeps_shell


def test_the_server_runs_after_the_steps_and_gets_the_stop_signal(tmp_path):
    """What the old `exec a && b` got wrong: the container ran the first step, exited 0
    and never served. Run the rendered command under a real sh, as the container
    does: the one-off step runs, the server starts, and SIGTERM to the shell's pid
    reaches the server (it is that process)."""
    server = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(42)); "
        "open('serving', 'w').close(); time.sleep(600)"
    )
    web = (
        f"{sys.executable} -c \"open('stepped', 'w').close()\" && {sys.executable} -c \"{server}\""
    )
    command = ShellCommand.parse(web).for_container()
    process = subprocess.Popen(["sh", "-c", command], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "serving").exists():
            assert process.poll() is None, "the shell exited before the server started"
            assert time.monotonic() < deadline, "the server never started"
            time.sleep(0.05)
        assert (tmp_path / "stepped").exists()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 42  # the server's own handler ran
    finally:
        process.kill()
        process.wait()
