"""Editing stage: candidate source/target image pairs per edit triplet, free-form and region (docs/method.md §3-4)."""

from collections import Counter

import dagster as dg
import pyarrow as pa
from PIL import Image

from ultraedit_dagster.core.deploy_tags import GPU_OP_TAGS
from ultraedit_dagster.core.imaging import markdown_image, thumbnail_grid
from ultraedit_dagster.core.partitions import materialize_each_shard, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rows import ASSET, EDIT_CANDIDATES_SCHEMA, GenerationStats, candidate_batches
from ultraedit_dagster.lake.resources import LakeResource


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
@retry_transient_only
def edit_candidates(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    pipeline: PipelineResource,
    editor: EditorResource,
) -> dg.MaterializeResult:
    """One row per candidate source/target pair (docs/method.md §3-4). Free-form: SDXL-Turbo img2img from the real
    image's noised latent, the source regenerated with the source caption and the target with the target caption from
    the same latent, tied by Prompt-to-Prompt (self-attention injection for the first p of the steps, cross-attention
    refine on aligned tokens). Region: the same with the inpainting-style loop (plain and masked steps alternate; the
    soft mask keeps the real image outside). Per candidate, seed / steps / guidance / p are drawn from the candidate
    uid and the global seed. Failures (NaN or blank output, out of memory after a half-size retry, a missing mask,
    failed upstream rows) are rows with the reason."""

    def one_shard(shard: str) -> dict:
        lk = lake.lake
        rows_out: list[dict] = []  # small per-row summaries for metadata
        preview: list[Image.Image] = []
        stats = GenerationStats()
        with lk.open_writer(ASSET, shard, EDIT_CANDIDATES_SCHEMA) as writer:
            for rows, images in candidate_batches(
                lk, shard, profile=pipeline.profile, global_seed=pipeline.global_seed, editor=editor, stats=stats
            ):
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=EDIT_CANDIDATES_SCHEMA))
                    rows_out.extend({"status": r["status"], "error": r["error"], "mode": r["mode"]} for r in rows)
                preview.extend(images)

        ok = sum(1 for r in rows_out if r["status"] == "ok")
        reasons = Counter((r["error"] or "")[:100] for r in rows_out if r["status"] != "ok")
        by_mode = Counter(f"{r['mode']}:{r['status']}" for r in rows_out)
        if rows_out and ok == 0:
            context.log.warning(f"shard {shard}: no candidate generated; top reasons: {reasons.most_common(3)}")
        grid = (
            markdown_image(thumbnail_grid(preview, columns=2, thumb=192), alt="source | target")
            if preview
            else "(no ok candidates)"
        )
        return {
            "rows": len(rows_out),
            "ok": ok,
            "failed": len(rows_out) - ok,
            "by_mode_status": dg.MetadataValue.json(dict(by_mode)),
            "candidates_per_second": round(stats.generated / stats.seconds, 3) if stats.seconds else 0.0,
            "generation_seconds": round(stats.seconds, 2),
            "oom_retries": stats.oom_retries,
            "editor_id": editor.editor_id,
            "top_errors": dg.MetadataValue.json(dict(reasons.most_common(10))),
            "lake_uri": lk.shard_uri(ASSET, shard),
            "preview": dg.MetadataValue.md("source | target\n\n" + grid),
        }

    return materialize_each_shard(context, one_shard)


assets = [edit_candidates]
