"""The one Definitions object: assets, checks, jobs and resources for the active profile."""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from . import settings
from .assets import sources
from .assets.warehouse import build_warehouse_views
from .checks import sources as source_checks
from .partitions import shards
from .profiles import get_profile
from .resources.pipeline import PipelineResource
from .resources.storage import LakeResource
from .resources.warehouse import WarehouseResource


def _env(name: str) -> dg.EnvVar | None:
    """Secrets and endpoints only ever come from the environment (dg.EnvVar keeps them out of logs and config)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


profile = get_profile()

shard_assets = [*sources.assets]
lake_asset_keys = [a.key.path[-1] for a in shard_assets]
warehouse_views = build_warehouse_views(lake_asset_keys)

shard_pipeline_job = dg.define_asset_job(
    "shard_pipeline",
    selection=dg.AssetSelection.assets(*shard_assets),
    partitions_def=shards,
    description="Every per-shard asset, source_images to filtered_release, for one shard.",
)
release_job = dg.define_asset_job(
    "release",
    selection=dg.AssetSelection.assets(warehouse_views),
    description="The unpartitioned assets that summarise all shards: warehouse views, dbt models, release card.",
)

resources = {
    "lake": LakeResource(
        root=settings.lake_root(),
        s3=S3Resource(
            endpoint_url=_env("AWS_ENDPOINT_URL"),
            region_name=os.environ.get("AWS_REGION") or None,
            aws_access_key_id=_env("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
        ),
    ),
    "pipeline": PipelineResource(
        profile_name=profile.name,
        global_seed=settings.global_seed(),
        allowed_uri_prefixes=settings.allowed_uri_prefixes(),
    ),
    "warehouse": WarehouseResource(path=settings.warehouse_path()),
}

defs = dg.Definitions(
    assets=[*shard_assets, warehouse_views],
    asset_checks=[*source_checks.asset_checks],
    jobs=[shard_pipeline_job, release_job],
    resources=resources,
)
