"""Release stage: the kept samples per shard (selection over the scores) and the published release with its card."""

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from ultraedit_dagster.analysis.plots import card_markdown_for_ui
from ultraedit_dagster.core.conditions import FOLLOWS_SHARDS
from ultraedit_dagster.core.imaging import decode_png, thumbnail_grid
from ultraedit_dagster.core.partitions import materialize_each_shard, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake, swap_folder
from ultraedit_dagster.release.card import build_release
from ultraedit_dagster.release.cost import release_cost
from ultraedit_dagster.release.gate import exclude_duplicates, judge
from ultraedit_dagster.release.gate_records import RUN_ID_KEY, gather, measured_model_seconds
from ultraedit_dagster.release.recipes import RecipeGroups
from ultraedit_dagster.release.schema import empty_release_table, release_row, release_schema
from ultraedit_dagster.release.selection import release_rule, select, thresholds_by_mode
from ultraedit_dagster.sources.manifests import shard_profile

PREVIEW_IMAGES = 8
# Parquet footer key of a filtered_release shard naming its shard; RUN_ID_KEY names the run that wrote it (the release
# gate matches it against the latest materialization, docs/method.md §6)
SHARD_KEY = b"ultraedit.shard"


class ReleaseGuardError(ValueError):
    """A condition that makes a filtered_release shard invalid: deterministic, never retried."""


def _lookup(lake: Lake, asset: str, shard: str, key: str, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """key -> row of the wanted (non-image) columns of an upstream shard; empty when that shard is missing."""
    if not lake.exists(asset, shard):
        return {}
    have = lake.columns(asset, shard)
    if key not in have:
        return {}
    cols = [key] + [c for c in wanted if c in have and c != key]
    out: dict[str, dict[str, Any]] = {}
    for batch in lake.iter_batches(asset, shard, batch_size=4096, columns=cols):
        for row in batch.to_pylist():
            out.setdefault(row[key], row)
    return out


@dg.asset(
    partitions_def=shards,
    retry_policy=TRANSIENT_RETRY_POLICY,
    deps=["metric_scores", "edit_candidates", "captions", "source_images", "edit_instructions", "region_masks"],
    group_name="quality",
    kinds={"parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
@retry_transient_only
def filtered_release(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineResource
) -> dg.MaterializeResult:
    """The kept samples of the shard in UltraEdit's release schema (docs/method.md §6) plus provenance columns:
    per triplet, passing candidates sorted by clip_sim_dir, top 4 (free-form) or top 3 with at least 3 passing
    (region) as set by the profile. A shard where nothing passes still materializes, with zero rows and the
    reasons in the metadata."""

    def one_shard(shard: str) -> dict:
        the_lake = lake.lake
        profile = shard_profile(pipeline.profile, the_lake, shard)  # a manifest's recipe selects under its own rule
        scores = [r for b in the_lake.iter_batches("metric_scores", shard, batch_size=4096) for r in b.to_pylist()]
        by_mode = thresholds_by_mode(profile)
        rule = release_rule(profile)
        result = select(scores, profile.selection, by_mode)
        chosen = {r["candidate_uid"]: r for r in result.selected}

        captions = _lookup(
            the_lake, "captions", shard, "uid", ["caption_gt", "caption_short", "caption_desc", "captioner_id"]
        )
        sources = _lookup(the_lake, "source_images", shard, "uid", ["uri", "caption_gt", "source", "license"])
        instructions = _lookup(the_lake, "edit_instructions", shard, "instruction_uid", ["llm_id", "caption_desc"])
        regions = _lookup(
            the_lake,
            "region_masks",
            shard,
            "instruction_uid",
            ["edit_object", "tagger_id", "grounder_id", "segmenter_id"],
        )

        schema = release_schema().with_metadata(
            {**release_schema().metadata, RUN_ID_KEY: context.run_id.encode(), SHARD_KEY: shard.encode()}
        )
        written = 0
        found: set[str] = set()
        by_split: Counter = Counter()
        preview = []
        # Everything that makes the shard valid is checked inside the writer block: an exception there leaves the
        # previous file in place (the writer replaces the shard only when the block exits cleanly).
        with the_lake.open_writer("filtered_release", shard, schema) as writer:
            if chosen:
                for batch in the_lake.iter_batches("edit_candidates", shard, batch_size=32):
                    out = []
                    for cand in batch.to_pylist():
                        score = chosen.get(cand["candidate_uid"])
                        if score is None or cand["candidate_uid"] in found:
                            continue
                        found.add(cand["candidate_uid"])
                        out.append(
                            release_row(
                                cand,
                                score,
                                rank=score["rank"],
                                caption=captions.get(cand.get("image_uid")),
                                source=sources.get(cand.get("image_uid")),
                                instruction=instructions.get(cand["instruction_uid"]),
                                region=regions.get(cand["instruction_uid"]),
                                rule=rule,
                            )
                        )
                        by_split[cand["mode"]] += 1
                        if len(preview) < PREVIEW_IMAGES:
                            preview.append(decode_png(cand["target_image"]))
                    if out:
                        writer.write_table(pa.Table.from_pylist(out, schema=schema))
                        written += len(out)
            else:
                writer.write_table(empty_release_table().replace_schema_metadata(schema.metadata))
            missing = sorted(set(chosen) - found)
            if missing:
                raise ReleaseGuardError(
                    f"filtered_release: {len(chosen)} candidates selected but {len(missing)} missing from "
                    f"edit_candidates (e.g. {', '.join(missing[:3])}); the shard file was left unchanged"
                )
        failed = sum(1 for r in scores if r["status"] != "ok")
        metadata: dict[str, Any] = {
            "rows": written,
            "free_form": by_split.get("free_form", 0),
            "region": by_split.get("region", 0),
            "candidates": len(scores),
            "candidates_failed": failed,
            "triplets": result.triplets,
            "triplets_kept": result.triplets_kept,
            "triplets_dropped_reasons": str(result.reasons),
            "candidates_ineligible": str(result.ineligible),
            "selection_rule": rule["selection_rule"],
            "profile": profile.name,
            "lake_uri": the_lake.shard_uri("filtered_release", shard),
        }
        if written == 0:
            metadata["why_empty"] = (
                "no candidates in metric_scores"
                if not scores
                else f"no triplet kept a sample: {dict(result.reasons)} "
                f"({failed}/{len(scores)} candidates failed upstream)"
            )
        if preview:
            # a file in the lake, linked; the metadata embeds a bounded thumbnail
            metadata.update(lake.preview_metadata("filtered_release", shard, thumbnail_grid(preview), "kept edits"))
        return metadata

    return materialize_each_shard(context, one_shard)


class ReleaseCardConfig(dg.Config):
    release_dir: str = ""  # empty: the lake's `release/` prefix; else a local folder
    gallery_size: int = 24
    title: str = "ultraedit-dagster release"


def publish_folder(src: Path, lake: Lake, release_dir: str) -> str:
    """Replace the release at its destination (a local folder, or the lake's `release/`) with the built folder."""
    if release_dir:
        dest = Path(release_dir).expanduser().resolve()
        swap_folder(src, dest)
        return str(dest)
    return lake.replace_folder("release", src)


@dg.asset(
    deps=[filtered_release],
    group_name="quality",
    kinds={"parquet", "html"},
    retry_policy=TRANSIENT_RETRY_POLICY,
    # re-published whenever a filtered_release shard lands, even while others are missing (a failed shard is
    # listed on the card, not a reason to stop publishing)
    automation_condition=FOLLOWS_SHARDS,
)
@retry_transient_only
def release_card(
    context: dg.AssetExecutionContext, config: ReleaseCardConfig, lake: LakeResource, pipeline: PipelineResource
) -> dg.MaterializeResult:
    """The release over the shards that pass the release gate (docs/method.md §6): their filtered_release files are
    its data (stored once, referenced by the card), a dataset card (counts by split, edit type and licence; metric
    means and histograms; the threshold plots over every scored candidate of the admitted shards; thresholds, L1
    band and selection rule; cost per kept sample; models; data files with row counts and sha256; every shard left
    out and why), the `release_gate.parquet` table and a static HTML gallery. Written under the lake's `release/`
    or a configured folder, readable (0755 / 0644) like the rest of the lake."""
    the_lake = lake.lake
    known = set(the_lake.list_shards("filtered_release")) | set(context.instance.get_dynamic_partitions("shards"))
    decisions = [judge(e) for e in gather(context.instance, the_lake, sorted(known))]
    uids = {
        d.shard: [
            u for b in the_lake.iter_batches("filtered_release", d.shard, 4096, ["uid"]) for u in b["uid"].to_pylist()
        ]
        for d in decisions
        if d.included
    }
    decisions = exclude_duplicates(decisions, uids)
    included = [d.shard for d in decisions if d.included]
    excluded = {d.shard: d.reasons for d in decisions if not d.included}
    gate_rows = [{**r, "included": d.included} for d in decisions for r in d.rows]
    for shard, reasons in excluded.items():
        context.log.warning(f"release: shard {shard} left out: {'; '.join(reasons)}")
    # the card reaches the data files (the admitted filtered_release files, never copied) from where it is published
    data_prefix = "../" if not config.release_dir else the_lake.root.rstrip("/") + "/"
    recipes = RecipeGroups.of(pipeline.profile, the_lake, included)
    threshold_figures = recipes.threshold_figures(the_lake, lake.s3_settings())
    cost = release_cost(the_lake, included, measured_model_seconds(context.instance, included))
    if recipes.mixed:  # what a kept sample cost under each recipe
        cost.by_profile = {
            name: release_cost(the_lake, group, measured_model_seconds(context.instance, group)).figures()
            for name, group in recipes.shards.items()
        }
    with tempfile.TemporaryDirectory(prefix="ultraedit-release-") as tmp:
        summary = build_release(
            the_lake,
            tmp,
            thresholds=recipes.thresholds(),
            profile_note=recipes.note(),
            gallery_size=config.gallery_size,
            title=config.title,
            shards=included,
            excluded=excluded,
            gate_rows=gate_rows,
            selection_rule=recipes.rule(),
            data_prefix=data_prefix,
            cost=cost,
            threshold_figures=threshold_figures,
        )
        if summary.duplicate_idx or summary.duplicate_uid:  # the gate left out repeated uids: only an idx clash
            raise ReleaseGuardError(
                f"release has {summary.duplicate_idx} duplicate idx and {summary.duplicate_uid} "
                "duplicate uid values across the admitted shards; nothing was published"
            )
        card = (Path(tmp) / "README.md").read_text()
        # the card's figures/*.png links do not resolve in the UI: show the figures themselves (bounded)
        card_for_ui = card_markdown_for_ui(card, tmp)
        where = publish_folder(Path(tmp), the_lake, config.release_dir)
    return dg.MaterializeResult(
        metadata={
            "rows": summary.rows,
            "free_form": summary.by_split.get("free_form", 0),
            "region": summary.by_split.get("region", 0),
            "shards": len(summary.shards),
            "shards_excluded": len(excluded),
            "excluded_shards": dg.MetadataValue.json(excluded),
            "files": len(summary.files),
            **{k: v for k, v in cost.figures().items() if not isinstance(v, dict)},
            "model_seconds_per_kept_sample": dg.MetadataValue.json(cost.figures()["model_seconds_per_kept_sample"]),
            "release_uri": where,
            "release_gate": f"{where}/release_gate.parquet",
            "gallery": f"{where}/gallery/index.html",
            "card": dg.MetadataValue.md(card_for_ui),
        }
    )


assets = [filtered_release, release_card]
