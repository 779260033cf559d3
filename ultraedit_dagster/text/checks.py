"""Checks on `captions` and `edit_instructions`, run as SQL over the shard's Parquet in an in-memory DuckDB."""

import dagster as dg

from ultraedit_dagster.core.partitions import check_each_shard
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.shard_sql import shard_connection
from ultraedit_dagster.text.assets import captions, edit_instructions
from ultraedit_dagster.text.edit_types import EDIT_TYPES, MODES
from ultraedit_dagster.text.resources import InstructionWriterResource

# normalise like parsing.normalize_caption: lower case, single spaces, no trailing punctuation
_NORM = "rtrim(lower(regexp_replace(trim({c}), '\\s+', ' ', 'g')), '.!?;:, ')"


@dg.asset_check(
    asset=captions,
    blocking=True,
    description="Every ok row has a non-empty short and descriptive caption and a captioner id.",
)
def captions_complete(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        con = shard_connection(lake, "captions", shard)
        rows, ok, bad, truncated = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), "
            "count(*) FILTER (WHERE status = 'ok' AND (coalesce(trim(caption_short), '') = '' "
            "OR coalesce(trim(caption_desc), '') = '' OR coalesce(captioner_id, '') = '')), "
            "count(*) FILTER (WHERE caption_short_truncated) FROM t"
        ).fetchone()
        return dg.AssetCheckResult(
            passed=bad == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows": rows, "ok": ok, "incomplete": bad, "short_truncated": truncated},
        )

    return check_each_shard(context, one_shard)


@dg.asset_check(
    asset=edit_instructions,
    blocking=True,
    description="No ok triplet whose target equals its source (case / trailing punctuation ignored); "
    "every ok row has one of the nine edit types and a known mode; instruction uids unique.",
)
def edit_instructions_valid(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        con = shard_connection(lake, "edit_instructions", shard)
        same = con.execute(
            f"SELECT count(*) FROM t WHERE status = 'ok' AND {_NORM.format(c='target_caption')} = "
            f"{_NORM.format(c='source_caption')}"
        ).fetchone()[0]
        bad_type = con.execute(
            "SELECT count(*) FROM t WHERE status = 'ok' AND (edit_type IS NULL OR NOT list_contains(?, edit_type))",
            [list(EDIT_TYPES)],
        ).fetchone()[0]
        bad_mode = con.execute(
            "SELECT count(*) FROM t WHERE status = 'ok' AND (mode IS NULL OR NOT list_contains(?, mode))", [list(MODES)]
        ).fetchone()[0]
        empty = con.execute(
            "SELECT count(*) FROM t WHERE status = 'ok' AND coalesce(trim(instruction), '') = ''"
        ).fetchone()[0]
        dupes = con.execute("SELECT count(*) - count(DISTINCT instruction_uid) FROM t").fetchone()[0]
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        passed = same == 0 and bad_type == 0 and bad_mode == 0 and empty == 0 and dupes == 0
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": rows,
                "target_equals_source": same,
                "unknown_edit_type": bad_type,
                "unknown_mode": bad_mode,
                "empty_instruction": empty,
                "duplicate_instruction_uids": dupes,
            },
        )

    return check_each_shard(context, one_shard)


@dg.asset_check(
    asset=edit_instructions,
    blocking=False,
    description="Parse-failure and request-failure rates (over images with a caption) stay under the "
    "instruction writer's maximums; reports triplets per type, unique-instruction ratio "
    "and tokens used.",
)
def edit_instructions_failure_rates(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, instruction_writer: InstructionWriterResource
) -> dg.AssetCheckResult:
    def one_shard(shard: str) -> dg.AssetCheckResult:
        con = shard_connection(lake, "edit_instructions", shard)
        images, upstream, req, parse, moderation = con.execute(
            "SELECT count(DISTINCT image_uid), "
            "count(DISTINCT image_uid) FILTER (WHERE starts_with(error, 'captions:')), "
            "count(DISTINCT image_uid) FILTER (WHERE starts_with(error, 'request failed')), "
            "count(DISTINCT image_uid) FILTER (WHERE starts_with(error, 'parse failed')), "
            "count(DISTINCT image_uid) FILTER (WHERE starts_with(error, 'moderation')) FROM t"
        ).fetchone()
        attempted = images - upstream
        parse_rate = parse / attempted if attempted else 0.0
        request_rate = req / attempted if attempted else 0.0
        per_type = dict(
            con.execute("SELECT edit_type, count(*) FROM t WHERE status = 'ok' GROUP BY 1 ORDER BY 1").fetchall()
        )
        ok, uniq, near, pt, ct = con.execute(
            "SELECT count(*) FILTER (WHERE status = 'ok'), "
            "count(DISTINCT lower(trim(instruction))) FILTER (WHERE status = 'ok'), "
            "count(*) FILTER (WHERE status = 'ok' AND near_duplicate), "
            "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM t"
        ).fetchone()
        passed = (
            parse_rate <= instruction_writer.max_parse_failure_rate
            and request_rate <= instruction_writer.max_request_failure_rate
        )
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "images": images,
                "upstream_failed": upstream,
                "request_failed": req,
                "parse_failed": parse,
                "moderation_failed": moderation,
                "parse_failure_rate": parse_rate,
                "request_failure_rate": request_rate,
                "max_parse_failure_rate": instruction_writer.max_parse_failure_rate,
                "max_request_failure_rate": instruction_writer.max_request_failure_rate,
                "triplets_per_edit_type": {t: int(per_type.get(t, 0)) for t in EDIT_TYPES},
                "unique_instruction_ratio": (uniq / ok) if ok else 0.0,
                "near_duplicates": near,
                "prompt_tokens": int(pt),
                "completion_tokens": int(ct),
            },
        )

    return check_each_shard(context, one_shard)


asset_checks = [captions_complete, edit_instructions_valid, edit_instructions_failure_rates]
