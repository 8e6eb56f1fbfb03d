"""Build the generator image without a registry: ``debootstrap`` a minimal Debian,
``docker import`` it as a base, then ``docker build`` ``generator/Dockerfile.debootstrap``
on top.

Both images carry a content label (a hash of what went into them); a build whose
content already exists on the engine is skipped, so running this again is cheap.

    appgen build-image [--tag appgen-generator:local] [--force]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import docker
from pydantic import BaseModel

from core.errors import SetupError

if TYPE_CHECKING:
    from docker.models.images import Image

DEFAULT_TAG = "appgen-generator:local"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_REPOSITORY = "appgen-generator-base"
CONTENT_LABEL = "org.appgen.content"
BASE_RECIPE = {"suite": "bookworm", "variant": "minbase", "include": "python3,ca-certificates"}
# Left out of the base: documentation and caches nobody in the container reads.
_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "var/cache/apt",
    "var/lib/apt/lists",
)

GENERATOR_DIR = Path(__file__).resolve().parent.parent / "generator"
DOCKERFILE = GENERATOR_DIR / "Dockerfile.debootstrap"


class ImageBuild(BaseModel):
    tag: str
    content: str
    built: bool
    base_built: bool
    seconds: float


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def base_content() -> str:
    return _digest(json.dumps(BASE_RECIPE, sort_keys=True).encode())


def image_content() -> str:
    """Hash of the base recipe, the Dockerfile and the generator's sources."""
    sources = sorted(GENERATOR_DIR.glob("*.py"))
    return _digest(
        base_content().encode(),
        DOCKERFILE.read_bytes(),
        *(p.name.encode() + b"\0" + p.read_bytes() for p in sources),
    )


def build_generator_image(
    client: docker.DockerClient,
    *,
    tag: str = DEFAULT_TAG,
    mirror: str = DEFAULT_MIRROR,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> ImageBuild:
    """Make sure ``tag`` names an image of the current generator sources."""
    started = time.monotonic()
    content = image_content()
    existing = _labelled(client, content)
    if existing is not None and not force:
        existing.tag(tag)
        return ImageBuild(
            tag=tag,
            content=content,
            built=False,
            base_built=False,
            seconds=time.monotonic() - started,
        )
    base, base_built = _ensure_base(client, mirror, force, log)
    log(f"building {tag} on {base}")
    with tempfile.TemporaryDirectory(prefix="appgen-image-") as context:
        shutil.copytree(
            GENERATOR_DIR,
            Path(context) / "generator",
            ignore=shutil.ignore_patterns("__pycache__", "Dockerfile*"),
        )
        shutil.copy(DOCKERFILE, Path(context) / "Dockerfile")
        try:
            client.images.build(
                path=context,
                tag=tag,
                buildargs={"BASE": base},
                labels={CONTENT_LABEL: content},
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            raise SetupError(f"building {tag} failed: {exc.msg}") from exc
    return ImageBuild(
        tag=tag,
        content=content,
        built=True,
        base_built=base_built,
        seconds=time.monotonic() - started,
    )


def _labelled(client: docker.DockerClient, content: str) -> Image | None:
    images = client.images.list(filters={"label": f"{CONTENT_LABEL}={content}"})
    return images[0] if images else None


def _ensure_base(
    client: docker.DockerClient, mirror: str, force: bool, log: Callable[[str], None]
) -> tuple[str, bool]:
    content = base_content()
    tag = f"{BASE_REPOSITORY}:{content[:12]}"
    if _labelled(client, content) is not None and not force:
        return tag, False
    if shutil.which("debootstrap") is None:
        raise SetupError("debootstrap is not installed: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise SetupError("debootstrap needs root: run `appgen build-image` as root")
    with tempfile.TemporaryDirectory(prefix="appgen-rootfs-") as work:
        root, archive = Path(work) / "root", Path(work) / "rootfs.tar"
        log(f"debootstrap {BASE_RECIPE['suite']} ({BASE_RECIPE['variant']}) from {mirror}")
        completed = subprocess.run(
            [
                "debootstrap",
                f"--variant={BASE_RECIPE['variant']}",
                f"--include={BASE_RECIPE['include']}",
                BASE_RECIPE["suite"],
                str(root),
                mirror,
            ],
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            tail = "\n".join(
                completed.stdout.splitlines()[-5:] + completed.stderr.splitlines()[-5:]
            )
            raise SetupError(f"debootstrap failed (exit {completed.returncode}):\n{tail}")
        for relative in _TRIM:
            shutil.rmtree(root / relative, ignore_errors=True)
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        log(f"docker import as {tag}")
        client.api.import_image_from_file(
            str(archive),
            repository=BASE_REPOSITORY,
            tag=content[:12],
            changes=[f"LABEL {CONTENT_LABEL}={content}", 'CMD ["/bin/bash"]'],
        )
    return tag, True


if __name__ == "__main__":
    result = build_generator_image(docker.from_env())
    print(result.model_dump_json())
