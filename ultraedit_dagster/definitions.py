"""The one Definitions object: every stage's assets and checks, the jobs, sensors, schedule and resources."""

import os
import warnings

import dagster as dg

# `backfill_policy` on assets is marked beta in Dagster 1.13; we rely on it deliberately (GPU stages load models
# once per multi-shard run), so the warning is noise in every `dagster dev` log.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
# `shard_pipeline` deliberately mixes policies (GPU stages batch N shards per backfill run; cheap stages run one
# shard each); Dagster warns about that on every load.
warnings.filterwarnings("ignore", message=".*materializes assets with varying BackfillPolicies.*")

from ultraedit_dagster.analysis import assets as analysis_assets  # noqa: E402
from ultraedit_dagster.core import settings  # noqa: E402
from ultraedit_dagster.core.partitions import shards  # noqa: E402
from ultraedit_dagster.core.profiles import get_profile  # noqa: E402
from ultraedit_dagster.core.resources import LLMEndpoint, PipelineResource  # noqa: E402
from ultraedit_dagster.editing import assets as editing_assets  # noqa: E402
from ultraedit_dagster.editing import checks as editing_checks  # noqa: E402
from ultraedit_dagster.editing.resources import EditorResource  # noqa: E402
from ultraedit_dagster.lake import assets as lake_assets  # noqa: E402
from ultraedit_dagster.lake import dbt_assets  # noqa: E402
from ultraedit_dagster.lake.resources import WarehouseResource, lake_resource_from_env  # noqa: E402
from ultraedit_dagster.lake.store import SHARD_ASSETS  # noqa: E402
from ultraedit_dagster.ops.automation import (  # noqa: E402
    automation_sensor,
    build_inbox_sensor,
    build_rebuild_schedule,
    dead_run_sensor,
)
from ultraedit_dagster.regions import assets as region_assets  # noqa: E402
from ultraedit_dagster.regions import checks as region_checks  # noqa: E402
from ultraedit_dagster.regions.resources import (  # noqa: E402
    GrounderResource,
    ObjectSelectorResource,
    SegmenterResource,
    TaggerResource,
)
from ultraedit_dagster.release import assets as release_assets  # noqa: E402
from ultraedit_dagster.release import checks as release_checks  # noqa: E402
from ultraedit_dagster.scoring import assets as scoring_assets  # noqa: E402
from ultraedit_dagster.scoring import checks as scoring_checks  # noqa: E402
from ultraedit_dagster.scoring.resources import ScorerResource  # noqa: E402
from ultraedit_dagster.sources import assets as source_assets  # noqa: E402
from ultraedit_dagster.sources import checks as source_checks  # noqa: E402
from ultraedit_dagster.text import assets as text_assets  # noqa: E402
from ultraedit_dagster.text import checks as text_checks  # noqa: E402
from ultraedit_dagster.text.resources import CaptionerResource, InstructionWriterResource  # noqa: E402

# The stages in pipeline order; each contributes `assets` (assets.py) and `asset_checks` (checks.py).
STAGE_ASSETS = [source_assets, text_assets, region_assets, editing_assets, scoring_assets, release_assets]
STAGE_CHECKS = [source_checks, text_checks, region_checks, editing_checks, scoring_checks, release_checks]


def _env(name: str) -> dg.EnvVar | None:
    """Secrets and endpoints only ever come from the environment (dg.EnvVar keeps them out of logs and config)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


profile = get_profile()
# One OpenAI-compatible endpoint for every LLM / VLM role (captioner, instruction writer, object selector).
llm_endpoint = LLMEndpoint.from_profile(
    profile,
    api_key=_env("OPENAI_API_KEY"),
    base_url=os.environ.get("OPENAI_BASE_URL") or None,
    model=os.environ.get("ULTRAEDIT_LLM_MODEL") or None,
    cache_dir=settings.llm_cache_dir(),
)

stage_assets = [a for stage in STAGE_ASSETS for a in stage.assets]
# a multi-asset (edit_candidates + metric_scores, one step) appears once
by_name = {k.path[-1]: a for a in stage_assets for k in a.keys}
shard_assets = list({id(a): a for a in (by_name[name] for name in SHARD_ASSETS)}.values())
seed_assets = [a for a in stage_assets if a.partitions_def is None and a is not release_assets.release_card]
release_card_assets = [release_assets.release_card]
warehouse_views = lake_assets.build_warehouse_views(list(SHARD_ASSETS))

shard_pipeline_job = dg.define_asset_job(
    "shard_pipeline",
    selection=dg.AssetSelection.assets(*shard_assets),
    partitions_def=shards,
    description="Every per-shard asset, source_images to filtered_release, for one shard (all steps in one process).",
    executor_def=dg.in_process_executor,
)
seed_pool_job = dg.define_asset_job(
    "seed_pool",
    selection=dg.AssetSelection.assets(*seed_assets),
    description="The validated human seed pool (unpartitioned) that the instruction writer samples in-context.",
)
release_job = dg.define_asset_job(
    "release",
    selection=dg.AssetSelection.assets(
        warehouse_views, *dbt_assets.assets, *analysis_assets.assets, *release_card_assets
    ),
    description="The unpartitioned assets that summarise all shards: warehouse views, dbt models, threshold plots, "
    "release card.",
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
        profile, endpoint=llm_endpoint, **settings.model_overrides("captioner")
    ),
    "instruction_writer": InstructionWriterResource.from_profile(profile, endpoint=llm_endpoint),
    "tagger": TaggerResource.from_profile(profile, **settings.model_overrides("tagger")),
    "object_selector": ObjectSelectorResource.from_profile(profile, endpoint=llm_endpoint),
    "grounder": GrounderResource.from_profile(profile, **settings.model_overrides("grounder")),
    "segmenter": SegmenterResource.from_profile(profile, **settings.model_overrides("segmenter")),
    "editor": EditorResource.from_profile(profile, **settings.model_overrides("editor")),
    "scorer": ScorerResource.from_profile(profile, **settings.model_overrides("scorer")),
    "dbt": dbt_assets.dbt_resource(),
}

inbox_sensor = build_inbox_sensor(shard_pipeline_job)
rebuild_schedule = build_rebuild_schedule(shard_pipeline_job, [key for a in shard_assets for key in a.keys])

# Every run executes its steps in one process (the in-process executor), whoever launches it: the daemon (sensors,
# backfills, the schedule), the UI or the CLI. The default multiprocess executor starts one process per step, each
# importing dagster, torch, diffusers and dbt again (60-80 s per step on a busy 2-core machine): a one-shard cascade
# launched by the daemon took ~10x as long as `ultraedit materialize`. In one process the imports and the model loads
# are paid once per run. Parallelism comes from running several runs at once (max_concurrent_runs, the `gpu` pool).
defs = dg.Definitions(
    assets=[
        *seed_assets,
        *shard_assets,
        warehouse_views,
        *dbt_assets.assets,
        *analysis_assets.assets,
        *release_card_assets,
    ],
    asset_checks=[c for stage in STAGE_CHECKS for c in stage.asset_checks],
    jobs=[seed_pool_job, shard_pipeline_job, release_job],
    sensors=[inbox_sensor, automation_sensor, dead_run_sensor],
    schedules=[rebuild_schedule],
    resources=resources,
    executor=dg.in_process_executor,
)
