"""Analysis assets: `threshold_plots`, the figures an analyst chooses thresholds with (docs/method.md §5). The
plotting is in analysis/plots.py; this is the Dagster face."""

import dagster as dg

from ultraedit_dagster.analysis import plots
from ultraedit_dagster.core.conditions import FOLLOWS_WAREHOUSE
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.lake.resources import LakeResource

PLOTS_DIR = "threshold_plots"  # in the lake: <lake>/threshold_plots/<mode>_<kind>.png, replaced on each run


# Like the dbt models: follow the warehouse whenever threshold_sweep is rebuilt, even while some shards are missing.
@dg.asset(
    deps=[dg.AssetKey("threshold_sweep")],
    group_name="warehouse",
    kinds={"python", "duckdb"},
    retry_policy=TRANSIENT_RETRY_POLICY,
    automation_condition=FOLLOWS_WAREHOUSE,
)
@retry_transient_only
def threshold_plots(lake: LakeResource, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Per mode, histograms of every metric over all scored candidates with the active thresholds marked, and
    trade-off curves (samples kept as one threshold moves, the others at the profile's values, under the release's
    selection rule: the curve at the profile's threshold is what the release kept). Full-size PNGs go to the lake;
    the metadata shows small copies inline (bounded: analysis/plots.py MAX_EMBEDDED_BYTES) (docs/method.md §5).
    Reads metric_scores' Parquet through an in-memory DuckDB, never the warehouse file (one writer at a time)."""
    the_lake = lake.lake
    profile = pipeline.profile
    if not the_lake.list_shards("metric_scores"):
        raise dg.Failure("threshold_plots: metric_scores has no shard yet; materialize the shards first")
    result = plots.lake_threshold_plots(the_lake, lake.s3_settings(), profile)
    files = {name: the_lake.write_bytes(f"{PLOTS_DIR}/{name}", png) for name, png in result.pngs.items()}
    return dg.MaterializeResult(
        metadata={
            "profile": profile.name,
            "scored_candidates": dg.MetadataValue.json(result.scored),
            "kept_at_profile_thresholds": dg.MetadataValue.json(result.kept_at_profile),
            "plots": dg.MetadataValue.md(plots.embedded_markdown(result.thumbnails)),
            "files": dg.MetadataValue.json(files),
        }
    )


assets = [threshold_plots]
