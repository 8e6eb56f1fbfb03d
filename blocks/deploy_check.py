"""The deploy check (APPGEN_VERIFY) on a Docker engine, reached through prefect-docker's
``DockerHost`` (the environment's engine unless a host is given).

``build`` builds the staged tree's image; ``smoke`` also runs it with ``PORT`` set,
publishes the internal port on 127.0.0.1 only, and waits (a bounded time) for the
first HTTP answer at ``/`` (or at the health route the app defines, as Fly's check
asks it). An answer from 200 to 499 is an app that serves (a 404 at
``/`` is an API with no home page); a 5xx is an app that starts but fails, as a
container that exits or no answer in time is one that does not start. The
container, the image and the build's intermediate images are removed afterwards,
whatever happened. A failed check is returned as ``verified='failed'`` with the tail
of the build or container log.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import docker
from prefect_docker import DockerHost

from core.errors import PublishError
from core.models import DeployCheck, DeployFiles, StagedTree, VerifyMode

if TYPE_CHECKING:
    from docker.models.containers import Container

LOG_TAIL_LINES = 30
_STEP_IMAGE = re.compile(r" ---> ([0-9a-f]{12})")
_CACHE_HIT = "---> Using cache"
POLL_SECONDS = 0.5
SERVER_ERROR = 500
STOP_SECONDS = 10
LABEL = "org.appgen.verify"


@dataclass(frozen=True)
class DockerDeployCheck:
    """Builds, and for ``smoke`` runs, the deploy files on ``host``'s engine.

    Example:
        ```python
        check = DockerDeployCheck(timeout=900, answer_timeout=60)
        outcome = check.verify(staged, deploy, "smoke")
        ```
    """

    host: DockerHost = field(default_factory=DockerHost)
    timeout: float = 900.0  # for the build, without progress
    answer_timeout: float = 60.0  # for the first HTTP answer

    def verify(self, staged: StagedTree, deploy: DeployFiles, mode: VerifyMode) -> DeployCheck:
        """The check's outcome; it never leaves a container or the image behind. An
        engine that cannot be reached raises ``PublishError``."""
        if mode == "off":
            return DeployCheck(mode=mode, verified=None, detail="APPGEN_VERIFY=off")
        if not deploy.deployable or deploy.dockerfile is None:
            return DeployCheck(
                mode=mode, verified=None, detail="not deployable, so there is nothing to build"
            )
        try:
            client = self.host.get_client()
        except docker.errors.DockerException as exc:
            raise PublishError(
                f"APPGEN_VERIFY={mode} needs a Docker engine and none answered ({exc}); "
                "start one or set APPGEN_VERIFY=off"
            ) from exc
        with contextlib.closing(client):
            return _check(
                client,
                staged,
                deploy,
                deploy.dockerfile,
                mode,
                self.timeout,
                self.answer_timeout,
            )


def _check(
    client: docker.DockerClient,
    staged: StagedTree,
    deploy: DeployFiles,
    dockerfile: str,
    mode: VerifyMode,
    timeout: float,
    answer_timeout: float,
) -> DeployCheck:
    started = time.monotonic()
    tag = f"appgen-verify-{uuid.uuid4().hex[:12]}:latest"
    log: list[str] = []
    try:
        error = _build(client, staged, dockerfile, tag, timeout, log)
        if error is not None:
            return _failed(mode, started, f"docker build failed: {error}", log)
        if mode == "build":
            return DeployCheck(
                mode=mode, verified="built", seconds=time.monotonic() - started, detail=tag
            )
        deadline = time.monotonic() + answer_timeout
        with _running(client, tag, deploy) as container:
            path = deploy.health_path or "/"
            status = _first_answer(container, deploy.internal_port, path, deadline)
            if status is None:
                container.reload()
                log[:] = _container_log(container)
                why = (
                    f"the container exited ({container.attrs['State'].get('ExitCode')})"
                    if container.status != "running"
                    else f"no HTTP answer on port {deploy.internal_port} within "
                    f"{answer_timeout:.0f}s"
                )
                return _failed(mode, started, why, log)
            if status >= SERVER_ERROR:
                # Stopped first: the engine has then copied all the app printed about
                # the failure into the container's log.
                with contextlib.suppress(docker.errors.DockerException):
                    container.stop(timeout=STOP_SECONDS)
                log[:] = _container_log(container)
                why = f"HTTP {status} at {path} on port {deploy.internal_port}: the app fails"
                return _failed(mode, started, why, log)
        return DeployCheck(
            mode=mode,
            verified="served",
            seconds=time.monotonic() - started,
            detail=f"HTTP {status} at {path} on port {deploy.internal_port}",
        )
    except docker.errors.DockerException as exc:
        return _failed(mode, started, f"the Docker engine refused: {exc}", log)
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            client.images.remove(tag, force=True)
        _remove_stages(client, log)


def _remove_stages(client: docker.DockerClient, log: list[str]) -> None:
    """Remove the untagged images the build's steps made (the classic builder keeps
    them); ones still in use by another image are left alone. A step answered from
    the cache made none: its image may be another build's, running at once."""
    made = [
        found.group(1)
        for previous, line in zip(["", *log], log, strict=False)
        if (found := _STEP_IMAGE.fullmatch(line)) and previous.strip() != _CACHE_HIT
    ]
    for image_id in reversed(made):
        with contextlib.suppress(docker.errors.DockerException):
            if not client.images.get(image_id).tags:
                client.images.remove(image_id)


def _failed(mode: VerifyMode, started: float, why: str, log: list[str]) -> DeployCheck:
    tail = [line for line in log if line.strip()][-LOG_TAIL_LINES:]
    return DeployCheck(
        mode=mode,
        verified="failed",
        seconds=time.monotonic() - started,
        detail=why,
        log_tail=tail,
    )


def _build(
    client: docker.DockerClient,
    staged: StagedTree,
    dockerfile: str,
    tag: str,
    timeout: float,
    log: list[str],
) -> str | None:
    """Build the image; the error message, or None when it built."""
    try:
        for chunk in client.api.build(
            path=str(staged.path),
            dockerfile=dockerfile,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            labels={LABEL: "true"},
            timeout=int(timeout),
        ):
            if "stream" in chunk:
                log.extend(chunk["stream"].rstrip("\n").splitlines())
            if "error" in chunk:
                return str(chunk["error"]).strip()
    except docker.errors.DockerException as exc:
        return str(exc)
    except OSError as exc:  # the stream timed out
        return f"no progress for {timeout:.0f}s ({exc})"
    return None


@contextlib.contextmanager
def _running(client: docker.DockerClient, tag: str, deploy: DeployFiles) -> Iterator[Container]:
    port = f"{deploy.internal_port}/tcp"
    # types-docker has no (host_ip, None) for "any free port on host_ip", which Docker takes.
    container = client.containers.run(  # type: ignore[call-overload]
        tag,
        detach=True,
        environment={"PORT": str(deploy.internal_port)},
        ports={port: ("127.0.0.1", None)},
        labels={LABEL: "true"},
        mem_limit="1g",
    )
    try:
        yield container
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)


def _first_answer(container: Container, port: int | None, path: str, deadline: float) -> int | None:
    """The status of the first HTTP answer at ``path`` on the published port, or None
    when the container stops or the deadline passes first."""
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            return None
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
        if bindings:
            host_port = int(bindings[0]["HostPort"])
            connection = http.client.HTTPConnection("127.0.0.1", host_port, timeout=5)
            try:
                connection.request("GET", path)
                return connection.getresponse().status
            except (OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
        time.sleep(POLL_SECONDS)
    return None


def _container_log(container: Container) -> list[str]:
    with contextlib.suppress(docker.errors.DockerException):
        text = container.logs(tail=LOG_TAIL_LINES).decode("utf-8", errors="replace")
        return text.splitlines()
    return []
