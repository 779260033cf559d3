"""The one Definitions object: assets, checks, jobs and resources for the active profile."""

from __future__ import annotations

import os
import warnings

import dagster as dg

# `backfill_policy` on assets is marked beta in Dagster 1.13; we rely on it deliberately (GPU stages load models
# once per multi-shard run), so the warning is noise in every `dagster dev` log.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
# `shard_pipeline` deliberately mixes policies (GPU stages batch N shards per backfill run; cheap stages run one
# shard each); Dagster warns about that on every load.
warnings.filterwarnings("ignore", message=".*materializes assets with varying BackfillPolicies.*")

from . import settings  # noqa: E402
from .assets import dbt as dbt_models  # noqa: E402
from .assets import candidates, quality, region, sources, text
from .assets.warehouse import build_warehouse_views
from .checks import candidates as candidate_checks
from .checks import quality as quality_checks
from .checks import region as region_checks
from .checks import sources as source_checks
from .checks import text as text_checks
from .automation import automation_sensor, build_inbox_sensor, build_rebuild_schedule
from .partitions import shards
from .profiles import get_profile
from .resources.captioner import CaptionerResource
from .resources.editor import EditorResource
from .resources.grounder import GrounderResource
from .resources.instruction_writer import InstructionWriterResource
from .resources.object_selector import ObjectSelectorResource
from .resources.pipeline import PipelineResource
from .resources.scorer import ScorerResource
from .resources.segmenter import SegmenterResource
from .resources.storage import lake_resource_from_env
from .resources.tagger import TaggerResource
from .resources.warehouse import WarehouseResource


def _env(name: str) -> dg.EnvVar | None:
    """Secrets and endpoints only ever come from the environment (dg.EnvVar keeps them out of logs and config)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


profile = get_profile()

seed_assets = [a for a in text.assets if a.partitions_def is None]
shard_assets = [
    *sources.assets,
    *[a for a in text.assets if a.partitions_def is not None],
    *region.assets,
    *candidates.assets,
    *[a for a in quality.assets if a.partitions_def is not None],
]
release_assets = [a for a in quality.assets if a.partitions_def is None]
lake_asset_keys = [a.key.path[-1] for a in shard_assets]
warehouse_views = build_warehouse_views(lake_asset_keys)

shard_pipeline_job = dg.define_asset_job(
    "shard_pipeline",
    selection=dg.AssetSelection.assets(*shard_assets),
    partitions_def=shards,
    description="Every per-shard asset, source_images to filtered_release, for one shard.",
)
seed_pool_job = dg.define_asset_job(
    "seed_pool",
    selection=dg.AssetSelection.assets(*seed_assets),
    description="The validated human seed pool (unpartitioned) that the instruction writer samples in-context.",
)
release_job = dg.define_asset_job(
    "release",
    selection=dg.AssetSelection.assets(warehouse_views, *dbt_models.assets, *release_assets),
    description="The unpartitioned assets that summarise all shards: warehouse views, dbt models, release card.",
)

resources = {
    "lake": lake_resource_from_env(),
    "pipeline": PipelineResource(
        profile_name=profile.name,
        global_seed=settings.global_seed(),
        allowed_uri_prefixes=settings.allowed_uri_prefixes(),
    ),
    "warehouse": WarehouseResource(path=settings.warehouse_path()),
    "captioner": CaptionerResource.from_profile(
        profile, cache_dir=settings.llm_cache_dir(), **settings.model_overrides("captioner")
    ),
    "instruction_writer": InstructionWriterResource.from_profile(
        profile, cache_dir=settings.llm_cache_dir(), **settings.model_overrides("instruction_writer")
    ),
    "tagger": TaggerResource.from_profile(profile, **settings.model_overrides("tagger")),
    "object_selector": ObjectSelectorResource.from_profile(
        profile,
        api_key=_env("OPENAI_API_KEY"),
        base_url=os.environ.get("OPENAI_BASE_URL") or None,
        cache_dir=settings.llm_cache_dir(),
    ),
    "grounder": GrounderResource.from_profile(profile, **settings.model_overrides("grounder")),
    "segmenter": SegmenterResource.from_profile(profile, **settings.model_overrides("segmenter")),
    "editor": EditorResource.from_profile(profile, **settings.model_overrides("editor")),
    "scorer": ScorerResource.from_profile(profile, **settings.model_overrides("scorer")),
    "dbt": dbt_models.dbt_resource(),
}

inbox_sensor = build_inbox_sensor(shard_pipeline_job)
rebuild_schedule = build_rebuild_schedule(shard_pipeline_job, [key for a in shard_assets for key in a.keys])

defs = dg.Definitions(
    assets=[*seed_assets, *shard_assets, warehouse_views, *dbt_models.assets, *release_assets],
    asset_checks=[
        *source_checks.asset_checks,
        *text_checks.asset_checks,
        *region_checks.asset_checks,
        *candidate_checks.asset_checks,
        *quality_checks.asset_checks,
    ],
    jobs=[seed_pool_job, shard_pipeline_job, release_job],
    sensors=[inbox_sensor, automation_sensor],
    schedules=[rebuild_schedule],
    resources=resources,
)
