"""metric_scores (scored by the tiny scorer) -> filtered_release -> release_card end to end, the release schema
through the real `datasets` library, and the blocking checks catching broken releases."""

import dataclasses
import json

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ultraedit_dagster.release.checks as cq
import ultraedit_dagster.scoring.checks as sq
from tests.quality_fixtures import write_upstream
from ultraedit_dagster.core.partitions import shards
from ultraedit_dagster.core.profiles import PROFILES, SelectionRule, Thresholds, get_profile
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import SHARD_ASSETS, Lake
from ultraedit_dagster.release.assets import filtered_release, release_card
from ultraedit_dagster.release.checks import asset_checks as release_checks
from ultraedit_dagster.release.schema import RELEASE_METRICS, release_idx, release_schema
from ultraedit_dagster.scoring.checks import asset_checks as scoring_checks
from ultraedit_dagster.scoring.checks import run_metric_expectations
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA, score_rows

SHARD, EMPTY = "demo-00000", "demo-00001"


# The release mechanics under test do not depend on thresholds: a profile like tiny whose thresholds admit every
# finite score (the calibrated tiny thresholds reject most random-model candidates, which tests/editing covers).
PERMISSIVE = Thresholds(-1.0, -1.0, -1.0, -1.0, -1.0, "test: every finite score passes", min_l1=0.0, max_l1=1.0)
RELEASE_TEST = dataclasses.replace(
    get_profile("tiny"),
    name="release-test",
    free_form_thresholds=PERMISSIVE,
    region_thresholds=PERMISSIVE,
    selection=SelectionRule(free_form_top_k=4, region_top_k=3, region_min_passing=1),
)


def write_scores(lake: Lake, shard: str, scorer: ScorerResource) -> None:
    """metric_scores for the shard's edit_candidates, built by the same row code the fused step uses."""
    candidates = lake.read_table("edit_candidates", shard).to_pylist()
    ids = {
        "clip_model_id": scorer.clip_model_id,
        "dinov2_model_id": scorer.dinov2_model_id,
        "scorer_input_sizes": scorer.input_sizes(512),
    }
    rows = score_rows(candidates, scorer, RELEASE_TEST, ids)
    lake.write_table("metric_scores", shard, pa.Table.from_pylist(rows, schema=METRIC_SCORES_SCHEMA))


@dg.asset(name="metric_scores", partitions_def=shards)
def scored_by_the_tiny_scorer(
    context: dg.AssetExecutionContext, lake: LakeResource, scorer: ScorerResource
) -> dg.MaterializeResult:
    """A stand-in for the fused generate-and-score step: the real tiny scorer over the planted candidates."""
    write_scores(lake.lake, context.partition_key, scorer)
    return dg.MaterializeResult(metadata={"rows": lake.lake.num_rows("metric_scores", context.partition_key)})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("q") / "lake"
    lake = Lake(str(root))
    for shard, all_failed in ((SHARD, False), (EMPTY, True)):
        write_upstream(lake, shard, all_failed=all_failed)
    resources = {
        "lake": LakeResource(root=str(root)),
        "pipeline": PipelineResource(profile_name=RELEASE_TEST.name),
        "scorer": ScorerResource(device="cpu"),
    }
    with pytest.MonkeyPatch.context() as mp, dg.DagsterInstance.ephemeral() as inst:
        mp.setitem(PROFILES, RELEASE_TEST.name, RELEASE_TEST)
        inst.add_dynamic_partitions("shards", [SHARD, EMPTY])
        runs = {}
        for shard in (SHARD, EMPTY):
            runs[shard] = dg.materialize(
                [scored_by_the_tiny_scorer, filtered_release, *scoring_checks, *release_checks],
                partition_key=shard,
                instance=inst,
                resources=resources,
            )
        card_run = dg.materialize([release_card], instance=inst, resources=resources)
        yield {"lake": lake, "root": root, "runs": runs, "card_run": card_run, "resources": resources}


def _meta(run, key):
    [mat] = [e.materialization for e in run.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in mat.metadata.items()}


def test_metric_scores_rows_and_failures(built):
    t = built["lake"].read_table("metric_scores", SHARD).to_pylist()
    assert len(t) == 8  # every candidate has a row: nothing dropped
    failed = [r for r in t if r["status"] == "failed"]
    assert len(failed) == 3
    # upstream errors keep their origin: one already named source_images, one gets the edit_candidates prefix
    assert sorted(r["error"] for r in failed) == [
        "edit_candidates: diffusion exploded",
        "source_images: unreadable",
        "source_images: unreadable",
    ]
    assert all(r["clip_sim_dir"] is None and r["pass_all"] is False for r in failed)
    ok = [r for r in t if r["status"] == "ok"]
    for r in ok:
        assert -1 <= r["clip_sim_image"] <= 1 and 0 <= r["l1"] <= 1 and -1 <= r["ssim"] <= 1
        assert r["pass_all"] is True  # the permissive test thresholds
        assert r["clip_model_id"] == "open_clip:tiny/random-seed0" and r["profile"] == RELEASE_TEST.name
        assert r["scorer_input_sizes"] == "clip=32,dinov2=56,ssim=512"
    assert len(ok) == 5


def test_filtered_release_schema_selection_and_provenance(built):
    t = built["lake"].read_table("filtered_release", SHARD)
    assert t.schema.equals(release_schema(), check_metadata=False)
    for name in RELEASE_METRICS:
        assert t.schema.field(name).type == pa.float64()
    assert t.schema.field("idx").type == pa.int64()
    rows = t.to_pylist()
    assert sorted(r["split"] for r in rows) == ["free_form", "free_form", "region", "region", "region"]
    ff = sorted((r for r in rows if r["split"] == "free_form"), key=lambda r: r["rank"])
    assert ff[0]["clip_sim_dir"] >= ff[1]["clip_sim_dir"]
    for r in rows:
        assert r["idx"] == release_idx(r["uid"])
        assert r["edit_prompt"] == "do F1 <b>&</b>" if r["split"] == "free_form" else "do R1 <b>&</b>"
        assert r["captioner_id"] == "passthrough" and r["llm_id"] == "template" and r["editor_id"] == "tiny-sdxl"
        assert r["license"] == "CC0" and r["source_uri"] == "file:///photos/A.jpg" and r["caption_short"] == "a photo A"
        assert r["seed"] is not None and r["steps"] == 3 and r["guidance"] == 0.5
        if r["split"] == "region":
            assert r["edit_object"] == "face" and r["mask_image"]["bytes"] and r["segmenter_id"] == "sam-z"
        else:
            assert r["edit_object"] is None and r["mask_image"] is None
    assert len({r["idx"] for r in rows}) == len(rows)


def test_all_failed_shard_materializes_empty_with_reason(built):
    run = built["runs"][EMPTY]
    assert run.success
    assert built["lake"].num_rows("filtered_release", EMPTY) == 0
    meta = _meta(run, "filtered_release")
    assert meta["rows"] == 0 and "all candidates failed upstream" in meta["why_empty"]


def test_checks_pass_on_good_shard(built):
    evals = {e.check_name: e for e in built["runs"][SHARD].get_asset_check_evaluations()}
    blocking = {s.name for c in [*scoring_checks, *release_checks] for s in c.check_specs if s.blocking}
    assert blocking and all(evals[n].passed for n in blocking)
    assert len(evals) == len(scoring_checks) + len(release_checks)


def test_release_loads_with_datasets(built, tmp_path):
    datasets = pytest.importorskip("datasets")
    release = built["root"] / "release"
    files = [f["uri"] for f in json.loads((release / "release.json").read_text())["files"]]
    whole = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))["train"]
    ds = {s: whole.filter(lambda r, s=s: r["split"] == s) for s in ("free_form", "region")}
    assert ds["free_form"].num_rows == 2 and ds["region"].num_rows == 3
    assert isinstance(ds["region"].features["source_image"], datasets.Image)
    row = ds["region"][0]
    assert row["source_image"].size == (64, 64) and row["edited_image"].mode == "RGB"
    assert row["mask_image"].mode == "L" and row["edit_object"] == "face"
    assert ds["free_form"][0]["mask_image"] is None
    # the per-shard lake file loads the same way
    one = datasets.load_dataset(
        "parquet",
        data_files=built["lake"].shard_uri("filtered_release", SHARD),
        split="train",
        cache_dir=str(tmp_path / "hf2"),
    )
    assert one.num_rows == 5 and one[0]["edited_image"].size == (64, 64)
    # and the release folder itself, through the card's YAML (it names the admitted shards' files)
    card = datasets.load_dataset(str(release), cache_dir=str(tmp_path / "hf3"))
    assert set(card) == {"train"} and card["train"].num_rows == 5


def test_release_card_files_and_checksums(built):
    import hashlib
    import json

    assert built["card_run"].success
    release = built["root"] / "release"
    summary = json.loads((release / "release.json").read_text())
    assert summary["rows"] == 5 and summary["by_split"] == {"free_form": 2, "region": 3}
    assert summary["by_license"] == {"CC0": 5}
    assert not (release / "data").exists(), "the release references the lake's filtered_release files, no copy"
    for f in summary["files"]:
        path = release / f["path"]
        assert path.resolve() == built["root"] / "filtered_release" / f"shard={f['shard']}" / "data.parquet"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
        assert pq.ParquetFile(path).metadata.num_rows == f["rows"] == sum(f["rows_by_split"].values())
    card = (release / "README.md").read_text()
    assert "| free_form | 2 |" in card and "open_clip:tiny/random-seed0" in card
    # cost per kept sample (docs/method.md §8), from the admitted shards' metric_scores and lake files
    scores = [r for s in summary["shards"] for r in built["lake"].read_table("metric_scores", s).to_pylist()]
    generated = [r for r in scores if not (r["outcome"] or "").startswith("upstream_failed")]
    cost = summary["cost"]
    assert cost["kept_samples"] == 5 and cost["by_mode"]["region"]["kept"] == 3
    assert cost["candidates_generated"] == len(generated) and len(generated) > 5
    assert cost["candidates_per_kept_sample"] == round(len(generated) / 5, 4)
    lake_bytes = sum(
        (built["root"] / a / f"shard={s}" / "data.parquet").stat().st_size
        for a in SHARD_ASSETS
        for s in summary["shards"]
        if (built["root"] / a / f"shard={s}" / "data.parquet").exists()
    )
    assert cost["lake_bytes_per_kept_sample"] == round(lake_bytes / 5, 4)
    scored = [r for r in generated if r["status"] == "ok" and r["mode"] == "region"]
    assert cost["by_mode"]["region"]["pass_rate"]["pass_all"] == round(
        sum(r["pass_all"] for r in scored) / len(scored), 4
    )
    assert "## Cost per kept sample" in card and "| candidates generated per kept sample |" in card
    meta = built["card_run"].asset_materializations_for_node("release_card")[0].metadata
    assert meta["candidates_per_kept_sample"].value == cost["candidates_per_kept_sample"]
    assert all((release / "figures" / f"{m}.png").stat().st_size > 1000 for m in RELEASE_METRICS)
    # the threshold plots over every scored candidate of the admitted shards, on the card and shown in the UI
    plots = sorted(p.name for p in (release / "figures").glob("thresholds_*.png"))
    assert plots == [f"thresholds_{m}_{k}.png" for m in ("free_form", "region") for k in ("histograms", "tradeoff")]
    for name in plots:
        png = (release / "figures" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert f"](figures/{name})" in card
    ui_card = meta["card"].value
    assert "data:image/png;base64," in ui_card and "](figures/" not in ui_card
    figures = list((release / "figures").glob("*.png"))
    assert len(figures) > len(plots) and ui_card.count("data:image/png;base64,") == len(figures), "all displayed"


def _results(root, shard, profile=RELEASE_TEST.name):
    """Every check's result over shards already in the lake (the checks' own code, without a run)."""
    lake, pipeline = LakeResource(root=str(root)), PipelineResource(profile_name=profile)
    return {
        "unique": cq.filtered_release_unique_ids_result(lake, shard),
        "masks": cq.filtered_release_region_masks_result(lake, shard),
        "decode": cq.filtered_release_images_decode_result(lake, shard),
        "thresholds": cq.filtered_release_meets_thresholds_result(lake, shard, pipeline),
        "ranges": sq.metric_scores_valid_ranges_result(lake, shard),
    }


def test_blocking_checks_catch_a_broken_release(built, tmp_path):
    good = built["lake"].read_table("filtered_release", SHARD).to_pylist()
    bad = [dict(r) for r in good]
    bad[1]["idx"] = bad[0]["idx"]  # duplicate idx
    region = next(r for r in bad if r["split"] == "region")
    region["mask_image"] = None  # region row without mask
    bad[0]["edited_image"] = {"bytes": b"\x89PNG\r\n\x1a\nnot really", "path": None}  # undecodable
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("filtered_release", SHARD, pa.Table.from_pylist(bad, schema=release_schema()))
    lake.write_table("metric_scores", SHARD, built["lake"].read_table("metric_scores", SHARD))
    res = _results(tmp_path / "lake", SHARD)
    assert not res["unique"].passed and res["unique"].metadata["duplicate_idx"].value == 1
    assert not res["masks"].passed and res["masks"].metadata["region_without_mask"].value == 1
    assert not res["decode"].passed and res["decode"].metadata["bad"].value == 1
    assert res["thresholds"].passed and res["ranges"].passed  # the permissive test thresholds
    # under the ultraedit profile's thresholds, random-model scores violate them
    assert not _results(tmp_path / "lake", SHARD, profile="ultraedit")["thresholds"].passed
    # and the untouched shard passes them all
    assert all(r.passed for r in _results(built["root"], SHARD).values())


def test_metric_range_check_and_expectations_catch_bad_values(built, tmp_path):
    scores = built["lake"].read_table("metric_scores", SHARD).to_pylist()
    ok = [r for r in scores if r["status"] == "ok"]
    ok[0]["ssim"] = float("nan")
    ok[1]["l1"] = 1.5
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("metric_scores", SHARD, pa.Table.from_pylist(scores, schema=lake_schema(built)))
    lake.write_table("filtered_release", SHARD, built["lake"].read_table("filtered_release", SHARD))
    res = _results(tmp_path / "lake", SHARD)["ranges"]
    assert not res.passed
    assert res.metadata["out_of_range_or_nan"].value == str({"ssim": 1, "l1": 1})
    # the GE suite: a table whose L1 is mostly 'changed everything' fails the L1 band expectation
    import numpy as np

    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "status": ["ok"] * 20,
            "mode": ["free_form"] * 20,
            **{
                m: rng.uniform(0.3, 0.6, 20)
                for m in ("clip_sim_source", "clip_sim_target", "clip_sim_dir", "clip_sim_image", "dinov2_sim", "ssim")
            },
            "l1": [0.9] * 20,
        }
    )
    # thresholds every value meets, the default L1 band: only the band can fail
    profile = dataclasses.replace(
        RELEASE_TEST, free_form_thresholds=dataclasses.replace(PERMISSIVE, min_l1=0.002, max_l1=0.5)
    )
    success, failures, count = run_metric_expectations(table, profile)
    assert not success and count >= 8
    assert [f["kwargs"]["column"] for f in failures] == ["l1"]


def lake_schema(built):
    return built["lake"].read_table("metric_scores", SHARD).schema
