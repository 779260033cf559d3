"""Checks on `edit_candidates`: row integrity (SQL in an in-memory DuckDB, values bound) and the failure rate.

`edit_candidates` is one of the two assets of the fused generate-and-score multi-asset, so the checks target its key."""

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ultraedit_dagster.core.partitions import check_each_shard
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.editing.assets import edit_candidates
from ultraedit_dagster.editing.rows import ASSET, EDIT_CANDIDATES_SCHEMA
from ultraedit_dagster.lake.resources import LakeResource

# each query counts violating rows; the names are ours, no untrusted text reaches the SQL
INTEGRITY_SQL = {
    "bad_status": "SELECT count(*) FROM t WHERE status IS NULL OR status NOT IN ('ok', 'failed')",
    "ok_with_error_or_failed_without": (
        "SELECT count(*) FROM t WHERE (status = 'ok' AND error IS NOT NULL) OR (status = 'failed' AND error IS NULL)"
    ),
    # images exist exactly where `image_kept` says why (docs/method.md §8): selected / selectable / audit
    "kept_without_images": (
        "SELECT count(*) FROM t WHERE image_kept IS NOT NULL "
        "AND (coalesce(source_image, 0) = 0 OR coalesce(target_image, 0) = 0)"
    ),
    "images_without_reason": (
        "SELECT count(*) FROM t WHERE image_kept IS NULL AND (source_image IS NOT NULL OR target_image IS NOT NULL)"
    ),
    "selected_without_images": (
        "SELECT count(*) FROM t WHERE outcome = 'selected' AND image_kept IS DISTINCT FROM 'selected'"
    ),
    "failed_with_images": "SELECT count(*) FROM t WHERE status = 'failed' AND image_kept IS NOT NULL",
    "missing_outcome": "SELECT count(*) FROM t WHERE outcome IS NULL",
    # ip2p (docs/method.md §12) has no region loop: its region rows are text-to-image pairs without a mask
    "region_ok_without_mask": "SELECT count(*) FROM t WHERE status = 'ok' AND mode = 'region' AND mask_image IS NULL"
    " AND recipe IS DISTINCT FROM 'ip2p'",
    "free_form_with_mask": "SELECT count(*) FROM t WHERE mode = 'free_form' AND mask_image IS NOT NULL",
    "no_denoising_step": "SELECT count(*) FROM t WHERE status = 'ok' AND floor(steps * strength + 1e-9) < 1",
    "p_out_of_range": "SELECT count(*) FROM t WHERE status = 'ok' AND (p < 0 OR p > 1)",
    "duplicate_candidate_uid": "SELECT count(*) - count(DISTINCT candidate_uid) FROM t",
    "wrong_shard": "SELECT count(*) FROM t WHERE shard IS DISTINCT FROM ?",
}
SCALARS = ["candidate_uid", "shard", "mode", "status", "error", "steps", "strength", "p", "outcome", "image_kept"]
SCALARS += ["recipe"]  # null in shards written before recipes were recorded
IMAGES = ["source_image", "target_image", "mask_image"]


def _connection(lake: LakeResource, shard: str) -> duckdb.DuckDBPyConnection:
    """The shard as table `t`, streamed, with each image column replaced by its byte length (null stays null), so
    a shard of tens of thousands of image pairs is never held in memory."""
    parts = []
    for batch in lake.lake.iter_batches(ASSET, shard, batch_size=256, columns=SCALARS + IMAGES):
        names = batch.schema.names
        arrays = [batch.column(c) if c in names else pa.nulls(batch.num_rows, pa.string()) for c in SCALARS]
        arrays += [pc.binary_length(batch.column(c)) for c in IMAGES]
        parts.append(pa.RecordBatch.from_arrays(arrays, names=SCALARS + IMAGES))
    if parts:
        table = pa.Table.from_batches(parts)
    else:  # an empty shard: the same columns, no rows
        fields = [EDIT_CANDIDATES_SCHEMA.field(c) for c in SCALARS] + [pa.field(c, pa.int32()) for c in IMAGES]
        table = pa.schema(fields).empty_table()
    con = duckdb.connect()
    con.register("t", table)
    return con


@dg.asset_check(
    asset=edit_candidates,
    blocking=True,
    description="Statuses and errors agree, images exist exactly on rows kept for a reason (selected, selectable, "
    "audit) and every selected row has them, every row has an outcome, region rows their mask, "
    "steps x strength >= 1, p in [0, 1], unique candidate uids.",
)
def edit_candidates_integrity(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: integrity_result(lake, shard))


def integrity_result(lake: LakeResource, shard: str) -> dg.AssetCheckResult:
    con = _connection(lake, shard)
    counts = {}
    for name, sql in INTEGRITY_SQL.items():
        params = [shard] if "?" in sql else []
        counts[name] = int(con.execute(sql, params).fetchone()[0])
    rows = int(con.execute("SELECT count(*) FROM t").fetchone()[0])
    bad = {k: v for k, v in counts.items() if v}
    return dg.AssetCheckResult(passed=not bad, metadata={"rows": rows, "violations": dg.MetadataValue.json(counts)})


@dg.asset_check(
    asset=edit_candidates,
    blocking=False,
    description="The share of failed candidates stays below the pipeline's max_failed_fraction.",
)
def edit_candidates_failure_rate(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        con = _connection(lake, shard)
        rows, failed = con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'failed') FROM t").fetchone()
        reasons = con.execute(
            "SELECT substr(error, 1, 80) AS reason, count(*) AS n FROM t WHERE status = 'failed' "
            "GROUP BY reason ORDER BY n DESC LIMIT 5"
        ).fetchall()
        fraction = failed / rows if rows else 0.0
        return dg.AssetCheckResult(
            passed=fraction <= pipeline.max_failed_fraction,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rows": rows,
                "failed": failed,
                "failed_fraction": round(fraction, 4),
                "max_failed_fraction": pipeline.max_failed_fraction,
                "top_reasons": dg.MetadataValue.json({r: n for r, n in reasons}),
            },
        )

    return check_each_shard(context, one_shard)


asset_checks = [edit_candidates_integrity, edit_candidates_failure_rate]
