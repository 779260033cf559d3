"""Edit-candidate rows (docs/method.md §3-4): candidate source/target image pairs per edit triplet (free-form and
region). The schema and Dagster-free row building; the editor comes in as an argument.

Rows are produced by the fused generate-and-score step (`rounds`, docs/method.md §8): every generated candidate has a
row (parameters, round, typed outcome), but image bytes only where `image_kept` says why (selected, selectable, audit).

`source_mode = real` (profile FreeFormGen): the stored source image is the real photo, not the regenerated one. The
target is still generated under P2P from the regenerated source (that is what its attention follows). Trade-off: the
source is a faithful photo and carries no generation artefacts, but the pair is no longer two outputs of the same
generator, so everything the generator changes besides the edit (texture, colour cast, VAE softening) shows up as a
difference between source and target, and CLIP-image / DINO / SSIM scores drop accordingly; UltraEdit released
regenerated sources (docs/method.md §3). Free-form only: region rows keep the regenerated source.
"""

import os
from typing import Any

import pyarrow as pa

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.core.rows import instructions_by_image, mark_failed
from ultraedit_dagster.editing.params import REGION
from ultraedit_dagster.regions.object_selection import presence_required

ASSET = "edit_candidates"

EDIT_CANDIDATES_SCHEMA = pa.schema(
    [
        ("candidate_uid", pa.string()),
        ("candidate_index", pa.int64()),
        ("instruction_uid", pa.string()),
        ("image_uid", pa.string()),
        ("shard", pa.string()),
        ("mode", pa.string()),
        ("edit_type", pa.string()),
        ("instruction", pa.string()),
        ("source_caption", pa.string()),
        ("target_caption", pa.string()),
        ("source_image", pa.binary()),
        ("target_image", pa.binary()),
        ("mask_image", pa.binary()),
        ("source_is_real", pa.bool_()),
        ("seed", pa.int64()),
        ("p", pa.float64()),
        ("steps", pa.int64()),
        ("strength", pa.float64()),
        ("guidance", pa.float64()),
        ("soft_value", pa.float64()),
        ("editor_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("profile", pa.string()),
        ("round", pa.int64()),
        ("outcome", pa.string()),
        ("image_kept", pa.string()),  # selected / selectable / audit; null: the images were not kept
        # the generation recipe, its version and the generator choices it ran with (docs/method.md §12)
        ("recipe", pa.string()),
        ("recipe_version", pa.string()),
        ("recipe_options", pa.string()),
    ]
)


def candidate_uid(instruction_uid: str, index: int) -> str:
    return make_uid(instruction_uid, "candidate", index)


def base_row(ins: dict, shard: str, profile: str, editor_id: str, index: int = 0) -> dict:
    row = {name: None for name in EDIT_CANDIDATES_SCHEMA.names}
    row.update(
        candidate_uid=candidate_uid(ins["instruction_uid"], index),
        candidate_index=index,
        instruction_uid=ins["instruction_uid"],
        image_uid=ins["image_uid"],
        shard=shard,
        mode=ins["mode"],
        edit_type=ins["edit_type"],
        instruction=ins["instruction"],
        source_caption=ins["source_caption"],
        target_caption=ins["target_caption"],
        source_is_real=False,
        editor_id=editor_id,
        profile=profile,
        status="ok",
    )
    return row


def fail(row: dict, error: str) -> dict:
    return mark_failed(row, error, clear=("source_image", "target_image"))


def load_work(lake: Any, shard: str, profile: Any, editor_id: str) -> tuple[list[dict], dict[str, list[dict]], dict]:
    """What the shard asks for: (failed rows for instructions that cannot be generated, with the reason; the
    generatable instructions by image uid; the region_masks rows by instruction uid). Failed upstream rows, region
    instructions without a usable mask and a region_masks shard not yet materialized give failed rows; so does a
    free-form instruction that region_masks failed (its object is not in the image, docs/method.md §4), and with the
    profile's `free_form_presence` one of a local edit whose check has not run."""
    bad, instructions = instructions_by_image(lake, shard)
    failed_upstream = [
        fail(base_row(ins, shard, profile.name, editor_id), f"edit_instructions: {ins['error']}") for ins in bad
    ]

    masks: dict[str, dict] = {}
    has_masks = lake.exists("region_masks", shard)
    if has_masks:
        mcols = ["instruction_uid", "soft_mask", "soft_value", "inner_mask", "outer_mask", "qc", "status", "error"]
        for batch in lake.iter_batches("region_masks", shard, batch_size=256, columns=mcols):
            for m in batch.to_pylist():
                masks[m["instruction_uid"]] = m
    check_presence = profile.region_masking.free_form_presence
    for uid in list(instructions):
        keep = []
        for ins in instructions[uid]:
            m = masks.get(ins["instruction_uid"])
            if ins["mode"] != REGION:
                if m is not None and m["status"] != "ok":
                    err = f"region_masks: {m['error']}"
                elif not has_masks and check_presence and presence_required(ins["instruction"] or "", ins["edit_type"]):
                    err = "region_masks: shard not materialized yet, the object's presence is not checked"
                else:
                    keep.append(ins)
                    continue
            elif not has_masks:
                err = "region_masks: shard not materialized yet, no mask for this region instruction"
            elif m is None:
                err = "region_masks: no mask row for this region instruction"
            elif m["status"] != "ok" or not m["soft_mask"]:
                err = f"region_masks: {m['error'] or m['qc'] or 'no soft mask'}"
            else:
                keep.append(ins)
                continue
            failed_upstream.append(fail(base_row(ins, shard, profile.name, editor_id), err))
        instructions[uid] = keep
    return failed_upstream, instructions, masks


def shard_bytes(lake: Any, asset: str, shard: str) -> int:
    """The size in bytes of one shard file of the lake (local file or S3 object)."""
    from ultraedit_dagster.lake.store import shard_relpath

    relpath = shard_relpath(asset, shard)
    if lake.is_s3:
        return int(lake.s3_client.head_object(Bucket=lake.bucket, Key=lake._key(relpath))["ContentLength"])
    return os.path.getsize(os.path.join(lake.root, relpath))
