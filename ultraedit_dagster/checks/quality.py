"""Checks on `metric_scores` and `filtered_release`: SQL in an in-memory DuckDB over the shard's Parquet (values
are bound as parameters), plus a great-expectations 1.x suite over the metric distributions."""


import io
from typing import Any

import pyarrow as pa
from PIL import Image

import dagster as dg

from ..assets.quality import filtered_release, metric_scores
from ..metrics import METRIC_COLUMNS, METRIC_RANGES, THRESHOLD_METRICS
from ..release import IMAGE_COLUMNS
from ..resources.pipeline import PipelineResource
from ..resources.storage import LakeResource
from .common import shard_connection


# -- filtered_release -------------------------------------------------------------------------------------------

RELEASE_SCALARS = ["uid", "idx", "split", "mode", "edit_object", "status", *THRESHOLD_METRICS]


def filtered_release_meets_thresholds_result(lake: LakeResource, shard: str, pipeline: PipelineResource) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, RELEASE_SCALARS)
    profile = pipeline.profile
    violations: dict[str, int] = {}
    examples: list[str] = []
    for split, thr in (("free_form", profile.free_form_thresholds), ("region", profile.region_thresholds)):
        for metric in THRESHOLD_METRICS:
            # column names come from our own constant list, never from data; the threshold value is bound
            sql = f"SELECT uid FROM t WHERE split = ? AND NOT coalesce({metric} >= ?, false)"
            bad = [r[0] for r in con.execute(sql, [split, float(getattr(thr, metric))]).fetchall()]
            if bad:
                violations[f"{split}.{metric}"] = len(bad)
                examples += bad[:3]
    unknown = con.execute("SELECT count(*) FROM t WHERE split NOT IN ('free_form', 'region') OR split IS NULL "
                          "OR split <> mode").fetchone()[0]
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    return dg.AssetCheckResult(
        passed=not violations and unknown == 0, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "violations": str(violations), "bad_split": unknown, "examples": ", ".join(examples[:10])},
    )


@dg.asset_check(asset=filtered_release, blocking=True,
                description="Every release row satisfies the thresholds of its split (free-form / region).")
def filtered_release_meets_thresholds(context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource) -> dg.AssetCheckResult:
    return filtered_release_meets_thresholds_result(lake, context.partition_key, pipeline)



def filtered_release_unique_ids_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, ["uid", "idx"])
    rows, dup_uid, dup_idx, nulls = con.execute(
        "SELECT count(*), count(*) - count(DISTINCT uid), count(*) - count(DISTINCT idx), "
        "count(*) FILTER (WHERE uid IS NULL OR idx IS NULL OR idx < 0) FROM t").fetchone()
    return dg.AssetCheckResult(
        passed=dup_uid == 0 and dup_idx == 0 and nulls == 0, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "duplicate_uid": dup_uid, "duplicate_idx": dup_idx, "null_or_negative": nulls},
    )


@dg.asset_check(asset=filtered_release, blocking=True, description="uid and idx are unique and not null in the shard.")
def filtered_release_unique_ids(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return filtered_release_unique_ids_result(lake, context.partition_key)



def filtered_release_region_masks_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, ["uid", "split", "edit_object", "mask_image"])
    no_mask, no_object, ff_mask = con.execute(
        "SELECT count(*) FILTER (WHERE split = 'region' AND (mask_image IS NULL OR mask_image.bytes IS NULL "
        "OR octet_length(mask_image.bytes) = 0)), "
        "count(*) FILTER (WHERE split = 'region' AND edit_object IS NULL), "
        "count(*) FILTER (WHERE split = 'free_form' AND (mask_image IS NOT NULL OR edit_object IS NOT NULL)) FROM t"
    ).fetchone()
    return dg.AssetCheckResult(
        passed=no_mask == 0 and no_object == 0 and ff_mask == 0, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"region_without_mask": no_mask, "region_without_edit_object": no_object,
                  "free_form_with_mask_or_object": ff_mask},
    )


@dg.asset_check(asset=filtered_release, blocking=True,
                description="Region rows have a mask and an edit_object; free-form rows have neither.")
def filtered_release_region_masks(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return filtered_release_region_masks_result(lake, context.partition_key)



def undecodable_images(batches: Any) -> tuple[int, list[str]]:
    """(images checked, '<uid>.<column>: reason' for each that does not decode)."""
    checked, bad = 0, []
    for batch in batches:
        for row in batch.to_pylist():
            for col in IMAGE_COLUMNS:
                cell = row.get(col)
                if cell is None:
                    if col != "mask_image":
                        bad.append(f"{row['uid']}.{col}: missing")
                    continue
                checked += 1
                try:
                    with Image.open(io.BytesIO(cell["bytes"] or b"")) as im:
                        im.load()
                except Exception as exc:
                    bad.append(f"{row['uid']}.{col}: {type(exc).__name__}")
    return checked, bad


def filtered_release_images_decode_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    batches = lake.lake.iter_batches("filtered_release", shard, batch_size=64,
                                     columns=["uid", *IMAGE_COLUMNS])
    checked, bad = undecodable_images(batches)
    return dg.AssetCheckResult(passed=not bad, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"images_checked": checked, "bad": len(bad), "examples": "; ".join(bad[:10])})


@dg.asset_check(asset=filtered_release, blocking=True, description="Every image cell decodes (PIL, fully loaded).")
def filtered_release_images_decode(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return filtered_release_images_decode_result(lake, context.partition_key)



# -- metric_scores ----------------------------------------------------------------------------------------------

SCORE_SCALARS = ["candidate_uid", "status", "pass_all", *METRIC_COLUMNS]


def metric_scores_valid_ranges_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "metric_scores", shard, SCORE_SCALARS)
    bad: dict[str, int] = {}
    for metric in METRIC_COLUMNS:
        lo, hi = METRIC_RANGES[metric]
        eps = 1e-6
        n = con.execute(
            f"SELECT count(*) FROM t WHERE status = 'ok' AND ({metric} IS NULL OR isnan({metric}) "
            f"OR NOT (isfinite({metric}) AND {metric} BETWEEN ? AND ?))", [lo - eps, hi + eps]).fetchone()[0]
        if n:
            bad[metric] = n
    rows, ok, bad_status = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), "
        "count(*) FILTER (WHERE status NOT IN ('ok', 'failed') OR status IS NULL) FROM t").fetchone()
    return dg.AssetCheckResult(
        passed=not bad and bad_status == 0, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "ok_rows": ok, "out_of_range_or_nan": str(bad), "bad_status": bad_status},
    )


@dg.asset_check(asset=metric_scores, blocking=True,
                description="ok rows have every metric, finite and within its valid range (cosines/SSIM in [-1, 1], L1 in [0, 1]).")
def metric_scores_valid_ranges(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return metric_scores_valid_ranges_result(lake, context.partition_key)



def metric_scores_pass_rate_result(lake: LakeResource, shard: str, pipeline: PipelineResource) -> dg.AssetCheckResult:
    con = shard_connection(lake, "metric_scores", shard, ["mode", "status", "pass_all"])
    minimum = pipeline.profile.selection.min_pass_rate
    ok, passed = con.execute("SELECT count(*), count(*) FILTER (WHERE pass_all) FROM t WHERE status = 'ok'").fetchone()
    by_mode = {m: f"{p}/{n}" for m, n, p in con.execute(
        "SELECT mode, count(*), count(*) FILTER (WHERE pass_all) FROM t WHERE status = 'ok' GROUP BY 1 ORDER BY 1").fetchall()}
    rate = passed / ok if ok else 0.0
    return dg.AssetCheckResult(
        passed=rate >= minimum, severity=dg.AssetCheckSeverity.WARN,
        metadata={"scored": ok, "passed": passed, "pass_rate": rate, "min_pass_rate": minimum, "by_mode": str(by_mode)},
    )


@dg.asset_check(asset=metric_scores, blocking=False,
                description="The shard's pass rate (pass_all among scored candidates) reaches profile.selection.min_pass_rate.")
def metric_scores_pass_rate(context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource) -> dg.AssetCheckResult:
    return metric_scores_pass_rate_result(lake, context.partition_key, pipeline)



def metric_expectations() -> list[Any]:
    """The distribution suite (great-expectations 1.x) over metric_scores."""
    import great_expectations as gx

    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeInSet(column="status", value_set=["ok"], mostly=0.75),
        E.ExpectColumnValuesToBeBetween(column="clip_sim_image", min_value=0.0, max_value=1.0, mostly=0.95),
        E.ExpectColumnValuesToBeBetween(column="dinov2_sim", min_value=0.0, max_value=1.0, mostly=0.95),
        E.ExpectColumnValuesToBeBetween(column="ssim", min_value=0.0, max_value=1.0, mostly=0.95),
        # AnyEdit-style L1 bands: almost no pixel changed (no-op) / everything changed
        E.ExpectColumnValuesToBeBetween(column="l1", min_value=0.002, max_value=0.5, mostly=0.9),
        E.ExpectColumnValuesToBeBetween(column="clip_sim_source", min_value=0.0, max_value=1.0, mostly=0.9),
        E.ExpectColumnValuesToBeBetween(column="clip_sim_target", min_value=0.0, max_value=1.0, mostly=0.9),
        E.ExpectColumnMeanToBeBetween(column="clip_sim_dir", min_value=-0.05, max_value=1.0),
        E.ExpectColumnValuesToNotBeNull(column="clip_sim_dir", mostly=0.75),
    ]


def run_metric_expectations(table: pa.Table) -> tuple[bool, list[dict[str, Any]], int]:
    """Validate the suite on a metric_scores table; returns (success, failing expectations, expectations run).
    Range expectations see only ok rows (failed rows have null metrics by design); `status` sees all rows."""
    import great_expectations as gx

    df = table.to_pandas()
    ok_df = df[df["status"] == "ok"]
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)  # quiet logs
    source = context.data_sources.add_pandas("metric_scores")
    failures: list[dict[str, Any]] = []
    count = 0
    for name, frame, pick in (("all_rows", df, lambda e: e.column == "status"),
                              ("ok_rows", ok_df, lambda e: e.column != "status")):
        expectations = [e for e in metric_expectations() if pick(e)]
        if frame.empty or not expectations:
            continue
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name=f"metric_scores_{name}", expectations=expectations)
        result = batch.validate(suite)
        count += len(result.results)
        for r in result.results:
            if not r.success:
                res = dict(r.result or {})
                failures.append({
                    "expectation": r.expectation_config.type,
                    "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
                    "observed": res.get("observed_value", res.get("unexpected_percent")),
                })
    return not failures, failures, count


def metric_scores_expectations_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    table = lake.lake.read_table("metric_scores", shard, columns=["status", *METRIC_COLUMNS])
    success, failures, count = run_metric_expectations(table)
    md = "| expectation | column / args | observed |\n|---|---|---|\n" + "\n".join(
        f"| {f['expectation']} | {f['kwargs']} | {f['observed']} |" for f in failures)
    return dg.AssetCheckResult(
        passed=success, severity=dg.AssetCheckSeverity.WARN,
        metadata={"expectations": count, "failed": len(failures),
                  "failing_expectations": dg.MetadataValue.md(md if failures else "all expectations met")},
    )


@dg.asset_check(asset=metric_scores, blocking=False,
                description="great-expectations 1.x suite over metric distributions (values in plausible bands, "
                            "with `mostly`); failing expectations are listed in the metadata.")
def metric_scores_expectations(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return metric_scores_expectations_result(lake, context.partition_key)



asset_checks = [
    filtered_release_meets_thresholds, filtered_release_unique_ids, filtered_release_region_masks,
    filtered_release_images_decode, metric_scores_valid_ranges, metric_scores_pass_rate, metric_scores_expectations,
]
