"""Checks on `source_images`, run as SQL over the shard's Parquet in an in-memory DuckDB."""

import dagster as dg

from ultraedit_dagster.core.partitions import check_each_shard
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.shard_sql import shard_connection
from ultraedit_dagster.sources.assets import source_images


def unique_uids_result(con) -> dg.AssetCheckResult:
    """Duplicate uids in table `t` (an error: a uid names one sample)."""
    rows, dupes = con.execute("SELECT count(*), count(*) - count(DISTINCT uid) FROM t").fetchone()
    examples = [r[0] for r in con.execute("SELECT uid FROM t GROUP BY uid HAVING count(*) > 1 LIMIT 5").fetchall()]
    return dg.AssetCheckResult(
        passed=dupes == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "duplicate_uids": dupes, "examples": ", ".join(examples)},
    )


@dg.asset_check(asset=source_images, blocking=True, description="Every uid in the shard is unique.")
def source_images_unique_uids(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    return check_each_shard(context, lambda shard: unique_uids_result(shard_connection(lake, "source_images", shard)))


@dg.asset_check(
    asset=source_images, blocking=False, description="The failed fraction stays under the configured maximum."
)
def source_images_failed_fraction(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        con = shard_connection(lake, "source_images", shard)
        rows, failed = con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'failed') FROM t").fetchone()
        fraction = failed / rows if rows else 0.0
        reasons = dict(
            con.execute(
                "SELECT error, count(*) FROM t WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
            ).fetchall()
        )
        return dg.AssetCheckResult(
            passed=fraction <= pipeline.max_failed_fraction,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rows": rows,
                "failed": failed,
                "failed_fraction": fraction,
                "max_failed_fraction": pipeline.max_failed_fraction,
                "top_errors": str(reasons),
            },
        )

    return check_each_shard(context, one_shard)


asset_checks = [source_images_unique_uids, source_images_failed_fraction]
