"""Lake storage as a Dagster resource: a local folder or S3 through dagster-aws's S3Resource."""


from functools import cached_property

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from ..shard_io import Lake

DEFAULT_LAKE_ROOT = ".ultraedit/lake"


class LakeResource(dg.ConfigurableResource):
    """Where every per-shard asset writes its one Parquet file per shard.

    `root` is a local folder or `s3://bucket/prefix`; for S3, credentials and the endpoint (any S3-compatible
    store) come from the nested `s3` resource, i.e. from environment variables through `dg.EnvVar`.
    """

    root: str = DEFAULT_LAKE_ROOT
    s3: S3Resource = S3Resource()
    _lake: Lake | None = PrivateAttr(default=None)

    @property
    def lake(self) -> Lake:
        if self._lake is None:
            client = self.s3.get_client() if self.root.startswith("s3://") else None
            self._lake = Lake(self.root, s3_client=client)
        return self._lake
