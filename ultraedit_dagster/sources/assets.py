"""Stage 0: real images from the shard manifest, normalised to 512x512 RGB PNG."""

import dagster as dg
import pyarrow as pa

from ultraedit_dagster.core.imaging import decode_png, thumbnail_grid
from ultraedit_dagster.core.partitions import ShardProgress, materialize_each_shard, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.core.rows import failure_reason
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.sources.manifests import read_shard_manifest
from ultraedit_dagster.sources.rows import SOURCE_IMAGES_SCHEMA, FetchBreaker, is_retryable_error, process_row

WRITE_BATCH = 32
PREVIEW_IMAGES = 8


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    group_name="sources",
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
@retry_transient_only
def source_images(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.MaterializeResult:
    """One row per manifest row: the image loaded from its path / file:// / s3:// URI, EXIF-rotated, converted to RGB,
    short side resized to 512 and centre-cropped, stored as PNG with uid, original URI, caption_gt, source and licence.
    A row that cannot be used (missing file, zero bytes, truncated or non-image data, decompression bomb, too small,
    empty caption) is kept as a `failed` row with the reason in `error`. S3 fetches are retried with backoff; a row
    still failing for a transient reason is marked retryable (`retryable: ...`), and after a run of such rows the
    shard's breaker fails the rest at once, so `ultraedit backfill --failed` redoes the shard when the store is back."""

    def one_shard(shard: str) -> dict:
        manifest = read_shard_manifest(lake.lake, shard).to_pylist()
        profile = pipeline.profile.name
        rows_total = failed = retryable = 0
        breaker = FetchBreaker()
        progress = ShardProgress(context.log, shard, len(manifest))
        preview = []
        reasons: dict[str, int] = {}
        with lake.lake.open_writer("source_images", shard, SOURCE_IMAGES_SCHEMA) as writer:
            for start in range(0, len(manifest), WRITE_BATCH):
                batch = [
                    process_row(
                        row,
                        shard=shard,
                        profile=profile,
                        size=pipeline.image_size,
                        min_side=pipeline.min_image_side,
                        max_pixels=pipeline.max_image_pixels,
                        allowed_prefixes=pipeline.allowed_uri_prefixes,
                        s3_client_factory=lake.s3_client,
                        breaker=breaker,
                    )
                    for row in manifest[start : start + WRITE_BATCH]
                ]
                for row in batch:
                    rows_total += 1
                    if row["status"] == "failed":
                        failed += 1
                        retryable += is_retryable_error(row["error"])
                        reason = failure_reason(row["error"])
                        reasons[reason] = reasons.get(reason, 0) + 1
                        context.log.warning(f"source_images {row['uid']} ({row['uri']}) failed: {row['error']}")
                    elif len(preview) < PREVIEW_IMAGES:
                        preview.append(decode_png(row["image"]))
                writer.write_table(pa.Table.from_pylist(batch, schema=SOURCE_IMAGES_SCHEMA))
                progress.advance(len(batch))
        return {
            "rows": rows_total,
            "ok": rows_total - failed,
            "failed": failed,
            "retryable": retryable,
            "failure_reasons": reasons,
            "lake_uri": dg.MetadataValue.path(lake.lake.shard_uri("source_images", shard)),
            "profile": profile,
            # the preview grid is a file in the lake; the metadata embeds a bounded thumbnail and links the file
            **lake.preview_metadata("source_images", shard, thumbnail_grid(preview), f"{shard} source images"),
        }

    return materialize_each_shard(context, one_shard)


assets = [source_images]
