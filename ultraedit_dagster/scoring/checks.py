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
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, METRIC_RANGES

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
    minimum = pipeline.profile.selection.min_pass_rate
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
    for name, frame, pick in (
        ("all_rows", df, lambda e: e.column == "status"),
        ("ok_rows", ok_df, lambda e: e.column != "status"),
    ):
        expectations = [e for e in metric_expectations() if pick(e)]
        if frame.empty or not expectations:
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
                        "expectation": r.expectation_config.type,
                        "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
                        "observed": res.get("observed_value", res.get("unexpected_percent")),
                    }
                )
    return not failures, failures, count


def metric_scores_expectations_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    table = lake.lake.read_table("metric_scores", shard, columns=["status", *METRIC_COLUMNS])
    success, failures, count = run_metric_expectations(table)
    md = "| expectation | column / args | observed |\n|---|---|---|\n" + "\n".join(
        f"| {f['expectation']} | {f['kwargs']} | {f['observed']} |" for f in failures
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
    description="great-expectations 1.x suite over metric distributions (values in plausible bands, "
    "with `mostly`); failing expectations are listed in the metadata.",
)
def metric_scores_expectations(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: metric_scores_expectations_result(lake, shard))


asset_checks = [metric_scores_valid_ranges, metric_scores_pass_rate, metric_scores_expectations]
