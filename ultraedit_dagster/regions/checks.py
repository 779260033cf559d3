"""Checks on `region_masks`: mask sizes and values, non-empty masks on ok rows, the mask-QC failure rate."""

import io

import dagster as dg
import numpy as np
from PIL import Image

from ultraedit_dagster.core.partitions import check_each_shard
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.shard_sql import shard_connection
from ultraedit_dagster.regions import mask_math as mm
from ultraedit_dagster.regions.assets import region_masks
from ultraedit_dagster.regions.object_selection import full_mask_reason
from ultraedit_dagster.regions.rows import (
    ASSET,
    FREE_FORM,
    MASK_COLUMNS,
    MASK_QC,
    OBJECT_NOT_FOUND,
    OBJECT_NOT_IN_IMAGE,
)

BINARY_MASKS = tuple(c for c in MASK_COLUMNS if c != "soft_mask")


def _image_sizes(lake: LakeResource, shard: str, uids: set[str]) -> dict[str, tuple[int, int]]:
    """(width, height) of the source images, read from the PNG headers only."""
    sizes: dict[str, tuple[int, int]] = {}
    if not uids:
        return sizes
    for batch in lake.lake.iter_batches("source_images", shard, batch_size=64, columns=["uid", "image"]):
        for row in batch.to_pylist():
            if row["uid"] in uids and row["image"]:
                with Image.open(io.BytesIO(row["image"])) as im:
                    sizes[row["uid"]] = im.size
    return sizes


def mask_problems(row: dict, size: tuple[int, int] | None) -> list[str]:
    """What is wrong with one row's stored masks (empty list when nothing)."""
    problems = []
    for col in MASK_COLUMNS:
        data = row.get(col)
        if data is None:
            continue
        try:
            im = Image.open(io.BytesIO(data))
            im.load()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{col}: undecodable ({exc})")
            continue
        if im.mode != "L":
            problems.append(f"{col}: mode {im.mode}, expected L")
        if size is not None and im.size != size:
            problems.append(f"{col}: size {im.size} != image size {size}")
        values = set(np.unique(np.asarray(im)).tolist())
        if col in BINARY_MASKS:
            if not values <= {0, 255}:
                problems.append(f"{col}: values {sorted(values)[:5]} not binary 0/255")
        else:
            allowed = {0, 255}
            if row.get("soft_value") is not None:
                # the same conversion the asset uses (float32 mask -> round(v * 255))
                allowed.add(int(mm.to_uint8(np.array([row["soft_value"]], dtype=np.float32))[0]))
            if not values <= allowed:
                problems.append(f"{col}: values {sorted(values)[:5]} outside {sorted(allowed)}")
    return problems


@dg.asset_check(
    asset=region_masks,
    blocking=True,
    description="Every stored mask is a PNG 'L' of its image's size with valid values (binary 0/255; "
    "the soft mask 0, 255 and its band value).",
)
def region_masks_valid_masks(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        cols = ["instruction_uid", "image_uid", "soft_value", *MASK_COLUMNS]
        uids: set[str] = set()
        for batch in lake.lake.iter_batches(ASSET, shard, columns=["image_uid", "fine_mask"]):
            uids |= {r["image_uid"] for r in batch.to_pylist() if r["fine_mask"] is not None}
        sizes = _image_sizes(lake, shard, uids)
        checked = 0
        bad: list[str] = []
        for batch in lake.lake.iter_batches(ASSET, shard, batch_size=64, columns=cols):
            for row in batch.to_pylist():
                if row["fine_mask"] is None:
                    continue
                checked += 1
                problems = mask_problems(row, sizes.get(row["image_uid"]))
                if row["image_uid"] not in sizes:
                    problems.append("source image not found to compare sizes")
                if problems:
                    bad.append(f"{row['instruction_uid']}: {'; '.join(problems)}")
        return dg.AssetCheckResult(
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows_with_masks": checked, "bad_rows": len(bad), "examples": "\n".join(bad[:5])},
        )

    return check_each_shard(context, one_shard)


@dg.asset_check(
    asset=region_masks,
    blocking=True,
    description="Every ok row has all its masks, a non-empty fine mask and a soft mask (free-form rows, stored only "
    "when their object-presence check failed, are never ok).",
)
def region_masks_ok_rows_have_masks(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        bad: list[str] = []
        ok_rows = 0
        for batch in lake.lake.iter_batches(
            ASSET, shard, batch_size=64, columns=["instruction_uid", "status", *MASK_COLUMNS]
        ):
            for row in batch.to_pylist():
                if row["status"] != "ok":
                    continue
                ok_rows += 1
                missing = [c for c in MASK_COLUMNS if not row[c]]
                if missing:
                    bad.append(f"{row['instruction_uid']}: missing {', '.join(missing)}")
                    continue
                if not np.asarray(Image.open(io.BytesIO(row["fine_mask"]))).any():
                    bad.append(f"{row['instruction_uid']}: empty fine mask")
        return dg.AssetCheckResult(
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"ok_rows": ok_rows, "bad_rows": len(bad), "examples": "\n".join(bad[:5])},
        )

    return check_each_shard(context, one_shard)


@dg.asset_check(
    asset=region_masks,
    blocking=False,
    description="The share of masked rows failing mask QC stays under the profile's maximum.",
)
def region_masks_qc_failure_rate(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        con = shard_connection(lake, ASSET, shard)
        prefix = f"{MASK_QC}:%"
        masked, qc_failed, not_found, not_in_image = con.execute(
            "SELECT count(*) FILTER (WHERE qc IS NOT NULL OR error LIKE ?), count(*) FILTER (WHERE error LIKE ?), "
            "count(*) FILTER (WHERE error LIKE ?), count(*) FILTER (WHERE error LIKE ?) FROM t",
            [prefix, prefix, f"{OBJECT_NOT_FOUND}:%", f"{OBJECT_NOT_IN_IMAGE}:%"],
        ).fetchone()
        reasons = dict(
            con.execute(
                "SELECT qc, count(*) FROM t WHERE error LIKE ? GROUP BY 1 ORDER BY 2 DESC LIMIT 5", [prefix]
            ).fetchall()
        )
        # free-form rows (failed object-presence checks, docs/method.md §4); shards written before the column have none
        free_form = free_form_not_in_image = 0
        if "mode" in [d[0] for d in con.execute("SELECT * FROM t LIMIT 0").description]:
            free_form, free_form_not_in_image = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE error LIKE ?) FROM t WHERE mode = ?",
                [f"{OBJECT_NOT_IN_IMAGE}:%", FREE_FORM],
            ).fetchone()
        rate = qc_failed / masked if masked else 0.0
        limit = pipeline.profile.region_masking.max_qc_failure_rate
        return dg.AssetCheckResult(
            passed=rate <= limit,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "masked_rows": masked,
                "qc_failed": qc_failed,
                "qc_failure_rate": rate,
                "max_qc_failure_rate": limit,
                "object_not_found": not_found,
                "object_not_in_image": not_in_image,
                "free_form_failed": free_form,
                "free_form_object_not_in_image": free_form_not_in_image,
                "top_qc_reasons": str(reasons),
            },
        )

    return check_each_shard(context, one_shard)


def local_full_mask_rows(rows: list[dict]) -> list[str]:
    """Ok rows with a full-image mask (area 1.0 or edit_object NONE) whose edit is local: none may exist."""
    bad = []
    for row in rows:
        if row["status"] != "ok":
            continue
        full = row["edit_object"] == "NONE" or (row["mask_area_fraction"] or 0.0) >= 1.0
        if full and not full_mask_reason(row["instruction"] or "", row["edit_type"]):
            bad.append(f"{row['instruction_uid']}: {row['edit_type']} {row['instruction']!r}")
    return bad


@dg.asset_check(
    asset=region_masks,
    blocking=True,
    description="No ok row gives a local edit (Add, Replace, Change Local, ...) a full-image mask: full masks are "
    "only for edits that are global by nature (docs/method.md §4).",
)
def region_masks_no_full_mask_for_local_edits(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        bad: list[str] = []
        cols = ["instruction_uid", "instruction", "edit_type", "edit_object", "mask_area_fraction", "status"]
        for batch in lake.lake.iter_batches(ASSET, shard, batch_size=1024, columns=cols):
            bad += local_full_mask_rows(batch.to_pylist())
        return dg.AssetCheckResult(
            passed=not bad,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"bad_rows": len(bad), "examples": "\n".join(bad[:5])},
        )

    return check_each_shard(context, one_shard)


asset_checks = [
    region_masks_valid_masks,
    region_masks_ok_rows_have_masks,
    region_masks_qc_failure_rate,
    region_masks_no_full_mask_for_local_edits,
]
