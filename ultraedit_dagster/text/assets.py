"""Text stage: the seed pool, DALL-E 3-style recaptioning, and LLM / template edit-instruction expansion."""

import dataclasses
import io

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from ultraedit_dagster.core.deploy_tags import GPU_OP_TAGS
from ultraedit_dagster.core.partitions import ShardProgress, materialize_each_shard, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.core.rows import failure_reason
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.sources.manifests import read_shard_manifest, shard_profile
from ultraedit_dagster.sources.rows import is_retryable_error
from ultraedit_dagster.text.resources import CaptionerResource, InstructionWriterResource
from ultraedit_dagster.text.rows import (
    CAPTIONS_SCHEMA,
    EDIT_INSTRUCTIONS_SCHEMA,
    PriorShards,
    apply_hygiene,
    caption_rows,
    instruction_rows,
    read_prior_shards,
    summarize,
)
from ultraedit_dagster.text.seeds import counts_per_type, load_seeds, seeds_from_table, seeds_to_table

SEED_RELPATH = "seed_triplets/data.parquet"
CAPTION_BATCH = 32
PREVIEW_ROWS = 12


def read_seed_pool(lake: Lake):
    """The validated seed pool as materialized by `seed_triplets`."""
    if not lake.has_bytes(SEED_RELPATH):
        raise dg.Failure(
            f"seed_triplets has not been materialized (no {lake.root}/{SEED_RELPATH}); materialize it first"
        )
    return seeds_from_table(pq.read_table(io.BytesIO(lake.read_bytes(SEED_RELPATH))))


def _md_table(rows: list[dict], cols: list[str]) -> str:
    def cell(v) -> str:
        return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")[:160]

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


@dg.asset(group_name="text", kinds={"parquet"})
def seed_triplets(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The human seed pool used in-context by the instruction writer: `source caption; instruction; target caption`
    with an edit type, written for this project (ultraedit_dagster/data/seed_triplets.tsv). Validated on every
    materialization (three non-empty parts, target ≠ source after normalising case and trailing punctuation, ≤ 60
    words per caption, a known edit type, no duplicates); a bad file fails with every bad line number."""
    try:
        seeds = load_seeds()
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    buf = io.BytesIO()
    pq.write_table(seeds_to_table(seeds), buf, compression="zstd")
    uri = lake.lake.write_bytes(SEED_RELPATH, buf.getvalue())
    counts = counts_per_type(seeds)
    return dg.MaterializeResult(
        metadata={
            "rows": len(seeds),
            "counts_per_type": counts,
            "min_per_type": min(counts.values()),
            "lake_uri": dg.MetadataValue.path(uri),
            "preview": dg.MetadataValue.md(
                _md_table(
                    [s.__dict__ for s in seeds[:: max(1, len(seeds) // PREVIEW_ROWS)][:PREVIEW_ROWS]],
                    ["edit_type", "source_caption", "instruction", "target_caption"],
                )
            ),
        }
    )


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=4),
    op_tags=GPU_OP_TAGS,
    pool="gpu",
    deps=["source_images"],
    group_name="text",
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
@retry_transient_only
def captions(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineResource, captioner: CaptionerResource
) -> dg.MaterializeResult:
    """One row per image: the ground-truth caption plus DALL-E 3-style recaptions — `caption_short` (the main
    subject only; cut to 77 CLIP tokens and flagged when longer) and `caption_desc` (subject, surroundings,
    background, visible text, style, colour) — with the captioner id. Failed source rows stay failed rows."""

    def one_shard(shard: str) -> dict:
        captioner.start_shard()
        profile = shard_profile(pipeline.profile, lake.lake, shard).name
        total = failed = truncated = retryable = 0
        reasons: dict[str, int] = {}
        preview: list[dict] = []
        # rows to come: a local Parquet footer; on S3 the shard manifest's count (one source_images row each, a
        # small object), since counting the source_images object there would download its images a second time
        lk = lake.lake
        total = read_shard_manifest(lk, shard).num_rows if lk.is_s3 else lk.num_rows("source_images", shard)
        progress = ShardProgress(context.log, shard, total)
        with lake.lake.open_writer("captions", shard, CAPTIONS_SCHEMA) as writer:
            for batch in lake.lake.iter_batches(
                "source_images",
                shard,
                batch_size=CAPTION_BATCH,
                columns=["uid", "image", "caption_gt", "status", "error"],
            ):
                rows = caption_rows(
                    batch.to_pylist(),
                    shard=shard,
                    profile=profile,
                    captioner_id=captioner.captioner_id,
                    caption_fn=captioner.caption,
                    max_clip_tokens=captioner.max_clip_tokens,
                )
                for r in rows:
                    total += 1
                    truncated += int(bool(r["caption_short_truncated"]))
                    if r["status"] == "failed":
                        failed += 1
                        retryable += is_retryable_error(r["error"])
                        key = failure_reason(r["error"])
                        reasons[key] = reasons.get(key, 0) + 1
                    elif len(preview) < PREVIEW_ROWS:
                        preview.append(r)
                writer.write_table(pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA))
                progress.advance(len(rows))
        return {
            "rows": total,
            "ok": total - failed,
            "failed": failed,
            "retryable": retryable,
            "failure_reasons": reasons,
            "short_truncated": truncated,
            "captioner_id": captioner.captioner_id,
            "profile": profile,
            "lake_uri": dg.MetadataValue.path(lake.lake.shard_uri("captions", shard)),
            "preview": dg.MetadataValue.md(_md_table(preview, ["caption_gt", "caption_short", "caption_desc"])),
        }

    return materialize_each_shard(context, one_shard)


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    deps=["captions", "seed_triplets"],
    group_name="text",
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
@retry_transient_only
def edit_instructions(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    pipeline: PipelineResource,
    instruction_writer: InstructionWriterResource,
) -> dg.MaterializeResult:
    """One row per edit triplet: instruction uid, image uid, the short caption edited, the instruction, the target
    caption, one of the nine UltraEdit edit types, mode (free_form / region, a configured fraction chosen from the
    uid), the LLM id and token counts (a request's tokens split over its triplets, so sums are exact). Duplicate
    instructions per image are removed; near-duplicates within the shard and against every shard with a smaller key
    are flagged (content-word Jaccard ≥ 0.8). With InstructPix2Pix's hygiene on (`one_triplet_per_caption`,
    `one_triplet_per_url`), later triplets of a caption / image URL are failed rows `duplicate: ...`.
    An image without any valid triplet is one failed row saying why (request failed / parse failed / moderation)."""

    def one_shard(shard: str) -> dict:
        instruction_writer.start_shard()
        shard_prof = shard_profile(pipeline.profile, lake.lake, shard)
        profile = shard_prof.name
        settings = instruction_writer.settings()
        if shard_prof is not pipeline.profile:  # a manifest of another recipe: that recipe's share of region edits
            settings = dataclasses.replace(settings, region_fraction=shard_prof.region_fraction)
        caps = lake.lake.read_table(
            "captions", shard, columns=["uid", "caption_short", "caption_desc", "status", "error"]
        )
        seeds = read_seed_pool(lake.lake) if instruction_writer.backend == "openai" else []
        client = instruction_writer.client()
        before = (client.requests_sent, client.retries, client.cache_hits) if client else (0, 0, 0)
        rows, stats = instruction_rows(
            caps.to_pylist(),
            shard=shard,
            profile=profile,
            seeds=seeds,
            global_seed=pipeline.global_seed,
            settings=settings,
            client=client,
        )
        # InstructPix2Pix's hygiene and near-duplicates against the shards with smaller keys (rows.apply_hygiene)
        unique = settings.one_per_caption or settings.one_per_url
        prior = PriorShards()
        if unique or instruction_writer.cross_shard_near_duplicates:
            prior = read_prior_shards(lake.lake, shard)
            if not instruction_writer.cross_shard_near_duplicates:
                prior.instructions = []
        image_uris = {}
        if settings.one_per_url and lake.lake.exists("source_images", shard):
            table = lake.lake.read_table("source_images", shard, columns=["uid", "uri"])
            image_uris = {r["uid"]: r["uri"] for r in table.to_pylist()}
        hygiene = apply_hygiene(rows, settings, image_uris=image_uris, prior=prior)
        uri = lake.lake.write_table(
            "edit_instructions", shard, pa.Table.from_pylist(rows, schema=EDIT_INSTRUCTIONS_SCHEMA)
        )
        summary = summarize(rows)
        summary["retryable"] = sum(is_retryable_error(r["error"]) for r in rows if r["status"] == "failed")
        after = (client.requests_sent, client.retries, client.cache_hits) if client else (0, 0, 0)
        if summary["ok"] == 0:
            context.log.warning(f"edit_instructions {shard}: no ok triplet ({stats.as_metadata()})")
        ok_rows = [r for r in rows if r["status"] == "ok"]
        return {
            **{k: v for k, v in summary.items()},
            **{f"stats_{k}": v for k, v in stats.as_metadata().items()},
            **{f"hygiene_{k}": v for k, v in hygiene.items()},
            "requests_sent": after[0] - before[0],
            "retries": after[1] - before[1],
            "cache_hits": after[2] - before[2],
            "llm_id": instruction_writer.llm_id,
            "profile": profile,
            "lake_uri": dg.MetadataValue.path(uri),
            "preview": dg.MetadataValue.md(
                _md_table(
                    ok_rows[:PREVIEW_ROWS], ["edit_type", "mode", "source_caption", "instruction", "target_caption"]
                )
            ),
        }

    return materialize_each_shard(context, one_shard)


assets = [seed_triplets, captions, edit_instructions]
