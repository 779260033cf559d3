"""Scoring stage: CLIP / DINOv2 / SSIM / L1 metrics of every edit candidate, with pass flags per threshold."""

from collections import Counter
from typing import Any

import dagster as dg
import pyarrow as pa

from ultraedit_dagster.core.deploy_tags import GPU_OP_TAGS
from ultraedit_dagster.core.partitions import materialize_each_shard, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY
from ultraedit_dagster.core.rows import failure_reason
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.scoring.rows import CANDIDATE_COLUMNS, METRIC_SCORES_SCHEMA, score_rows


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=8),
    op_tags=GPU_OP_TAGS,
    deps=["edit_candidates"],
    group_name="quality",
    kinds={"parquet", "pytorch"},
    pool="gpu",
    automation_condition=dg.AutomationCondition.eager(),
)
def metric_scores(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineResource, scorer: ScorerResource
) -> dg.MaterializeResult:
    """One row per edit candidate: clip_sim_source / target / dir / image (open_clip), dinov2_sim (DINOv2 CLS),
    ssim and l1 between the generated source and target image, a pass flag per threshold of the candidate's mode
    (profile's free-form / region thresholds) and pass_all, with the scorer's model ids and input sizes. Failed
    candidates stay failed with their reasons."""

    def one_shard(shard: str) -> dict:
        profile = pipeline.profile
        ids = {
            "clip_model_id": scorer.clip_model_id,
            "dinov2_model_id": scorer.dinov2_model_id,
            "scorer_input_sizes": scorer.input_sizes(pipeline.image_size),
        }
        rows = failed = passed = 0
        sums: Counter = Counter()
        reasons: Counter = Counter()
        by_mode: Counter = Counter()
        with lake.lake.open_writer("metric_scores", shard, METRIC_SCORES_SCHEMA) as writer:
            for batch in lake.lake.iter_batches(
                "edit_candidates", shard, batch_size=scorer.batch_size, columns=CANDIDATE_COLUMNS
            ):
                out = score_rows(batch.to_pylist(), scorer, profile, ids)
                for r in out:
                    rows += 1
                    if r["status"] != "ok":
                        failed += 1
                        reasons[failure_reason(r["error"])] += 1
                        continue
                    passed += r["pass_all"]
                    by_mode[(r["mode"], r["pass_all"])] += 1
                    for m in METRIC_COLUMNS:
                        sums[m] += r[m]
                writer.write_table(pa.Table.from_pylist(out, schema=METRIC_SCORES_SCHEMA))
        ok = rows - failed
        means = {m: (sums[m] / ok if ok else None) for m in METRIC_COLUMNS}
        table = "| metric | mean |\n|---|---|\n" + "\n".join(
            f"| {m} | {v:.4f} |" for m, v in means.items() if v is not None
        )
        metadata: dict[str, Any] = {
            "rows": rows,
            "ok": ok,
            "failed": failed,
            "passed": passed,
            "pass_rate": (passed / ok) if ok else 0.0,
            "passed_by_mode": str({f"{m}/{'pass' if p else 'fail'}": c for (m, p), c in sorted(by_mode.items())}),
            "failure_sources": str(dict(reasons)),
            "profile": profile.name,
            **ids,
            "lake_uri": lake.lake.shard_uri("metric_scores", shard),
            "means": dg.MetadataValue.md(table if ok else "no scored candidates"),
        }
        if ok == 0:
            metadata["why_empty"] = f"no candidate could be scored ({rows} rows, all failed: {dict(reasons)})"
        return metadata

    return materialize_each_shard(context, one_shard)


assets = [metric_scores]
