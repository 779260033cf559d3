"""Stage II/III generation: candidate source/target image pairs per edit triplet (free-form and region).

Rows are streamed: instructions (text only) are indexed by image, source images are read a few at a time, and the
candidates of several images are generated together (the editor batches across triplets, grouped by the schedule
they share) and written as row groups as soon as they are done.

`source_mode = real` (profile FreeFormGen): the stored source image is the real photo, not the regenerated one. The
target is still generated under P2P from the regenerated source (that is what its attention follows). Trade-off: the
source is a faithful photo and carries no generation artefacts, but the pair is no longer two outputs of the same
generator, so everything the generator changes besides the edit (texture, colour cast, VAE softening) shows up as a
difference between source and target, and CLIP-image / DINO / SSIM scores drop accordingly; UltraEdit released
regenerated sources (reference.md §3). Free-form only: region rows keep the regenerated source.
"""


import io
import time
from collections import Counter, defaultdict

import pyarrow as pa
from PIL import Image

import dagster as dg

from ..generation import FREE_FORM, REGION, PairRequest, draw_params, load_mask
from ..ids import make_uid
from ..imaging import decode_png, encode_png, markdown_image, thumbnail_grid
from ..partitions import shards
from ..deploy_tags import GPU_OP_TAGS
from ..retries import TRANSIENT_RETRY_POLICY
from ..resources.editor import EditorResource
from ..resources.pipeline import PipelineResource
from ..resources.storage import LakeResource

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
    row.update(status="failed", error=error, source_image=None, target_image=None)
    return row


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=2),
    op_tags=GPU_OP_TAGS,
    deps=["source_images", "edit_instructions", "region_masks"],
    group_name="generation",
    kinds={"parquet", "pytorch"},
    pool="gpu",
    automation_condition=dg.AutomationCondition.eager(),
)
def edit_candidates(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    pipeline: PipelineResource,
    editor: EditorResource,
) -> dg.MaterializeResult:
    """One row per candidate source/target pair (reference.md §3-4). Free-form: SDXL-Turbo img2img from the real
    image's noised latent, the source regenerated with the source caption and the target with the target caption from
    the same latent, tied by Prompt-to-Prompt (self-attention injection for the first p of the steps, cross-attention
    refine on aligned tokens). Region: the same with the inpainting-style loop (plain and masked steps alternate; the
    soft mask keeps the real image outside). Per candidate, seed / steps / guidance / p are drawn from the candidate
    uid and the global seed. Failures (NaN or blank output, out of memory after a half-size retry, a missing mask,
    failed upstream rows) are rows with the reason."""
    shard = context.partition_key
    profile = pipeline.profile
    lk = lake.lake
    editor_id = editor.editor_id
    ff, rg = profile.free_form, profile.region
    source_real = ff.source_mode == "real"

    rows_out: list[dict] = []  # small per-row summaries for metadata
    pending_fail: list[dict] = []
    instructions: dict[str, list[dict]] = defaultdict(list)
    cols = ["instruction_uid", "image_uid", "instruction", "source_caption", "target_caption", "edit_type", "mode",
            "status", "error"]
    for batch in lk.iter_batches("edit_instructions", shard, batch_size=1024, columns=cols):
        for ins in batch.to_pylist():
            if ins["status"] != "ok":
                pending_fail.append(fail(base_row(ins, shard, profile.name, editor_id),
                                         f"edit_instructions: {ins['error']}"))
            else:
                instructions[ins["image_uid"]].append(ins)

    # region masks: the soft mask per region instruction
    masks: dict[str, dict] = {}
    has_masks = lk.exists("region_masks", shard)
    if has_masks:
        mcols = ["instruction_uid", "soft_mask", "soft_value", "qc", "status", "error"]
        for batch in lk.iter_batches("region_masks", shard, batch_size=256, columns=mcols):
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
            pending_fail.append(fail(base_row(ins, shard, profile.name, editor_id), err))
        instructions[uid] = keep

    gen = editor.generator() if any(instructions.values()) else None
    preview: list[Image.Image] = []
    gen_seconds = 0.0
    generated = 0

    def write(writer, rows: list[dict]) -> None:
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=EDIT_CANDIDATES_SCHEMA))
            rows_out.extend({"status": r["status"], "error": r["error"], "mode": r["mode"]} for r in rows)

    with lk.open_writer(ASSET, shard, EDIT_CANDIDATES_SCHEMA) as writer:
        write(writer, pending_fail)
        requests: list[PairRequest] = []
        meta: dict[str, dict] = {}  # candidate uid -> its row (images filled after generation)
        flush_at = max(64, 4 * editor.batch_size)

        def flush() -> None:
            nonlocal gen_seconds, generated
            if not requests:
                return
            t0 = time.perf_counter()
            results = gen.generate(requests)
            gen_seconds += time.perf_counter() - t0
            generated += len(results)
            out = []
            for req, res in zip(requests, results, strict=True):
                row = meta.pop(req.uid)
                if not res.ok:
                    out.append(fail(row, f"edit_candidates: {res.error}"))
                    continue
                if not row["source_is_real"]:
                    row["source_image"] = encode_png(res.source)
                row["target_image"] = encode_png(res.target)
                out.append(row)
                if len(preview) < 2 * PREVIEW_PAIRS:
                    src = res.source if not row["source_is_real"] else req.image
                    preview.extend([src, res.target])
            write(writer, out)
            requests.clear()

        seen: set[str] = set()
        if any(instructions.values()):
            for batch in lk.iter_batches("source_images", shard, batch_size=IMAGE_BATCH,
                                         columns=["uid", "image", "status", "error"]):
                for img_row in batch.to_pylist():
                    uid = img_row["uid"]
                    if not instructions.get(uid) or uid in seen:
                        continue
                    seen.add(uid)
                    error = None
                    if img_row["status"] != "ok" or not img_row["image"]:
                        error = f"source_images: {img_row['error'] or 'no image'}"
                    else:
                        try:
                            image = Image.open(io.BytesIO(img_row["image"])).convert("RGB")
                        except Exception as exc:  # noqa: BLE001 - recorded in the rows
                            error = f"source_images: undecodable image: {exc}"
                    if error:
                        write(writer, [fail(base_row(i, shard, profile.name, editor_id), error)
                                       for i in instructions[uid]])
                        continue
                    for ins in instructions[uid]:
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
                                write(writer, [fail(base_row(ins, shard, profile.name, editor_id),
                                                    f"region_masks: undecodable soft mask: {exc}")])
                                continue
                        for k in range(settings.candidates_per_triplet):
                            row = base_row(ins, shard, profile.name, editor_id, k)
                            params = draw_params(pipeline.global_seed, row["candidate_uid"], ins["mode"], settings)
                            row.update(seed=params.seed, p=params.p, steps=params.steps, strength=params.strength,
                                       guidance=params.guidance, soft_value=soft_value, mask_image=mask_png)
                            if source_real and not region:
                                row["source_is_real"] = True
                                row["source_image"] = img_row["image"]
                            meta[row["candidate_uid"]] = row
                            requests.append(PairRequest(
                                uid=row["candidate_uid"], mode=REGION if region else FREE_FORM, image=image,
                                source_caption=ins["source_caption"], target_caption=ins["target_caption"],
                                params=params, mask=mask, image_key=uid,
                            ))
                    if len(requests) >= flush_at:
                        flush()
            flush()
        missing = [fail(base_row(i, shard, profile.name, editor_id), f"source_images: image {uid} not in the shard")
                   for uid, ins_list in instructions.items() if ins_list and uid not in seen for i in ins_list]
        write(writer, missing)

    ok = sum(1 for r in rows_out if r["status"] == "ok")
    reasons = Counter((r["error"] or "")[:100] for r in rows_out if r["status"] != "ok")
    by_mode = Counter(f"{r['mode']}:{r['status']}" for r in rows_out)
    if rows_out and ok == 0:
        context.log.warning(f"shard {shard}: no candidate generated; top reasons: {reasons.most_common(3)}")
    grid = (markdown_image(thumbnail_grid(preview, columns=2, thumb=192), alt="source | target")
            if preview else "(no ok candidates)")
    stats = gen.stats if gen is not None else None
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows_out),
            "ok": ok,
            "failed": len(rows_out) - ok,
            "by_mode_status": dg.MetadataValue.json(dict(by_mode)),
            "candidates_per_second": round(generated / gen_seconds, 3) if gen_seconds else 0.0,
            "generation_seconds": round(gen_seconds, 2),
            "oom_retries": stats.oom_retries if stats else 0,
            "editor_id": editor_id,
            "top_errors": dg.MetadataValue.json(dict(reasons.most_common(10))),
            "lake_uri": lk.shard_uri(ASSET, shard),
            "preview": dg.MetadataValue.md("source | target\n\n" + grid),
        }
    )


assets = [edit_candidates]
