"""The S3 artifact store: AWS mode's handoff. A Fargate generator shares no volume
with the orchestrator, so it uploads a tarball of the app with a presigned PUT URL
(it holds no AWS credentials) to ``{prefix}/{uuid}/{request_id}.tar.gz``; fetching
streams the object straight into the strict extractor. A revision's base goes the
other way: uploaded here, downloaded by the task with a presigned GET URL."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.artifact_stores import ArtifactStore
from blocks.tarballs import Limits, extract_tarball, write_tarball
from core.errors import ArtifactError, SetupError
from core.models import GeneratorRun, SourceTree
from core.options import S3Options
from core.processes import temp_prefix

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "application/gzip"  # what the generator sends; the URL is signed for it
LIFECYCLE_RULE_ID = "appgen-expire-generations"


class S3ArtifactStore(ArtifactStore, S3Options):
    """Generator tarballs in an S3 bucket (or any S3-compatible endpoint, through the
    credentials' client parameters), kept for ``retention_days``.

    Example:
        ```python
        from blocks.s3_artifact_store import S3ArtifactStore

        store = S3ArtifactStore.load("BLOCK_NAME")
        store.ensure_bucket()
        ```
    """

    _block_type_name = "Appgen S3 Artifact Store"
    _block_type_slug = "appgen-s3-artifact-store"
    _description = "Hands generated apps from ECS generator tasks to the orchestrator via S3."

    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials,
        description="AWS credentials; set aws_client_parameters.endpoint_url for an "
        "S3-compatible server.",
    )

    def new_key(self, request_id: int) -> str:
        return f"{self.prefix}/{uuid.uuid4()}/{request_id}.tar.gz"

    def upload_url(self, key: str, expires_in: int) -> str:
        """A presigned PUT URL for exactly this key and the tarball content type."""
        url: str = self._client().generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": CONTENT_TYPE},
            ExpiresIn=expires_in,
        )
        return url

    def put_base(self, request_id: int, base: Path, expires_in: int) -> str:
        """Upload a revision's base as a tarball (its regular files and directories)
        and return a presigned GET URL of it."""
        key = f"{self.prefix}/{uuid.uuid4()}/{request_id}-base.tar.gz"
        with tempfile.TemporaryDirectory(prefix=temp_prefix("base")) as scratch:
            archive = Path(scratch) / "base.tar.gz"
            write_tarball(base, archive)
            try:
                self._client().upload_file(
                    str(archive), self.bucket, key, ExtraArgs={"ContentType": CONTENT_TYPE}
                )
            except (ClientError, BotoCoreError) as exc:
                raise ArtifactError(
                    f"cannot upload the base of request {request_id} to {self.location(key)}: {exc}"
                ) from exc
        url: str = self._client().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )
        return url

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def fetch(self, run: GeneratorRun) -> SourceTree:
        if run.artifact.kind != "s3":
            raise ArtifactError(
                f"request {run.request_id}: a {run.artifact.kind!r} artifact cannot be read "
                "from S3; configure the matching artifact store"
            )
        bucket, _, key = run.artifact.location.removeprefix("s3://").partition("/")
        try:
            body = self._client().get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise ArtifactError(
                f"request {run.request_id}: the generated app is not in "
                f"{run.artifact.location} ({code or exc}); it may have expired after "
                f"{self.retention_days} days: generate it again with --regenerate"
            ) from exc
        except BotoCoreError as exc:
            raise ArtifactError(f"cannot reach S3 for {run.artifact.location}: {exc}") from exc
        destination = Path(tempfile.mkdtemp(prefix=temp_prefix("fetch")))
        limits = Limits(self.max_members, self.max_file_bytes, self.max_total_bytes)
        try:
            with contextlib.closing(body):
                # botocore's StreamingBody reads like a binary file, which tarfile needs.
                extract_tarball(body, destination, limits)  # type: ignore[arg-type]
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
        return SourceTree(path=destination, temporary=True)

    def ensure_bucket(self) -> None:
        """Create the bucket and its expiry rule if missing; safe to repeat."""
        client = self._client()
        try:
            try:
                client.head_bucket(Bucket=self.bucket)
            except ClientError:
                client.create_bucket(Bucket=self.bucket)
            client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": LIFECYCLE_RULE_ID,
                            "Filter": {"Prefix": f"{self.prefix}/"},
                            "Status": "Enabled",
                            "Expiration": {"Days": self.retention_days},
                        }
                    ]
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise SetupError(f"cannot set up the bucket {self.bucket!r}: {exc}") from exc

    def _client(self) -> S3Client:
        params = self.credentials.aws_client_parameters.get_params_override()
        # Presigned URLs must be SigV4 and path-style to work with any S3 endpoint.
        signing = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        params["config"] = params["config"].merge(signing) if "config" in params else signing
        return self.credentials.get_boto3_session().client("s3", **params)
