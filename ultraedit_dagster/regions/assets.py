"""Region stage: one `region_masks` row per region-mode edit instruction (docs/method.md §4)."""

from collections import Counter

import dagster as dg
import pyarrow as pa
from PIL import Image

from ultraedit_dagster.core.deploy_tags import GPU_OP_TAGS
from ultraedit_dagster.core.imaging import thumbnail_grid
from ultraedit_dagster.core.partitions import materialize_each_shard, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.regions.resources import (
    GrounderResource,
    ObjectSelectorResource,
    SegmenterResource,
    TaggerResource,
)
from ultraedit_dagster.regions.rows import (
    ASSET,
    FREE_FORM,
    PREVIEW_TILES,
    REGION_MASKS_SCHEMA,
    outcome,
    region_mask_batches,
)
from ultraedit_dagster.sources.manifests import shard_profile


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
@retry_transient_only
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
    With the profile's `free_form_presence` (the `ultraedit` profile), free-form instructions of local edits are
    checked too: one whose object is not in the image is a failed row with `mode` free_form (`object_not_in_image`),
    which edit_candidates does not generate; present ones get no row (docs/method.md §4)."""

    def one_shard(shard: str) -> dict:
        lk = lake.lake
        all_rows: list[dict] = []
        tiles: list[Image.Image] = []
        presence: Counter = Counter()
        with lk.open_writer(ASSET, shard, REGION_MASKS_SCHEMA) as writer:
            for rows, new_tiles in region_mask_batches(
                lk,
                shard,
                profile=shard_profile(pipeline.profile, lk, shard),
                global_seed=pipeline.global_seed,
                tagger=tagger,
                selector=object_selector,
                grounder=grounder,
                segmenter=segmenter,
                stats=presence,
            ):
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=REGION_MASKS_SCHEMA))
                all_rows.extend(
                    {k: r[k] for k in ("status", "error", "edit_object", "qc", "instruction_uid", "mode")} for r in rows
                )
                tiles.extend(new_tiles[: max(0, PREVIEW_TILES - len(tiles))])

        counts = Counter(outcome(r) for r in all_rows)
        ok = sum(1 for r in all_rows if r["status"] == "ok")
        reasons = Counter((r["error"] or "")[:80] for r in all_rows if r["status"] != "ok")
        if not all_rows:
            context.log.info(f"shard {shard}: no region-mode instructions")
        elif ok == 0:
            context.log.warning(f"shard {shard}: no region row passed; top reasons: {reasons.most_common(3)}")
        preview = (  # a file in the lake, linked; the metadata embeds a bounded thumbnail
            lake.preview_metadata(ASSET, shard, thumbnail_grid(tiles, columns=4, thumb=160), "mask overlays")
            if tiles
            else {"preview": dg.MetadataValue.md("(no ok region rows with masks)")}
        )
        return {
            "rows": len(all_rows),
            "ok": ok,
            "failed": len(all_rows) - ok,
            "outcomes": dg.MetadataValue.json(dict(counts)),
            "top_errors": dg.MetadataValue.json(dict(reasons.most_common(10))),
            "free_form_presence": pipeline.profile.region_masking.free_form_presence,
            "free_form_checked": presence["free_form_checked"],
            "free_form_present": presence["free_form_present"],
            "free_form_outcomes": dg.MetadataValue.json(
                dict(Counter(outcome(r) for r in all_rows if r["mode"] == FREE_FORM))
            ),
            "lake_uri": lk.shard_uri(ASSET, shard),
            **preview,
        }

    return materialize_each_shard(context, one_shard)


assets = [region_masks]
