"""Checks on `metric_scores`: value ranges and pass rate as SQL in an in-memory DuckDB over the shard's Parquet,
plus a great-expectations 1.x suite over the metric distributions."""

from typing import Any

import dagster as dg
import pyarrow as pa

from ultraedit_dagster.core.partitions import check_each_shard
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.shard_sql import shard_connection
from ultraedit_dagster.scoring.assets import metric_scores
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, METRIC_RANGES, THRESHOLD_METRICS
from ultraedit_dagster.sources.manifests import shard_profile

SCORE_SCALARS = ["candidate_uid", "status", "pass_all", *METRIC_COLUMNS]


def out_of_range_counts(con: Any, where: str = "TRUE") -> dict[str, int]:
    """metric -> rows (matching `where`) whose value is NULL, NaN, infinite or outside its valid range. DuckDB orders
    NaN above every number, so `x BETWEEN lo AND hi` alone would let +NaN through: isfinite() comes first."""
    bad: dict[str, int] = {}
    for metric in METRIC_COLUMNS:  # column names from our own constant list; bounds are bound parameters
        lo, hi = METRIC_RANGES[metric]
        eps = 1e-6  # float32 cosines can land a hair outside [-1, 1]
        n = con.execute(
            f"SELECT count(*) FROM t WHERE ({where}) AND NOT coalesce(isfinite({metric}) AND {metric} BETWEEN ? AND ?, "
            "false)",
            [lo - eps, hi + eps],
        ).fetchone()[0]
        if n:
            bad[metric] = n
    return bad


def metric_scores_valid_ranges_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "metric_scores", shard, SCORE_SCALARS)
    bad = out_of_range_counts(con, "status = 'ok'")
    rows, ok, bad_status = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), "
        "count(*) FILTER (WHERE status NOT IN ('ok', 'failed') OR status IS NULL) FROM t"
    ).fetchone()
    return dg.AssetCheckResult(
        passed=not bad and bad_status == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "ok_rows": ok, "out_of_range_or_nan": str(bad), "bad_status": bad_status},
    )


@dg.asset_check(
    asset=metric_scores,
    blocking=True,
    description="ok rows have every metric, finite and within its valid range (cosines/SSIM in [-1, 1], L1 in [0, 1]).",
)
def metric_scores_valid_ranges(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: metric_scores_valid_ranges_result(lake, shard))


def metric_scores_pass_rate_result(lake: LakeResource, shard: str, pipeline: PipelineResource) -> dg.AssetCheckResult:
    con = shard_connection(lake, "metric_scores", shard, ["mode", "status", "pass_all"])
    minimum = shard_profile(pipeline.profile, lake.lake, shard).selection.min_pass_rate
    ok, passed = con.execute("SELECT count(*), count(*) FILTER (WHERE pass_all) FROM t WHERE status = 'ok'").fetchone()
    by_mode = {
        m: f"{p}/{n}"
        for m, n, p in con.execute(
            "SELECT mode, count(*), count(*) FILTER (WHERE pass_all) FROM t WHERE status = 'ok' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    }
    rate = passed / ok if ok else 0.0
    return dg.AssetCheckResult(
        passed=rate >= minimum,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"scored": ok, "passed": passed, "pass_rate": rate, "min_pass_rate": minimum, "by_mode": str(by_mode)},
    )


@dg.asset_check(
    asset=metric_scores,
    blocking=False,
    description="The shard's pass rate (pass_all among scored candidates) reaches profile.selection.min_pass_rate.",
)
def metric_scores_pass_rate(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: metric_scores_pass_rate_result(lake, shard, pipeline))


# columns whose values a working scorer spreads out: a collapsed scorer writes one constant (image similarity =
# DINOv2 = 1, directional = 0), so few distinct values among many rows means the scorer collapsed
SPREAD_COLUMNS = ("clip_sim_image", "dinov2_sim", "clip_sim_dir", "ssim")
MIN_ROWS_FOR_SPREAD = 5  # below this a constant column is not evidence of anything


def metric_expectations(profile: Any, mode: str, rows: int) -> list[Any]:
    """The distribution suite (great-expectations 1.x) over the ok rows of one mode of metric_scores
    (docs/method.md §5): values in their valid ranges; a scorer that did not collapse; at least the profile's
    min_pass_rate of candidates reaching each threshold of the mode; at most 10% of pairs outside the mode's L1
    band (no flood of no-op or changed-everything pairs)."""
    import great_expectations as gx

    E = gx.expectations
    thr = profile.region_thresholds if mode == "region" else profile.free_form_thresholds
    min_rate = max(profile.selection.min_pass_rate, 1e-9)
    out = [
        E.ExpectColumnValuesToBeBetween(column=m, min_value=lo, max_value=hi) for m, (lo, hi) in METRIC_RANGES.items()
    ]
    if rows >= MIN_ROWS_FOR_SPREAD:
        out += [E.ExpectColumnProportionOfUniqueValuesToBeBetween(column=c, min_value=0.2) for c in SPREAD_COLUMNS]
    out += [
        E.ExpectColumnValuesToBeBetween(column=m, min_value=float(getattr(thr, m)), mostly=min_rate)
        for m in THRESHOLD_METRICS
    ]
    out.append(E.ExpectColumnValuesToBeBetween(column="l1", min_value=thr.min_l1, max_value=thr.max_l1, mostly=0.9))
    return out


def run_metric_expectations(table: pa.Table, profile: Any) -> tuple[bool, list[dict[str, Any]], int]:
    """Validate the suite on a metric_scores table; returns (success, failing expectations, expectations run).
    `status` sees all rows (at least 75% scored); the metric expectations see the ok rows of each mode (failed rows
    have null metrics by design)."""
    import great_expectations as gx

    df = table.to_pandas()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)  # quiet logs
    source = context.data_sources.add_pandas("metric_scores")
    failures: list[dict[str, Any]] = []
    count = 0
    suites = [
        ("all_rows", df, [gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=["ok"], mostly=0.75)])
    ]
    for mode in ("free_form", "region"):
        frame = df[(df["status"] == "ok") & (df["mode"] == mode)]
        suites.append((mode, frame, metric_expectations(profile, mode, len(frame))))
    for name, frame, expectations in suites:
        if frame.empty:
            continue
        batch = (
            source.add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        suite = gx.ExpectationSuite(name=f"metric_scores_{name}", expectations=expectations)
        result = batch.validate(suite)
        count += len(result.results)
        for r in result.results:
            if not r.success:
                res = dict(r.result or {})
                failures.append(
                    {
                        "rows": name,
                        "expectation": r.expectation_config.type,
                        "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
                        "observed": res.get("observed_value", res.get("unexpected_percent")),
                    }
                )
    return not failures, failures, count


def metric_scores_expectations_result(
    lake: LakeResource, shard: str, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    table = lake.lake.read_table("metric_scores", shard, columns=["status", "mode", *METRIC_COLUMNS])
    success, failures, count = run_metric_expectations(table, shard_profile(pipeline.profile, lake.lake, shard))
    md = "| rows | expectation | column / args | observed |\n|---|---|---|---|\n" + "\n".join(
        f"| {f['rows']} | {f['expectation']} | {f['kwargs']} | {f['observed']} |" for f in failures
    )
    return dg.AssetCheckResult(
        passed=success,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expectations": count,
            "failed": len(failures),
            "failing_expectations": dg.MetadataValue.md(md if failures else "all expectations met"),
        },
    )


@dg.asset_check(
    asset=metric_scores,
    blocking=False,
    description="great-expectations 1.x suite over metric distributions per mode: valid ranges, a scorer that did "
    "not collapse, thresholds reachable, no flood of no-op pairs; failing expectations are listed in the metadata.",
)
def metric_scores_expectations(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: metric_scores_expectations_result(lake, shard, pipeline))


asset_checks = [metric_scores_valid_ranges, metric_scores_pass_rate, metric_scores_expectations]
