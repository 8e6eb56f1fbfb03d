"""Offline stand-ins for the base images the rendered Dockerfiles name (no registry
here): ``debootstrap`` minbases ``docker import``-ed once and tagged with each ``FROM``
name the smoke-test apps render. Debian bookworm's Node 18, Python 3.11 and Caddy
are ``node:18-slim``, ``python:3.11-slim`` and ``caddy:2``; trixie's Python 3.13 is
``python:3.13-slim``. They are Debian's builds, not the official images: the same
versions and ``python``/``node`` on the PATH, but Debian's file layout.

Each image carries a content label (a hash of its recipe); when it exists already its
build is skipped, so CI pays for it once per machine.

    python -m tests.deploy_images          # build (or find) and tag
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker

from deployments.generator_image import DEFAULT_MIRROR

REPOSITORY = "appgen-deploy-base"
CONTENT_LABEL = "org.appgen.deploy-base"
PYTHON = "ca-certificates,python3,python3-venv,python-is-python3"
# suite → (recipe, the FROM names the renderer writes that it stands in for)
BASES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "bookworm": (
        {
            "suite": "bookworm",
            "variant": "minbase",
            "include": f"{PYTHON},nodejs,caddy",
            # debootstrap cannot order npm's many node-* packages; apt-get in the root can.
            "then": "npm",
        },
        ("node:18-slim", "python:3.11-slim", "caddy:2"),
    ),
    "trixie": (
        {"suite": "trixie", "variant": "minbase", "include": PYTHON, "then": ""},
        ("python:3.13-slim",),
    ),
}
TAGS = tuple(tag for _, tags in BASES.values() for tag in tags)
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt", "var/lib/apt/lists")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def content(recipe: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def ensure_deploy_base(client: docker.DockerClient, mirror: str = DEFAULT_MIRROR) -> list[str]:
    """Make sure every name in ``TAGS`` points at its stand-in base; return the tags."""
    for recipe, tags in BASES.values():
        digest = content(recipe)
        # By its own tag: images built FROM the base inherit its label.
        base = f"{REPOSITORY}:{digest[:12]}"
        try:
            image = client.images.get(base)
        except docker.errors.ImageNotFound:
            _build(client, recipe, digest, mirror)
            image = client.images.get(base)
        for tag in tags:
            repository, _, version = tag.partition(":")
            image.tag(repository, version)
    return list(TAGS)


def _build(client: docker.DockerClient, recipe: dict[str, str], digest: str, mirror: str) -> None:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise RuntimeError("the deploy base images need debootstrap, run as root")
    with tempfile.TemporaryDirectory(prefix="appgen-deploy-rootfs-") as work:
        root = Path(work) / "root"
        subprocess.run(
            [
                "debootstrap",
                f"--variant={recipe['variant']}",
                f"--include={recipe['include']}",
                recipe["suite"],
                str(root),
                mirror,
            ],
            check=True,
            capture_output=True,
        )
        if recipe["then"]:
            _apt_install(root, recipe["then"])
        import_root(client, root, digest)


def _apt_install(root: Path, packages: str) -> None:
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", packages],
            ["apt-get", "clean"],
        ):
            subprocess.run(
                ["chroot", str(root), *command],
                check=True,
                capture_output=True,
                env={
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "DEBIAN_FRONTEND": "noninteractive",
                },
            )
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False)


def import_root(client: docker.DockerClient, root: Path, digest: str) -> None:
    """Trim a prepared root file system and import it as the labelled base image."""
    for relative in _TRIM:
        shutil.rmtree(root / relative, ignore_errors=True)
    if HOST_CA_BUNDLE.is_file():  # an intercepting proxy's CA, if the host trusts one
        shutil.copy(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="appgen-deploy-tar-") as work:
        archive = Path(work) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        client.api.import_image_from_file(
            str(archive),
            repository=REPOSITORY,
            tag=digest[:12],
            changes=[f"LABEL {CONTENT_LABEL}={digest}", 'CMD ["/bin/bash"]'],
        )


if __name__ == "__main__":
    print(ensure_deploy_base(docker.from_env()))
