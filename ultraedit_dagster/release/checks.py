"""Checks on `filtered_release`: SQL in an in-memory DuckDB over the shard's Parquet (values are bound as
parameters) and image decoding."""

import io
from typing import Any

import dagster as dg
from PIL import Image

from ultraedit_dagster.core.partitions import check_each_shard
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.shard_sql import shard_connection
from ultraedit_dagster.release.assets import filtered_release
from ultraedit_dagster.release.schema import IMAGE_COLUMNS
from ultraedit_dagster.scoring.checks import out_of_range_counts
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, THRESHOLD_METRICS
from ultraedit_dagster.sources.manifests import shard_profile

# -- filtered_release -------------------------------------------------------------------------------------------

RELEASE_SCALARS = ["uid", "idx", "split", "mode", "edit_object", "status", *METRIC_COLUMNS]


def filtered_release_meets_thresholds_result(
    lake: LakeResource, shard: str, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, RELEASE_SCALARS)
    profile = shard_profile(pipeline.profile, lake.lake, shard)
    violations: dict[str, int] = {}
    examples: list[str] = []
    for split, thr in (("free_form", profile.free_form_thresholds), ("region", profile.region_thresholds)):
        for metric in THRESHOLD_METRICS:
            # column names come from our own constant list, never from data; the threshold value is bound.
            # isfinite() first: DuckDB orders NaN above every number, so `NaN >= threshold` is true.
            sql = f"SELECT uid FROM t WHERE split = ? AND NOT coalesce(isfinite({metric}) AND {metric} >= ?, false)"
            bad = [r[0] for r in con.execute(sql, [split, float(getattr(thr, metric))]).fetchall()]
            if bad:
                violations[f"{split}.{metric}"] = len(bad)
                examples += bad[:3]
        # the L1 band: no no-op pairs, no pairs that changed everything
        sql = "SELECT uid FROM t WHERE split = ? AND NOT coalesce(isfinite(l1) AND l1 BETWEEN ? AND ?, false)"
        bad = [r[0] for r in con.execute(sql, [split, float(thr.min_l1), float(thr.max_l1)]).fetchall()]
        if bad:
            violations[f"{split}.l1_band"] = len(bad)
            examples += bad[:3]
    unknown = con.execute(
        "SELECT count(*) FROM t WHERE split NOT IN ('free_form', 'region') OR split IS NULL OR split <> mode"
    ).fetchone()[0]
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    return dg.AssetCheckResult(
        passed=not violations and unknown == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows": rows,
            "violations": str(violations),
            "bad_split": unknown,
            "examples": ", ".join(examples[:10]),
        },
    )


@dg.asset_check(
    asset=filtered_release,
    blocking=True,
    description="Every release row satisfies the thresholds and the L1 band of its split (free-form / region); "
    "a NaN metric never passes.",
)
def filtered_release_meets_thresholds(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: filtered_release_meets_thresholds_result(lake, shard, pipeline))


def filtered_release_valid_ranges_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, RELEASE_SCALARS)
    bad = out_of_range_counts(con)
    bad_status = con.execute("SELECT count(*) FROM t WHERE status IS DISTINCT FROM 'ok'").fetchone()[0]
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    return dg.AssetCheckResult(
        passed=not bad and bad_status == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "out_of_range_or_nan": str(bad), "not_ok_status": bad_status},
    )


@dg.asset_check(
    asset=filtered_release,
    blocking=True,
    description="Every metric column of every release row (the six UltraEdit metrics and l1) is finite and within "
    "its valid range; every row has status ok.",
)
def filtered_release_valid_ranges(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: filtered_release_valid_ranges_result(lake, shard))


def filtered_release_unique_ids_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, ["uid", "idx"])
    rows, dup_uid, dup_idx, nulls = con.execute(
        "SELECT count(*), count(*) - count(DISTINCT uid), count(*) - count(DISTINCT idx), "
        "count(*) FILTER (WHERE uid IS NULL OR idx IS NULL OR idx < 0) FROM t"
    ).fetchone()
    return dg.AssetCheckResult(
        passed=dup_uid == 0 and dup_idx == 0 and nulls == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "duplicate_uid": dup_uid, "duplicate_idx": dup_idx, "null_or_negative": nulls},
    )


@dg.asset_check(asset=filtered_release, blocking=True, description="uid and idx are unique and not null in the shard.")
def filtered_release_unique_ids(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: filtered_release_unique_ids_result(lake, shard))


def filtered_release_region_masks_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = shard_connection(lake, "filtered_release", shard, ["uid", "split", "edit_object", "mask_image"])
    no_mask, no_object, ff_mask = con.execute(
        "SELECT count(*) FILTER (WHERE split = 'region' AND (mask_image IS NULL OR mask_image.bytes IS NULL "
        "OR octet_length(mask_image.bytes) = 0)), "
        "count(*) FILTER (WHERE split = 'region' AND edit_object IS NULL), "
        "count(*) FILTER (WHERE split = 'free_form' AND (mask_image IS NOT NULL OR edit_object IS NOT NULL)) FROM t"
    ).fetchone()
    return dg.AssetCheckResult(
        passed=no_mask == 0 and no_object == 0 and ff_mask == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "region_without_mask": no_mask,
            "region_without_edit_object": no_object,
            "free_form_with_mask_or_object": ff_mask,
        },
    )


@dg.asset_check(
    asset=filtered_release,
    blocking=True,
    description="Region rows have a mask and an edit_object; free-form rows have neither.",
)
def filtered_release_region_masks(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: filtered_release_region_masks_result(lake, shard))


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
    batches = lake.lake.iter_batches("filtered_release", shard, batch_size=64, columns=["uid", *IMAGE_COLUMNS])
    checked, bad = undecodable_images(batches)
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"images_checked": checked, "bad": len(bad), "examples": "; ".join(bad[:10])},
    )


@dg.asset_check(asset=filtered_release, blocking=True, description="Every image cell decodes (PIL, fully loaded).")
def filtered_release_images_decode(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: filtered_release_images_decode_result(lake, shard))


asset_checks = [
    filtered_release_meets_thresholds,
    filtered_release_valid_ranges,
    filtered_release_unique_ids,
    filtered_release_region_masks,
    filtered_release_images_decode,
]
