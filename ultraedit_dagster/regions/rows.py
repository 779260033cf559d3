"""Region-mask rows (docs/method.md §4): tag the image, select the edited object(s), ground them with GroundingDINO,
segment with SAM, expand and QC the masks. The schema and Dagster-free row building; the models come in as
arguments (anything with the resources' methods).

With the profile's `free_form_presence` on, free-form instructions of local edits go through the same tagging,
selection and (when the tags do not hold the object) grounding, without masks: one whose object is absent gets a
failed row (`mode` free_form, `object_not_in_image` / `object_not_found`) that edit_candidates turns into a failed
candidate row instead of generating it. Free-form instructions whose object is present get no row."""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from ultraedit_dagster.core.imaging import encode_png
from ultraedit_dagster.core.rows import instructions_by_image, mark_failed, source_images_of
from ultraedit_dagster.regions import mask_math as mm
from ultraedit_dagster.regions.object_selection import (
    NONE_OBJECT,
    ObjectSelection,
    full_mask_reason,
    grounding_text,
    objects_in_tags,
    presence_required,
)

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
        # "region", or "free_form" for a free-form instruction that failed the object-presence check
        ("mode", pa.string()),
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

# outcome categories for metadata and checks (the prefix of `error`). A local edit whose object the selector cannot
# name, or the grounder cannot box while the tags hold it, is `object_not_found`; a named object that neither the
# tags nor the grounder see is `object_not_in_image` (docs/method.md §4).
UPSTREAM, MASK_QC = "upstream", "mask qc"
OBJECT_NOT_FOUND, OBJECT_NOT_IN_IMAGE = "object_not_found", "object_not_in_image"
REGION, FREE_FORM = "region", "free_form"


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
        instruction_uid=ins["instruction_uid"],
        image_uid=ins["image_uid"],
        shard=shard,
        instruction=ins.get("instruction"),
        edit_type=ins.get("edit_type"),
        mode=ins.get("mode") or REGION,
        tags=[],
        boxes=[],
        box_scores=[],
        box_labels=[],
        profile=profile,
        status="ok",
    )
    return row


def fail(row: dict, error: str) -> dict:
    return mark_failed(row, error)


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
    tagger: Any,
    selector: Any,
    grounder: Any,
    segmenter: Any,
    stats: Counter | None = None,
) -> tuple[list[dict], list[Image.Image]]:
    """Rows for every region instruction of these (image_uid, RGB image) pairs, plus overlay tiles of ok rows.
    Free-form instructions among them (mode free_form) are checked for their object's presence only: the failed ones
    give rows, the present ones none; `stats` counts `free_form_checked` and `free_form_present`."""
    stats = Counter() if stats is None else stats
    tiles: list[Image.Image] = []
    pil = dict(images)
    uids = [u for u, _ in images]

    tag_results = _each(lambda ims: tagger.tag([pil[u] for u in ims]), uids, "tagger")
    tags = dict(zip(uids, tag_results, strict=True))

    rows: list[dict] = []
    presence: list[dict] = []  # free-form rows: only the failed ones are stored
    pending: list[dict] = []  # rows still ok, with their instruction
    for uid in uids:
        for ins in instructions.get(uid, []):
            row = base_row(ins, shard, profile)
            (presence if row["mode"] == FREE_FORM else rows).append(row)
            if isinstance(tags[uid], Exception):
                fail(row, str(tags[uid]))
                continue
            row["tags"] = list(tags[uid])
            row["tagger_id"] = tagger.model_id
            pending.append({"row": row, "ins": ins})

    requests = [
        {
            "instruction": p["ins"].get("instruction") or "",
            "source_caption": p["ins"].get("source_caption") or "",
            "target_caption": p["ins"].get("target_caption") or "",
            "tags": p["row"]["tags"],
            "edit_type": p["ins"].get("edit_type"),
        }
        for p in pending
    ]
    selections = _each(selector.select_many, requests, "object_selector")

    to_ground: list[dict] = []
    for p, sel in zip(pending, selections, strict=True):
        row = p["row"]
        row["object_selector_id"] = selector.selector_id
        if isinstance(sel, Exception):
            fail(row, f"object_selector: {sel}")
            continue
        assert isinstance(sel, ObjectSelection)
        row["edit_object"], row["selection_reason"] = sel.edit_object, sel.reason or None
        if row["mode"] == FREE_FORM:
            if sel.is_none:
                fail(
                    row,
                    f"{OBJECT_NOT_FOUND}: free-form {row['edit_type'] or 'untyped'} edit of an object, and no object "
                    f"of the image was selected ({sel.reason or 'NONE'})",
                )
            elif not objects_in_tags(sel.objects, row["tags"]):
                # not among the tags: the grounder decides (a tagger misses small or rare objects)
                row["grounding_text"] = grounding_text(sel.objects)
                to_ground.append(row)
            continue
        if sel.is_none:
            whole = full_mask_reason(row["instruction"] or "", row["edit_type"])
            if not whole:
                # a local edit never falls back to a full-image mask
                fail(
                    row,
                    f"{OBJECT_NOT_FOUND}: {row['edit_type'] or 'untyped'} is a local edit and no object of the "
                    f"image was selected ({sel.reason or 'NONE'})",
                )
                continue
            row["selection_reason"] = f"{sel.reason}; {whole}" if sel.reason else whole
            image = pil[row["image_uid"]]
            _fill_masks(row, mm.full_image_masks(image.height, image.width))
            continue
        row["grounding_text"] = grounding_text(sel.objects)
        to_ground.append(row)

    detections = _each(
        lambda rs: grounder.detect([pil[r["image_uid"]] for r in rs], [r["grounding_text"] for r in rs]),
        to_ground,
        "grounder",
    )
    for row, det in zip(to_ground, detections, strict=True):
        if isinstance(det, Exception):
            fail(row, str(det))
            continue
        row["grounder_id"] = grounder.model_id
        if row["mode"] == FREE_FORM:
            if len(det) == 0:
                fail(
                    row,
                    f"{OBJECT_NOT_IN_IMAGE}: {row['edit_object']!r} of a free-form edit is neither among the image's "
                    f"tags nor detected (box threshold {grounder.box_threshold})",
                )
            else:
                row["boxes"] = [[float(v) for v in b] for b in det.boxes]
                row["box_scores"] = [float(s) for s in det.scores]
                row["box_labels"] = list(det.labels)
            continue
        if len(det) == 0:
            objects = [o.strip() for o in row["edit_object"].split(",")]
            if objects_in_tags(objects, row["tags"]):
                fail(
                    row,
                    f"{OBJECT_NOT_FOUND}: no box for {row['grounding_text']!r} above box threshold "
                    f"{grounder.box_threshold}",
                )
            else:
                fail(
                    row,
                    f"{OBJECT_NOT_IN_IMAGE}: {row['edit_object']!r} is neither among the image's tags nor detected "
                    f"(box threshold {grounder.box_threshold})",
                )
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
            fine,
            row["boxes"],
            row["instruction_uid"],
            global_seed,
            qc=qc,
            soft_probability=soft_probability,
            soft_values=soft_values,
        )
        _fill_masks(row, masks)
        if not masks.ok:
            fail(row, f"{MASK_QC}: {masks.qc}")
        elif len(tiles) < PREVIEW_TILES:
            tiles.append(overlay_tile(image, masks.soft, row["boxes"]))
    stats["free_form_checked"] += len(presence)
    stats["free_form_present"] += sum(r["status"] == "ok" for r in presence)
    return rows + [r for r in presence if r["status"] != "ok"], tiles


def _fill_masks(row: dict, masks: mm.RegionMasks) -> None:
    row.update(
        fine_mask=_mask_png(masks.fine),
        hull_mask=_mask_png(masks.hull),
        box_mask=_mask_png(masks.box),
        inner_mask=_mask_png(masks.inner),
        outer_mask=_mask_png(masks.outer),
        soft_mask=_mask_png(masks.soft),
        soft_value=masks.soft_value,
        contour_count=masks.contour_count,
        mask_area_fraction=masks.area_fraction,
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
    for prefix in (OBJECT_NOT_FOUND, OBJECT_NOT_IN_IMAGE, MASK_QC):
        if err.startswith(prefix):
            return prefix
    if err.startswith(("source_images:", "edit_instructions:")):
        return UPSTREAM
    return "model error"


def region_mask_batches(
    lake: Any,
    shard: str,
    *,
    profile: Any,
    global_seed: int,
    tagger: Any,
    selector: Any,
    grounder: Any,
    segmenter: Any,
    stats: Counter | None = None,
) -> Iterator[tuple[list[dict], list[Image.Image]]]:
    """The shard's `region_masks` rows, a batch at a time, with overlay tiles of ok rows: one row per region-mode
    instruction of `edit_instructions`; failed upstream rows and unusable images give failed rows with the reason.
    With `profile.region_masking.free_form_presence`, also a failed row per free-form instruction of a local edit
    whose object is not in the image (see process_images)."""
    rm = profile.region_masking
    qc = mm.MaskQC(rm.min_area, rm.max_area, rm.max_contours, rm.fine_hull_max_contours)
    bad, instructions = instructions_by_image(lake, shard, mode=REGION)
    if rm.free_form_presence:
        # failed free-form instructions need no check: edit_candidates already fails them from edit_instructions
        _, free = instructions_by_image(lake, shard, mode=FREE_FORM)
        for uid, items in free.items():
            local = [i for i in items if presence_required(i.get("instruction") or "", i.get("edit_type"))]
            if local:
                instructions.setdefault(uid, []).extend(local)
    failed_upstream = [fail(base_row(ins, shard, profile.name), f"edit_instructions: {ins['error']}") for ins in bad]
    if failed_upstream:
        yield failed_upstream, []

    group: list[tuple[str, Image.Image]] = []

    def flush() -> tuple[list[dict], list[Image.Image]]:
        out = process_images(
            group,
            instructions,
            shard=shard,
            profile=profile.name,
            global_seed=global_seed,
            qc=qc,
            soft_probability=profile.region.soft_mask_probability,
            soft_values=profile.region.soft_mask_values,
            tagger=tagger,
            selector=selector,
            grounder=grounder,
            segmenter=segmenter,
            stats=stats,
        )
        group.clear()
        return out

    for source in source_images_of(lake, shard, instructions, batch_size=IMAGE_BATCH):
        if source.error:
            yield [fail(base_row(i, shard, profile.name), source.error) for i in instructions[source.uid]], []
            continue
        group.append((source.uid, source.image))
        if len(group) >= IMAGE_BATCH:
            yield flush()
    if group:
        yield flush()
