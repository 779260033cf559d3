"""Stage III masks: tag the image, select the edited object(s), ground them with GroundingDINO, segment with SAM."""


import io
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

import dagster as dg

from .. import mask_math as mm
from ..imaging import encode_png, markdown_image, thumbnail_grid
from ..object_selection import NONE_OBJECT, Selection, grounding_text
from ..partitions import shards
from ..deploy_tags import GPU_OP_TAGS
from ..retries import TRANSIENT_RETRY_POLICY
from ..resources.grounder import GrounderResource
from ..resources.object_selector import ObjectSelectorResource
from ..resources.pipeline import PipelineResource
from ..resources.segmenter import SegmenterResource
from ..resources.storage import LakeResource
from ..resources.tagger import TaggerResource

ASSET = "region_masks"
IMAGE_BATCH = 8
PREVIEW_TILES = 12
MASK_COLUMNS = ("fine_mask", "hull_mask", "box_mask", "inner_mask", "outer_mask", "soft_mask")

REGION_MASKS_SCHEMA = pa.schema(
    [
        ("instruction_uid", pa.string()),
        ("image_uid", pa.string()),
        ("shard", pa.string()),
        ("instruction", pa.string()),
        ("edit_type", pa.string()),
        ("edit_object", pa.string()),
        ("selection_reason", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("grounding_text", pa.string()),
        ("boxes", pa.list_(pa.list_(pa.float64()))),
        ("box_scores", pa.list_(pa.float64())),
        ("box_labels", pa.list_(pa.string())),
        *[(c, pa.binary()) for c in MASK_COLUMNS],
        ("soft_value", pa.float64()),
        ("contour_count", pa.int64()),
        ("mask_area_fraction", pa.float64()),
        ("qc", pa.string()),
        ("tagger_id", pa.string()),
        ("object_selector_id", pa.string()),
        ("grounder_id", pa.string()),
        ("segmenter_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("profile", pa.string()),
    ]
)

# outcome categories for metadata and checks (the prefix of `error`)
UPSTREAM, NO_DETECTION, MASK_QC = "upstream", "no detection", "mask qc"


def _mask_png(mask: np.ndarray) -> bytes:
    return encode_png(Image.fromarray(mm.to_uint8(mask), mode="L"))


def _each(fn: Callable[[list], list], items: list, label: str) -> list[Any]:
    """fn over the batch; when the batch call fails, item by item so one bad input fails only its own row."""
    if not items:
        return []
    try:
        out = fn(items)
        if len(out) != len(items):
            raise RuntimeError(f"{label} returned {len(out)} results for {len(items)} inputs")
        return out
    except Exception:  # noqa: BLE001 - isolate the failing item below
        results: list[Any] = []
        for item in items:
            try:
                results += fn([item])
            except Exception as exc:  # noqa: BLE001 - recorded in the row
                results.append(RuntimeError(f"{label}: {type(exc).__name__}: {exc}"))
        return results


def base_row(ins: dict, shard: str, profile: str) -> dict:
    row = {name: None for name in REGION_MASKS_SCHEMA.names}
    row.update(
        instruction_uid=ins["instruction_uid"], image_uid=ins["image_uid"], shard=shard,
        instruction=ins.get("instruction"), edit_type=ins.get("edit_type"), tags=[], boxes=[], box_scores=[],
        box_labels=[], profile=profile, status="ok",
    )
    return row


def fail(row: dict, error: str) -> dict:
    row.update(status="failed", error=error[:500])
    return row


def process_images(
    images: Sequence[tuple[str, Image.Image]],
    instructions: dict[str, list[dict]],
    *,
    shard: str,
    profile: str,
    global_seed: int,
    qc: mm.MaskQC,
    soft_probability: float,
    soft_values: Sequence[float],
    tagger: TaggerResource,
    selector: ObjectSelectorResource,
    grounder: GrounderResource,
    segmenter: SegmenterResource,
) -> tuple[list[dict], list[Image.Image]]:
    """Rows for every region instruction of these (image_uid, RGB image) pairs, plus overlay tiles of ok rows."""
    tiles: list[Image.Image] = []
    pil = dict(images)
    uids = [u for u, _ in images]

    tag_results = _each(lambda ims: tagger.tag([pil[u] for u in ims]), uids, "tagger")
    tags = dict(zip(uids, tag_results))

    rows: list[dict] = []
    pending: list[dict] = []  # rows still ok, with their instruction
    for uid in uids:
        for ins in instructions.get(uid, []):
            row = base_row(ins, shard, profile)
            if isinstance(tags[uid], Exception):
                rows.append(fail(row, str(tags[uid])))
                continue
            row["tags"] = list(tags[uid])
            row["tagger_id"] = tagger.model_id
            rows.append(row)
            pending.append({"row": row, "ins": ins})

    requests = [
        {"instruction": p["ins"].get("instruction") or "", "source_caption": p["ins"].get("source_caption") or "",
         "target_caption": p["ins"].get("target_caption") or "", "tags": p["row"]["tags"],
         "edit_type": p["ins"].get("edit_type")}
        for p in pending
    ]
    selections = _each(selector.select_many, requests, "object_selector")

    to_ground: list[dict] = []
    for p, sel in zip(pending, selections):
        row = p["row"]
        row["object_selector_id"] = selector.selector_id
        if isinstance(sel, Exception):
            fail(row, f"object_selector: {sel}")
            continue
        assert isinstance(sel, Selection)
        row["edit_object"], row["selection_reason"] = sel.edit_object, sel.reason or None
        if sel.is_none:
            image = pil[row["image_uid"]]
            _fill_masks(row, mm.full_image_masks(image.height, image.width))
            continue
        row["grounding_text"] = grounding_text(sel.objects)
        to_ground.append(row)

    detections = _each(
        lambda rs: grounder.detect([pil[r["image_uid"]] for r in rs], [r["grounding_text"] for r in rs]),
        to_ground, "grounder",
    )
    for row, det in zip(to_ground, detections):
        if isinstance(det, Exception):
            fail(row, str(det))
            continue
        row["grounder_id"] = grounder.model_id
        if len(det) == 0:
            fail(row, f"{NO_DETECTION}: no box for {row['grounding_text']!r} above box threshold "
                      f"{grounder.box_threshold}")
            continue
        row["boxes"] = [[float(v) for v in b] for b in det.boxes]
        row["box_scores"] = [float(s) for s in det.scores]
        row["box_labels"] = list(det.labels)
        image = pil[row["image_uid"]]
        try:
            fine = segmenter.segment(np.asarray(image), row["boxes"])
            row["segmenter_id"] = segmenter.model_id
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            fail(row, f"segmenter: {type(exc).__name__}: {exc}")
            continue
        masks = mm.build_region_masks(
            fine, row["boxes"], row["instruction_uid"], global_seed, qc=qc, soft_probability=soft_probability,
            soft_values=soft_values,
        )
        _fill_masks(row, masks)
        if not masks.ok:
            fail(row, f"{MASK_QC}: {masks.qc}")
        elif len(tiles) < PREVIEW_TILES:
            tiles.append(overlay_tile(image, masks.soft, row["boxes"]))
    return rows, tiles


def _fill_masks(row: dict, masks: mm.RegionMasks) -> None:
    row.update(
        fine_mask=_mask_png(masks.fine), hull_mask=_mask_png(masks.hull), box_mask=_mask_png(masks.box),
        inner_mask=_mask_png(masks.inner), outer_mask=_mask_png(masks.outer), soft_mask=_mask_png(masks.soft),
        soft_value=masks.soft_value, contour_count=masks.contour_count, mask_area_fraction=masks.area_fraction,
        qc=masks.qc,
    )


def overlay_tile(image: Image.Image, soft: np.ndarray, boxes: Sequence[Sequence[float]]) -> Image.Image:
    import cv2

    out = mm.overlay(np.asarray(image.convert("RGB")), soft)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), (40, 220, 40), 3)
    return Image.fromarray(out)


def outcome(row: dict) -> str:
    if row["status"] == "ok":
        return "whole image (NONE)" if row["edit_object"] == NONE_OBJECT else "ok"
    err = row["error"] or ""
    for prefix in (NO_DETECTION, MASK_QC):
        if err.startswith(prefix):
            return prefix
    if err.startswith(("source_images:", "edit_instructions:")):
        return UPSTREAM
    return "model error"


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=4),
    op_tags=GPU_OP_TAGS,
    deps=["source_images", "edit_instructions"],
    group_name="region",
    kinds={"parquet", "pytorch"},
    pool="gpu",
    automation_condition=dg.AutomationCondition.eager(),
)
def region_masks(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    pipeline: PipelineResource,
    tagger: TaggerResource,
    object_selector: ObjectSelectorResource,
    grounder: GrounderResource,
    segmenter: SegmenterResource,
) -> dg.MaterializeResult:
    """One row per region-mode edit instruction: the image's tags, the edited object(s) (or NONE for whole-image
    edits, whose masks are the full image), GroundingDINO boxes and scores, SAM's fine mask, the convex-hull, box,
    inner, outer and soft masks (PNG), and the mask QC result (1% < area < 90%, <= 500 external contours). No
    detection, a mask failing QC, a model error or a failed upstream row each give a `failed` row with the reason.
    Free-form instructions are not in this table."""
    shard = context.partition_key
    profile = pipeline.profile
    rm = profile.region_masking
    qc = mm.MaskQC(rm.min_area, rm.max_area, rm.max_contours, rm.fine_hull_max_contours)
    lk = lake.lake

    instructions: dict[str, list[dict]] = defaultdict(list)
    rows: list[dict] = []
    cols = ["instruction_uid", "image_uid", "instruction", "source_caption", "target_caption", "edit_type", "mode",
            "status", "error"]
    for batch in lk.iter_batches("edit_instructions", shard, batch_size=1024, columns=cols):
        for ins in batch.to_pylist():
            if ins["mode"] != "region":
                continue
            if ins["status"] != "ok":
                rows.append(fail(base_row(ins, shard, profile.name), f"edit_instructions: {ins['error']}"))
                continue
            instructions[ins["image_uid"]].append(ins)

    tiles: list[Image.Image] = []
    seen: set[str] = set()
    with lk.open_writer(ASSET, shard, REGION_MASKS_SCHEMA) as writer:
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=REGION_MASKS_SCHEMA))
        all_rows = list(rows)
        group: list[tuple[str, Image.Image]] = []

        def flush() -> None:
            if not group:
                return
            out, new_tiles = process_images(
                group, instructions, shard=shard, profile=profile.name, global_seed=pipeline.global_seed, qc=qc,
                soft_probability=profile.region.soft_mask_probability, soft_values=profile.region.soft_mask_values,
                tagger=tagger, selector=object_selector, grounder=grounder, segmenter=segmenter,
            )
            writer.write_table(pa.Table.from_pylist(out, schema=REGION_MASKS_SCHEMA))
            all_rows.extend({k: r[k] for k in ("status", "error", "edit_object", "qc", "instruction_uid")} for r in out)
            tiles.extend(new_tiles[: max(0, PREVIEW_TILES - len(tiles))])
            group.clear()

        if instructions:
            for batch in lk.iter_batches("source_images", shard, batch_size=IMAGE_BATCH,
                                         columns=["uid", "image", "status", "error"]):
                for img_row in batch.to_pylist():
                    uid = img_row["uid"]
                    if uid not in instructions or uid in seen:
                        continue
                    seen.add(uid)
                    if img_row["status"] != "ok" or not img_row["image"]:
                        failed = [fail(base_row(i, shard, profile.name), f"source_images: {img_row['error']}")
                                  for i in instructions[uid]]
                        writer.write_table(pa.Table.from_pylist(failed, schema=REGION_MASKS_SCHEMA))
                        all_rows.extend(failed)
                        continue
                    try:
                        image = Image.open(io.BytesIO(img_row["image"])).convert("RGB")
                    except Exception as exc:  # noqa: BLE001 - recorded in the rows
                        failed = [fail(base_row(i, shard, profile.name), f"source_images: undecodable image: {exc}")
                                  for i in instructions[uid]]
                        writer.write_table(pa.Table.from_pylist(failed, schema=REGION_MASKS_SCHEMA))
                        all_rows.extend(failed)
                        continue
                    group.append((uid, image))
                    if len(group) >= IMAGE_BATCH:
                        flush()
            flush()
            missing = [
                fail(base_row(i, shard, profile.name), f"source_images: image {uid} not in the shard")
                for uid in instructions if uid not in seen for i in instructions[uid]
            ]
            if missing:
                writer.write_table(pa.Table.from_pylist(missing, schema=REGION_MASKS_SCHEMA))
                all_rows.extend(missing)

    counts = Counter(outcome(r) for r in all_rows)
    ok = sum(1 for r in all_rows if r["status"] == "ok")
    reasons = Counter((r["error"] or "")[:80] for r in all_rows if r["status"] != "ok")
    if not all_rows:
        context.log.info(f"shard {shard}: no region-mode instructions")
    elif ok == 0:
        context.log.warning(f"shard {shard}: no region row passed; top reasons: {reasons.most_common(3)}")
    preview = markdown_image(thumbnail_grid(tiles, columns=4, thumb=160), alt="mask overlays") if tiles else "(no ok region rows with masks)"
    return dg.MaterializeResult(
        metadata={
            "rows": len(all_rows),
            "ok": ok,
            "failed": len(all_rows) - ok,
            "outcomes": dg.MetadataValue.json(dict(counts)),
            "top_errors": dg.MetadataValue.json(dict(reasons.most_common(10))),
            "lake_uri": lk.shard_uri(ASSET, shard),
            "preview": dg.MetadataValue.md(preview),
        }
    )


assets = [region_masks]
