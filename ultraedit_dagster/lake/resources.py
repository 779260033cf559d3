"""The lake and the warehouse as Dagster resources."""

import os
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from ultraedit_dagster.core import settings
from ultraedit_dagster.core.run_tags import tag_run_with_this_process
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.lake.warehouse import DEFAULT_WAREHOUSE_PATH, LOCK_WAIT_S

# Lake storage as a Dagster resource: a local folder or S3 through dagster-aws's S3Resource.

DEFAULT_LAKE_ROOT = ".ultraedit/lake"
PREVIEW_DIR = "previews"  # <lake>/previews/<asset>/shard=<key>.png: one small preview file per shard and asset


class S3Connection(dg.ConfigurableResource):
    """The S3 endpoint and credentials of the lake: the connection fields of dagster-aws's `S3Resource`, which makes
    the client (`client()`). dagster_aws is imported only then: importing it imports every dagster-aws component and
    boto3 (about 5 s), which the definitions must not pay while a code server starts."""

    endpoint_url: Optional[str] = None
    region_name: Optional[str] = None
    aws_access_key_id: Optional[str] = None
    aws_secret_access_key: Optional[str] = None
    aws_session_token: Optional[str] = None
    profile_name: Optional[str] = None
    use_ssl: bool = True
    verify: Optional[bool] = None
    max_attempts: int = 5

    def s3_resource(self):
        """The equivalent dagster-aws `S3Resource`."""
        from dagster_aws.s3 import S3Resource

        return S3Resource(**{k: v for k, v in self._connection_fields().items() if v is not None})

    def _connection_fields(self) -> dict:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def client(self):
        """A boto3 S3 client for this endpoint."""
        return self.s3_resource().get_client()


class LakeResource(dg.ConfigurableResource):
    """Where every per-shard asset writes its one Parquet file per shard.

    `root` is a local folder or `s3://bucket/prefix`; for S3, credentials and the endpoint (any S3-compatible
    store) come from the nested `s3` resource, i.e. from environment variables through `dg.EnvVar`.
    """

    root: str = DEFAULT_LAKE_ROOT
    s3: Optional[S3Connection] = None
    _lake: Optional[Lake] = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # a daemon-launched run records its machine and worker process, so a killed worker's run can be reaped
        tag_run_with_this_process(context.instance, context.dagster_run)

    def s3_client(self):
        """A boto3 S3 client for the configured endpoint (also used to fetch s3:// source images)."""
        return (self.s3 or S3Connection()).client()

    def s3_settings(self) -> dict:
        s3 = self.s3 or S3Connection()
        return {
            "endpoint_url": s3.endpoint_url,
            "aws_access_key_id": s3.aws_access_key_id,
            "aws_secret_access_key": s3.aws_secret_access_key,
            "region_name": s3.region_name,
        }

    def write_preview(self, asset: str, shard: str, image) -> str:
        """Write a shard's preview image (PNG, at the size given) to `previews/<asset>/shard=<key>.png` in the lake,
        one small file per shard that a re-run replaces; returns its URI (local path or s3://)."""
        from ultraedit_dagster.core.imaging import encode_png
        from ultraedit_dagster.core.partitions import validate_shard_key
        from ultraedit_dagster.lake.store import validate_asset_name

        relpath = f"{PREVIEW_DIR}/{validate_asset_name(asset)}/shard={validate_shard_key(shard)}.png"
        return self.lake.write_bytes(relpath, encode_png(image))

    def preview_metadata(self, asset: str, shard: str, image, alt: str = "preview") -> dict:
        """Metadata for a shard's preview: the full preview as a lake file (`preview_file`) and a bounded thumbnail
        embedded in markdown (`preview`, at most ~54 KB of text: core.imaging.bounded_jpeg)."""
        import dagster as dg

        from ultraedit_dagster.core.imaging import markdown_image

        uri = self.write_preview(asset, shard, image)
        link = dg.MetadataValue.url(uri) if uri.startswith("s3://") else dg.MetadataValue.path(uri)
        return {"preview": dg.MetadataValue.md(markdown_image(image, alt)), "preview_file": link}

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            client = self.s3_client() if self.root.startswith("s3://") else None
            self._lake = Lake(self.root, s3_client=client)
        return self._lake


def lake_resource_from_env(for_definitions: bool = True) -> LakeResource:
    """The lake configured by ULTRAEDIT_LAKE / ULTRAEDIT_HOME and the AWS_* variables.

    For the definitions, credentials stay `dg.EnvVar`s (resolved inside runs, never written into run config or
    logs); outside a run (the CLI) they are read directly, because an EnvVar field cannot be read there.
    """

    def env(name: str):
        if not os.environ.get(name):
            return None
        return dg.EnvVar(name) if for_definitions else os.environ[name]

    s3 = S3Connection(
        endpoint_url=env("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_REGION") or None,
        aws_access_key_id=env("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env("AWS_SECRET_ACCESS_KEY"),
    )
    return LakeResource(root=settings.lake_root(), s3=s3)


# The analysts' DuckDB file as a resource.


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file holding a view per lake asset and the dbt_quality models. One writer at a time; a refresh
    waits `lock_wait_s` for a process holding the file open, then fails with a retryable WarehouseLocked."""

    path: str = DEFAULT_WAREHOUSE_PATH
    lock_wait_s: float = LOCK_WAIT_S
