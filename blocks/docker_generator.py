"""The Docker generator: one short-lived container per request, sharing the
workspace with the orchestrator through a bind mount.

prefect-docker 0.7 has no infrastructure block, so this block owns the container's
lifecycle on top of ``DockerHost.get_client()``: create, start, stream logs, wait,
and remove in every case. Containers carry labels (request id, owner, deadline) so
``reap`` can find and remove those a killed orchestrator left behind.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import docker
from prefect_docker import DockerHost
from pydantic import BaseModel, Field

from blocks.artifact_stores import ArtifactStore, VolumeArtifactStore
from blocks.generators import (
    GATEWAY_DIR,
    GeneratorBlock,
    OutputFollower,
    generation_directory,
    generator_environment,
)
from core.errors import GeneratorFailed
from core.models import ArtifactRef, GenerationSpec, GeneratorRun, RunLogger
from core.options import DockerOptions

if TYPE_CHECKING:
    from docker.models.containers import Container

# Note `import docker`, never `import docker.errors`: Prefect registers docker as a lazy
# module, and a submodule import beside it executes docker/errors.py a second time, so
# `except docker.errors.ImageNotFound` would miss what the client raises.
LABEL_MANAGED = "org.appgen.managed"
LABEL_REQUEST = "org.appgen.request-id"
LABEL_OWNER = "org.appgen.orchestrator"
LABEL_DEADLINE = "org.appgen.deadline"
# An orchestrator removes its container right after the deadline kill; past this
# grace nobody will.
_DEADLINE_GRACE_SECONDS = 60
# Writable scratch space of a container whose root filesystem is read-only (HOME is
# /tmp): programs, caches and build steps may run from it.
_TMPFS = {"/tmp": "rw,exec,nosuid,nodev,mode=1777"}


class ReapedContainer(BaseModel):
    container_id: str
    request_id: str | None
    reason: str


class DockerGenerator(GeneratorBlock, DockerOptions):
    """Runs the generator in a container per request on a Docker engine. The
    container sees only its request's generation directory and no credentials: just
    the generator's own variables and the names in ``env_allowlist``. It has no network:
    its one way out is the egress gateway's socket directory, mounted read-only. It has its own
    ``/proc`` (its own processes), no Docker socket, no capabilities, no way to gain
    privileges (``no-new-privileges``), a read-only root filesystem with a private
    ``/tmp`` as ``HOME`` (``read_only_root``) and a bounded number of processes.

    Example:
        ```python
        from blocks.docker_generator import DockerGenerator

        generator = DockerGenerator.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Appgen Docker Generator"
    _block_type_slug = "appgen-docker-generator"
    _description = "Runs the app generator in a short-lived Docker container per request."

    docker_host: DockerHost = Field(
        default_factory=DockerHost, description="The Docker engine to run containers on."
    )
    workspace: Path = Field(
        description="The shared workspace as the orchestrator sees it.",
        examples=["/home/me/.appgen/workspace"],
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on every generator container."
    )

    def artifact_store(self) -> ArtifactStore:
        return VolumeArtifactStore(workspace=self.workspace)

    def output_location(self) -> str:
        return str(self.workspace)

    def run(
        self, spec: GenerationSpec, logger: RunLogger, base: Path | None = None
    ) -> GeneratorRun:
        for reaped in self.reap():  # what killed orchestrators left, before adding more
            logger.info("removed container %s: %s", reaped.container_id, reaped.reason)
        with generation_directory(self.workspace, spec.request_id, base) as generation:
            relative = generation.relative_to(self.workspace)
            mount_source = (self.host_workspace or self.workspace) / relative
            mount_target = PurePosixPath(self.container_workspace) / str(spec.request_id)
            environment = self.handed_environment(logger)
            environment |= generator_environment(
                spec, str(mount_target / "app"), self.timeout_seconds
            )
            environment.setdefault("HOME", "/tmp")  # any uid can write there
            volumes = {str(mount_source): {"bind": str(mount_target), "mode": "rw"}}
            with self.egress_gateway(spec, logger) as gateway, self.docker_client() as client:
                if gateway is not None:
                    environment["APPGEN_GATEWAY_DIR"] = GATEWAY_DIR
                    volumes[str(gateway.socket_dir)] = {"bind": GATEWAY_DIR, "mode": "ro"}
                network = self._network_mode(gateway is not None, logger)
                container = self._create(client, spec, environment, volumes, network, mount_target)
                image: str | None = container.attrs.get("Image")
                logger.info("created container %s from %s", container.short_id, self.image)
                try:
                    with OutputFollower(
                        logger, self.timeout_seconds, lambda: _kill(container)
                    ) as output:
                        container.start()
                        output.follow(_lines(container.logs(stream=True, follow=True)))
                        exit_code = int(container.wait()["StatusCode"])
                finally:
                    with contextlib.suppress(docker.errors.NotFound):
                        container.remove(force=True)
            artifact = ArtifactRef(kind="volume", location=str(generation / "app"))
            if network != "none":
                reach = f"on the {network!r} network"
            else:
                reach = (
                    "whose only way out is the egress gateway" if gateway else "without a network"
                )
            confinement = f"in a Docker container of {self.image} {reach}"
            receipt = gateway.receipt if gateway is not None else None
            return output.result(spec, exit_code, artifact, confinement, receipt, image)

    def _network_mode(self, gateway: bool, logger: RunLogger) -> str:
        """``none`` unless ``network_mode`` says otherwise: the gateway's socket is the
        container's way out."""
        if self.network_mode in (None, "none"):
            return "none"
        if gateway:
            logger.warning(
                "the generator container is on the %r network (APPGEN_DOCKER_NETWORK_MODE): "
                "its agent can reach that network directly, around the egress gateway",
                self.network_mode,
            )
        return self.network_mode

    def reap(self) -> list[ReapedContainer]:
        """Remove generator containers whose orchestrator process is gone (on this
        host) or whose deadline has passed (on any host)."""
        reaped = []
        with self.docker_client() as client:
            for container in client.containers.list(
                all=True, filters={"label": f"{LABEL_MANAGED}=true"}
            ):
                reason = _orphan_reason(container.labels)
                if reason is None:
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
                reaped.append(
                    ReapedContainer(
                        container_id=container.short_id,
                        request_id=container.labels.get(LABEL_REQUEST),
                        reason=reason,
                    )
                )
        return reaped

    @contextlib.contextmanager
    def docker_client(self) -> Iterator[docker.DockerClient]:
        """A client of this block's engine; an unreachable engine is a clear error."""
        try:
            client = self.docker_host.get_client()
        except docker.errors.DockerException as exc:
            raise GeneratorFailed(
                f"cannot reach the Docker engine ({self.docker_host.base_url or 'DOCKER_HOST'}"
                f"): {exc}; is it running, and may this user use it?"
            ) from exc
        with client:
            yield client

    def _create(
        self,
        client: docker.DockerClient,
        spec: GenerationSpec,
        environment: dict[str, str],
        volumes: dict[str, dict[str, str]],
        network: str,
        mount_target: PurePosixPath,
    ) -> Container:
        labels = self.labels | {
            LABEL_MANAGED: "true",
            LABEL_REQUEST: str(spec.request_id),
            LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}",
            LABEL_DEADLINE: str(int(time.time() + self.timeout_seconds)),
        }
        try:
            return client.containers.create(
                self.image,
                command=["--fresh"],
                environment=environment,
                volumes=volumes,
                working_dir=str(mount_target / "app"),
                user=self.user or f"{os.getuid()}:{os.getgid()}",
                labels=labels,
                nano_cpus=int(self.cpus * 1e9) if self.cpus else None,
                mem_limit=self.memory,
                network_mode=network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=self.read_only_root,
                tmpfs=_TMPFS if self.read_only_root else None,
                pids_limit=self.pids_limit,
                name=f"appgen-{spec.request_id}-{os.urandom(3).hex()}",
            )
        except docker.errors.ImageNotFound as exc:
            raise GeneratorFailed(
                f"the generator image {self.image!r} is not on the Docker engine: build it "
                "with `appgen build-image` (or push it to a registry the engine can pull from)"
            ) from exc
        except docker.errors.APIError as exc:
            raise GeneratorFailed(
                f"Docker refused to create the generator container: {exc.explanation or exc}"
            ) from exc


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Docker log chunks (arbitrary byte boundaries) → text lines."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        yield from complete
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _kill(container: Container) -> None:
    with contextlib.suppress(docker.errors.APIError):
        container.kill()


def _orphan_reason(labels: dict[str, str]) -> str | None:
    """Why a generator container has no one left to remove it, or None."""
    deadline = labels.get(LABEL_DEADLINE, "")
    if deadline.isdigit() and int(deadline) + _DEADLINE_GRACE_SECONDS < time.time():
        return "past its deadline"
    host, _, pid = labels.get(LABEL_OWNER, "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return f"its orchestrator (pid {pid}) is gone"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
