"""Editing stage: candidate source/target image pairs per edit triplet, free-form and region (docs/method.md §3-4),
generated and scored in one step (docs/method.md §8): `edit_candidates` and `metric_scores` are two assets of one
multi-asset."""

from collections import Counter
from typing import Any

import dagster as dg
import pyarrow as pa

from ultraedit_dagster.core.deploy_tags import GPU_OP_TAGS
from ultraedit_dagster.core.imaging import thumbnail_grid
from ultraedit_dagster.core.partitions import ShardProgress, materialize_each_shard_multi, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.core.rows import failure_reason
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rounds import RoundRunner
from ultraedit_dagster.editing.rows import ASSET, EDIT_CANDIDATES_SCHEMA, shard_bytes
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, THRESHOLD_METRICS
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA
from ultraedit_dagster.sources.manifests import shard_profile

SCORES = "metric_scores"
_RECIPE_EDITORS: dict[str, EditorResource] = {}  # one per recipe and configuration: its model loads once per process


def editor_for_recipe(editor: EditorResource, profile: Any) -> EditorResource:
    """The configured editor when it runs the profile's recipe; else that recipe's editor (the profile's model and
    generator choices) on the same device, dtype, batch size and working size."""
    if editor.recipe == profile.recipe:
        return editor
    other = EditorResource.from_profile(
        profile,
        device=editor.device,
        dtype=editor.dtype,
        batch_size=editor.batch_size,
        working_size=editor.working_size,
        cpu_threads=editor.cpu_threads,
        seed=editor.seed,
        blank_std=editor.blank_std,
    )
    key = other.model_dump_json()
    return _RECIPE_EDITORS.setdefault(key, other)


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ASSET,
            deps=["source_images", "edit_instructions", "region_masks"],
            group_name="generation",
            kinds={"parquet", "pytorch"},
            automation_condition=dg.AutomationCondition.eager(),
            description="One row per generated candidate pair: parameters, round, typed outcome; image bytes only for "
            "the candidates selected or selectable and a small audit sample (docs/method.md §8).",
        ),
        dg.AssetSpec(
            SCORES,
            deps=[ASSET],
            group_name="quality",
            kinds={"parquet", "pytorch"},
            automation_condition=dg.AutomationCondition.eager(),
            description="One row per candidate: the metrics of docs/method.md §5, pass flags, outcome, model seconds.",
        ),
    ],
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=2),
    op_tags=GPU_OP_TAGS,
    pool="gpu",
    can_subset=False,
)
@retry_transient_only
def candidates_and_scores(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    pipeline: PipelineResource,
    editor: EditorResource,
    scorer: ScorerResource,
):
    """Generate and score in one step (docs/method.md §3-5, §8). Per triplet, candidates are generated in rounds
    (SDXL-Turbo img2img under Prompt-to-Prompt; region mode with the inpainting-style loop), batched across the
    unfinished triplets of the shard, and scored in memory right after generation (CLIP, DINOv2, SSIM, L1); the
    profile's stopping policy (`exhaustive` or `early`) decides after each round whether a triplet needs more.
    Candidate parameters depend only on the candidate uid and the global seed. Both shard files are written with the
    lake's atomic writer and become visible only when the shard is complete. Failures (NaN or blank output, out of
    memory at batch size 1, a missing mask, failed upstream rows) are rows with the reason and outcome."""

    def one_shard(shard: str) -> dict[str, dict[str, Any]]:
        lk = lake.lake
        # a manifest registered with a recipe runs under the active profile's variant for it (docs/method.md §12)
        profile = shard_profile(pipeline.profile, lk, shard)
        shard_editor = editor_for_recipe(editor, profile)
        ids = {
            "clip_model_id": scorer.clip_model_id,
            "dinov2_model_id": scorer.dinov2_model_id,
            "scorer_input_sizes": scorer.input_sizes(pipeline.image_size),
        }
        runner = RoundRunner(
            lk,
            shard,
            profile=profile,
            global_seed=pipeline.global_seed,
            editor=shard_editor,
            scorer=scorer,
            score_ids=ids,
        )
        rows = ok = 0
        reasons: Counter = Counter()
        by_mode: Counter = Counter()
        sums: Counter = Counter()
        with (
            lk.open_writer(ASSET, shard, EDIT_CANDIDATES_SCHEMA) as cand_writer,
            lk.open_writer(SCORES, shard, METRIC_SCORES_SCHEMA) as score_writer,
        ):
            # progress in triplets finished (one edit_instructions row each), logged every few rounds
            progress = ShardProgress(context.log, shard, lk.num_rows("edit_instructions", shard), unit="triplets")
            for cands, scores in runner.run():
                cand_writer.write_table(pa.Table.from_pylist(cands, schema=EDIT_CANDIDATES_SCHEMA))
                score_writer.write_table(pa.Table.from_pylist(scores, schema=METRIC_SCORES_SCHEMA))
                progress.advance(len({s["instruction_uid"] for s in scores}))
                for s in scores:
                    rows += 1
                    by_mode[f"{s['mode']}:{s['outcome'].split(':', 1)[0]}"] += 1
                    if s["status"] != "ok":
                        reasons[failure_reason(s["error"])] += 1
                        continue
                    ok += 1
                    for m in METRIC_COLUMNS:
                        sums[m] += s[m]
        st = runner.stats
        kept = st.kept_samples
        cand_bytes, score_bytes = shard_bytes(lk, ASSET, shard), shard_bytes(lk, SCORES, shard)
        model_seconds = st.generation_seconds + st.scoring_seconds

        def per_kept(x: float) -> float | None:
            return round(x / kept, 4) if kept else None

        cost = {
            "kept_samples": kept,
            "candidates_generated": st.generated,
            "candidates_per_kept_sample": per_kept(st.generated),
            "model_seconds_per_kept_sample": per_kept(model_seconds),
            "lake_bytes_per_kept_sample": per_kept(cand_bytes + score_bytes),
        }
        pass_rates = {
            m: round(st.passed_by_threshold[m] / st.scored, 4) if st.scored else None for m in THRESHOLD_METRICS
        }
        if ok == 0 and rows:
            context.log.warning(f"shard {shard}: no candidate generated and scored; reasons: {dict(reasons)}")
        preview = (  # a file in the lake, linked; the metadata embeds a bounded thumbnail
            lake.preview_metadata(ASSET, shard, thumbnail_grid(st.preview, columns=2, thumb=192), "source | target")
            if st.preview
            else {"preview": dg.MetadataValue.md("(no selected candidates)")}
        )
        candidates_md: dict[str, Any] = {
            "rows": rows,
            "ok": ok,
            "failed": rows - ok,
            "by_mode_outcome": dg.MetadataValue.json(dict(by_mode)),
            "images_kept": dg.MetadataValue.json(dict(st.images_kept)),
            "rounds": st.rounds,
            "stopping_policy": runner.rounds.policy,
            "triplets": st.triplets,
            "triplets_stopped_early": st.stopped_early,
            "triplets_kept": st.triplets_kept,
            "region_triplets_dropped": st.region_dropped,
            "candidates_per_second": round(st.generated / st.generation_seconds, 3) if st.generation_seconds else 0.0,
            "generation_seconds": round(st.generation_seconds, 2),
            "oom_retries": runner._gen.stats.oom_retries if runner._gen is not None else 0,
            "editor_id": shard_editor.editor_id,
            "recipe_version": runner.recipe["recipe_version"],
            "lake_bytes": cand_bytes,
            "top_errors": dg.MetadataValue.json(dict(reasons.most_common(10))),
            "lake_uri": lk.shard_uri(ASSET, shard),
            **preview,
            **cost,
        }
        means = {m: (sums[m] / ok if ok else None) for m in METRIC_COLUMNS}
        table = "| metric | mean |\n|---|---|\n" + "\n".join(
            f"| {m} | {v:.4f} |" for m, v in means.items() if v is not None
        )
        scores_md: dict[str, Any] = {
            "rows": rows,
            "ok": ok,
            "failed": rows - ok,
            "passed": sum(v for k, v in by_mode.items() if k.split(":", 1)[1].startswith(("selected", "passed"))),
            "outcomes": dg.MetadataValue.json(dict(st.outcomes)),
            "pass_rate_by_threshold": dg.MetadataValue.json(pass_rates),
            "failure_sources": str(dict(reasons)),
            "scoring_seconds": round(st.scoring_seconds, 2),
            "profile": profile.name,
            **ids,
            "lake_bytes": score_bytes,
            "lake_uri": lk.shard_uri(SCORES, shard),
            "means": dg.MetadataValue.md(table if ok else "no scored candidates"),
            **cost,
        }
        if ok == 0:
            scores_md["why_empty"] = f"no candidate could be scored ({rows} rows, all failed: {dict(reasons)})"
        return {ASSET: candidates_md, SCORES: scores_md}

    yield from materialize_each_shard_multi(context, [ASSET, SCORES], one_shard)


# one importable name per asset key (checks target the keys)
edit_candidates = dg.AssetKey(ASSET)
metric_scores = dg.AssetKey(SCORES)

assets = [candidates_and_scores]
