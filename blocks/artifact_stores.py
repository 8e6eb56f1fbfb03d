"""Artifact stores: how the orchestrator reads what a generator left behind."""

from __future__ import annotations

import abc
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from core.errors import ArtifactError
from core.models import GeneratorRun, SourceTree


class ArtifactStore(Block, abc.ABC):
    """Turns a finished generation into a readable directory."""

    @abc.abstractmethod
    def fetch(self, run: GeneratorRun) -> SourceTree:
        """Return the app's files as a directory; raise ``ArtifactError`` if unusable."""


class VolumeArtifactStore(ArtifactStore):
    """The generator's output is already on a volume the orchestrator shares
    (``{workspace}/{request_id}/app``); fetching only checks it and hands out the
    path. The files are read in place and never modified.

    Example:
        ```python
        from blocks.artifact_stores import VolumeArtifactStore

        store = VolumeArtifactStore.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Appgen Volume Artifact Store"
    _block_type_slug = "appgen-volume-artifact-store"
    _description = "Reads generated apps from a workspace directory shared with the generator."

    workspace: Path = Field(
        description="The shared workspace, as seen by the orchestrator.",
        examples=["/home/me/.appgen/workspace"],
    )

    def fetch(self, run: GeneratorRun) -> SourceTree:
        if run.artifact.kind != "volume":
            raise ArtifactError(
                f"request {run.request_id}: a {run.artifact.kind!r} artifact cannot be read "
                "from a volume; configure the matching artifact store"
            )
        app_dir = Path(run.artifact.location)
        workspace = self.workspace.resolve()
        if app_dir.is_symlink() or not app_dir.resolve().is_relative_to(workspace):
            raise ArtifactError(
                f"request {run.request_id}: {app_dir} is not a directory inside the workspace "
                f"{workspace}; refusing to read it"
            )
        if not app_dir.is_dir():
            raise ArtifactError(
                f"request {run.request_id}: the generated app is gone from {app_dir} (was the "
                "workspace cleaned?); generate it again with `appgen publish --regenerate`"
            )
        return SourceTree(path=app_dir, temporary=False)
