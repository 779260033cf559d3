"""Edit-candidate rows (docs/method.md §3-4): candidate source/target image pairs per edit triplet (free-form and
region). The schema and Dagster-free row building; the editor comes in as an argument.

Rows are streamed: instructions (text only) are indexed by image, source images are read a few at a time, and the
candidates of several images are generated together (the editor batches across triplets, grouped by the schedule
they share) and written as row groups as soon as they are done.

`source_mode = real` (profile FreeFormGen): the stored source image is the real photo, not the regenerated one. The
target is still generated under P2P from the regenerated source (that is what its attention follows). Trade-off: the
source is a faithful photo and carries no generation artefacts, but the pair is no longer two outputs of the same
generator, so everything the generator changes besides the edit (texture, colour cast, VAE softening) shows up as a
difference between source and target, and CLIP-image / DINO / SSIM scores drop accordingly; UltraEdit released
regenerated sources (docs/method.md §3). Free-form only: region rows keep the regenerated source.
"""

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from PIL import Image

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.core.imaging import decode_png, encode_png
from ultraedit_dagster.core.rows import mark_failed, source_images_of
from ultraedit_dagster.editing.generation import FREE_FORM, REGION, PairRequest, draw_params, load_mask

ASSET = "edit_candidates"
IMAGE_BATCH = 8  # source images read per lake batch
PREVIEW_PAIRS = 4

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


@dataclass
class GenerationStats:
    generated: int = 0
    seconds: float = 0.0
    oom_retries: int = 0


def candidate_batches(
    lake: Any,
    shard: str,
    *,
    profile: Any,
    global_seed: int,
    editor: Any,
    stats: GenerationStats,
    preview_pairs: int = PREVIEW_PAIRS,
) -> Iterator[tuple[list[dict], list[Image.Image]]]:
    """The shard's `edit_candidates` rows, a batch at a time, with preview images (source, target, ...) of the first
    `preview_pairs` ok pairs.
    Instructions (text only) are indexed by image, source images are read a few at a time, and the candidates of
    several images are generated together; failed upstream rows, missing masks and unusable images give failed
    rows with the reason. `stats` receives the generation counts and seconds."""
    editor_id = editor.editor_id
    ff, rg = profile.free_form, profile.region
    source_real = ff.source_mode == "real"
    failed_upstream: list[dict] = []
    instructions: dict[str, list[dict]] = defaultdict(list)
    cols = [
        "instruction_uid",
        "image_uid",
        "instruction",
        "source_caption",
        "target_caption",
        "edit_type",
        "mode",
        "status",
        "error",
    ]
    for batch in lake.iter_batches("edit_instructions", shard, batch_size=1024, columns=cols):
        for ins in batch.to_pylist():
            if ins["status"] != "ok":
                failed_upstream.append(
                    fail(base_row(ins, shard, profile.name, editor_id), f"edit_instructions: {ins['error']}")
                )
            else:
                instructions[ins["image_uid"]].append(ins)

    # region masks: the soft mask per region instruction
    masks: dict[str, dict] = {}
    has_masks = lake.exists("region_masks", shard)
    if has_masks:
        mcols = ["instruction_uid", "soft_mask", "soft_value", "qc", "status", "error"]
        for batch in lake.iter_batches("region_masks", shard, batch_size=256, columns=mcols):
            for m in batch.to_pylist():
                masks[m["instruction_uid"]] = m
    for uid in list(instructions):
        keep = []
        for ins in instructions[uid]:
            if ins["mode"] != REGION:
                keep.append(ins)
                continue
            m = masks.get(ins["instruction_uid"])
            if not has_masks:
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
    if failed_upstream:
        yield failed_upstream, []

    wanted = [uid for uid, ins_list in instructions.items() if ins_list]
    if not wanted:
        return
    gen = editor.generator()
    requests: list[PairRequest] = []
    meta: dict[str, dict] = {}  # candidate uid -> its row (images filled after generation)
    flush_at = max(64, 4 * editor.batch_size)
    previews_left = 2 * preview_pairs

    def flush() -> tuple[list[dict], list[Image.Image]]:
        nonlocal previews_left
        t0 = time.perf_counter()
        results = gen.generate(requests)
        stats.seconds += time.perf_counter() - t0
        stats.generated += len(results)
        stats.oom_retries = gen.stats.oom_retries
        out, preview = [], []
        for req, res in zip(requests, results, strict=True):
            row = meta.pop(req.uid)
            if not res.ok:
                out.append(fail(row, f"edit_candidates: {res.error}"))
                continue
            if not row["source_is_real"]:
                row["source_image"] = encode_png(res.source)
            row["target_image"] = encode_png(res.target)
            out.append(row)
            if previews_left > 0:
                preview.extend([res.source if not row["source_is_real"] else req.image, res.target])
                previews_left -= 2
        requests.clear()
        return out, preview

    for source in source_images_of(lake, shard, wanted, batch_size=IMAGE_BATCH):
        if source.error:
            yield (
                [fail(base_row(i, shard, profile.name, editor_id), source.error) for i in instructions[source.uid]],
                [],
            )
            continue
        image = source.image
        for ins in instructions[source.uid]:
            region = ins["mode"] == REGION
            settings = rg if region else ff
            mask = mask_png = None
            soft_value = None
            if region:
                m = masks[ins["instruction_uid"]]
                mask_png, soft_value = m["soft_mask"], m["soft_value"]
                try:
                    mask = load_mask(decode_png(mask_png), image.size[0])
                except Exception as exc:  # noqa: BLE001
                    yield (
                        [
                            fail(
                                base_row(ins, shard, profile.name, editor_id),
                                f"region_masks: undecodable soft mask: {exc}",
                            )
                        ],
                        [],
                    )
                    continue
            for k in range(settings.candidates_per_triplet):
                row = base_row(ins, shard, profile.name, editor_id, k)
                params = draw_params(global_seed, row["candidate_uid"], ins["mode"], settings)
                row.update(
                    seed=params.seed,
                    p=params.p,
                    steps=params.steps,
                    strength=params.strength,
                    guidance=params.guidance,
                    soft_value=soft_value,
                    mask_image=mask_png,
                )
                if source_real and not region:
                    row["source_is_real"] = True
                    row["source_image"] = source.png
                meta[row["candidate_uid"]] = row
                requests.append(
                    PairRequest(
                        uid=row["candidate_uid"],
                        mode=REGION if region else FREE_FORM,
                        image=image,
                        source_caption=ins["source_caption"],
                        target_caption=ins["target_caption"],
                        params=params,
                        mask=mask,
                        image_key=source.uid,
                    )
                )
        if len(requests) >= flush_at:
            yield flush()
    if requests:
        yield flush()
