"""The fused generate-and-score step (edit_candidates + metric_scores) end to end on a small synthetic shard with the
tiny editor and scorer, plus the edit_candidates checks (docs/method.md §8)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from ultraedit_dagster.core.imaging import decode_png, encode_png
from ultraedit_dagster.core.profiles import TINY
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.editing import checks as candidate_checks
from ultraedit_dagster.editing.assets import candidates_and_scores
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rows import EDIT_CANDIDATES_SCHEMA, candidate_uid
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.scoring.resources import ScorerResource

SHARD = "demo-00000"
NO_MASKS = "demo-00001"
SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png((np.kron(rng.random((8, 8, 3)), np.ones((8, 8, 1))) * 255).astype(np.uint8))


def _mask() -> bytes:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[16:48, 8:40] = 255
    m[12:52, 4:44][m[12:52, 4:44] == 0] = round(0.3 * 255)  # a soft band
    return encode_png(Image.fromarray(m, mode="L"))


def _binary(rows: slice, cols: slice) -> bytes:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[rows, cols] = 255
    return encode_png(Image.fromarray(m, mode="L"))


INNER, OUTER = _binary(slice(16, 48), slice(8, 40)), _binary(slice(12, 52), slice(4, 44))


def _ins(uid, image_uid, mode, status="ok", error=None, shard=SHARD):
    return {
        "instruction_uid": uid,
        "image_uid": image_uid,
        "shard": shard,
        "instruction": "make the cat a dog",
        "source_caption": "a cat on a sofa",
        "target_caption": "a dog on a sofa",
        "edit_type": "Replace",
        "mode": mode,
        "status": status,
        "error": error,
        "profile": "tiny",
    }


def _write_upstream(lake: Lake, shard: str, with_masks: bool) -> None:
    src = [
        {"uid": "img-a", "shard": shard, "image": _image(1), "status": "ok", "error": None, "profile": "tiny"},
        {"uid": "img-b", "shard": shard, "image": _image(2), "status": "ok", "error": None, "profile": "tiny"},
    ]
    lake.write_table("source_images", shard, pa.Table.from_pylist(src))
    rows = [
        _ins("i-ff-a", "img-a", "free_form", shard=shard),
        _ins("i-rg-a", "img-a", "region", shard=shard),
        _ins("i-up", "img-a", "free_form", status="failed", error="LLM error: 500", shard=shard),
        _ins("i-ff-b", "img-b", "free_form", shard=shard),
        _ins("i-rg-b", "img-b", "region", shard=shard),
        _ins("i-gone", "img-zzz", "free_form", shard=shard),
    ]
    lake.write_table("edit_instructions", shard, pa.Table.from_pylist(rows))
    if with_masks:
        masks = [
            {
                "instruction_uid": "i-rg-a",
                "soft_mask": _mask(),
                "soft_value": 0.3,
                "inner_mask": INNER,
                "outer_mask": OUTER,
                "qc": "ok",
                "status": "ok",
                "error": None,
            },
            {
                "instruction_uid": "i-rg-b",
                "soft_mask": None,
                "soft_value": None,
                "inner_mask": None,
                "outer_mask": None,
                "qc": "area 0.001 < 0.01",
                "status": "failed",
                "error": "mask qc: area 0.001 < 0.01",
            },
        ]
        lake.write_table("region_masks", shard, pa.Table.from_pylist(masks))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # the tiny profile's calibrated thresholds pass ~10-30% of its candidates on real captions; this shard's one
    # caption pair sits below them, so the module uses thresholds that pass part of it (selection, images, outcomes)
    import dataclasses

    from ultraedit_dagster.core import profiles

    mp = pytest.MonkeyPatch()
    passing = profiles.Thresholds(
        clip_sim_image=0.99, clip_sim_dir=0.0, clip_sim_source=0.1, clip_sim_target=0.15, dinov2_sim=0.99
    )
    mp.setitem(
        profiles.PROFILES,
        "tiny",
        dataclasses.replace(profiles.TINY, free_form_thresholds=passing, region_thresholds=passing),
    )
    yield from _run_module(tmp_path_factory)
    mp.undo()


def _run_module(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cand")
    lake = Lake(str(tmp / "lake"))
    _write_upstream(lake, SHARD, with_masks=True)
    _write_upstream(lake, NO_MASKS, with_masks=False)
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", [SHARD, NO_MASKS])
    resources = {
        "lake": LakeResource(root=str(tmp / "lake")),
        "pipeline": PipelineResource(profile_name="tiny", global_seed=0),
        "editor": EditorResource.from_profile(TINY, device="cpu", working_size=SIZE),
        "scorer": ScorerResource.from_profile(TINY, device="cpu"),
    }
    results = {}
    for shard in (SHARD, NO_MASKS):
        results[shard] = dg.materialize(
            [candidates_and_scores, *candidate_checks.asset_checks],
            partition_key=shard,
            instance=inst,
            resources=resources,
        )
    yield lake, inst, resources, results


def _outcome_rule_holds(cands: list[dict], scores: list[dict]) -> None:
    """Images exist exactly where image_kept says why; every row has its outcome and (if ok) its scores."""
    by_uid = {r["candidate_uid"]: r for r in scores}
    assert set(by_uid) == {r["candidate_uid"] for r in cands}
    for c in cands:
        s = by_uid[c["candidate_uid"]]
        assert c["outcome"] == s["outcome"] and c["outcome"]
        if c["image_kept"] is None:
            assert c["source_image"] is None and c["target_image"] is None
        else:
            assert c["status"] == "ok" and c["source_image"] and c["target_image"]
        if c["outcome"] == "selected":
            assert c["image_kept"] == "selected"
        if c["image_kept"] == "selectable":
            assert c["outcome"] == "passed_triplet_dropped"
        if s["status"] == "ok":
            assert s["clip_sim_dir"] is not None and s["unet_row_steps"] >= 2
            if not s["pass_all"]:
                assert c["outcome"].startswith("below_")
        elif c["error"].startswith("edit_candidates:"):
            assert c["outcome"].startswith("generation_failed: ")
        else:
            assert c["outcome"].startswith("upstream_failed: ")


def test_rows_per_candidate_and_failures_with_reasons(run):
    lake, _, _, results = run
    assert results[SHARD].success
    t = lake.read_table("edit_candidates", SHARD)
    assert t.schema.equals(EDIT_CANDIDATES_SCHEMA)
    rows = t.to_pylist()
    scores = lake.read_table("metric_scores", SHARD).to_pylist()
    _outcome_rule_holds(rows, scores)
    by = {}
    for r in rows:
        by.setdefault(r["instruction_uid"], []).append(r)
    ff, rg = TINY.free_form.candidates_per_triplet, TINY.region.candidates_per_triplet
    assert 1 <= len(by["i-ff-a"]) <= ff and 1 <= len(by["i-ff-b"]) <= ff and 1 <= len(by["i-rg-a"]) <= rg
    assert all(r["status"] == "ok" and r["error"] is None for r in by["i-ff-a"] + by["i-ff-b"] + by["i-rg-a"])
    assert [r["error"] for r in by["i-up"]] == ["edit_instructions: LLM error: 500"]
    assert [r["outcome"] for r in by["i-up"]] == ["upstream_failed: edit_instructions"]
    assert by["i-rg-b"][0]["status"] == "failed" and by["i-rg-b"][0]["error"].startswith("region_masks: mask qc")
    assert by["i-gone"][0]["error"].startswith("source_images:")
    assert len({r["candidate_uid"] for r in rows}) == len(rows)
    for r in by["i-ff-a"] + by["i-rg-a"]:
        if r["image_kept"]:
            assert decode_png(r["source_image"]).size == (SIZE, SIZE)
            assert decode_png(r["target_image"]).size == (SIZE, SIZE)
        assert r["editor_id"] == "tiny-seed0" and r["profile"] == "tiny"
        assert r["steps"] * r["strength"] >= 1 and 0 <= r["p"] <= 1
    assert all(r["mask_image"] is None and r["soft_value"] is None for r in by["i-ff-a"])
    assert all(r["mask_image"] is not None for r in by["i-rg-a"])
    # the band is drawn per candidate (docs/method.md §12), from the candidate uid, not region_masks' 0.3
    from ultraedit_dagster.regions.mask_math import choose_soft_value

    values = TINY.region.soft_mask_probability, TINY.region.soft_mask_values
    assert [r["soft_value"] for r in by["i-rg-a"]] == [
        choose_soft_value(0, r["candidate_uid"], *values) for r in by["i-rg-a"]
    ]
    for r in by["i-rg-a"]:
        stored = np.asarray(decode_png(r["mask_image"]))
        band = round((r["soft_value"] or 0.0) * 255)
        assert stored[30, 20] == 255 and stored[14, 6] == band and stored[0, 0] == 0
    # every row of both tables records its recipe and version; candidates spell the generator choices out
    assert {r["recipe"] for r in rows} == {"ultraedit"} and {r["recipe_version"] for r in rows} == {"ultraedit-v2"}
    assert {(s["recipe"], s["recipe_version"]) for s in scores} == {("ultraedit", "ultraedit-v2")}
    assert {r["recipe_options"] for r in rows} == {
        "control_uncond=False;cross_fraction=p;refine=True;region_masked_steps=end;sdxl_added_cond=True;"
        "self_max_tokens=256;soft_mask_draw=candidate"
    }
    assert {r["steps"] for r in by["i-rg-a"]} <= {10, 14} and {r["steps"] for r in by["i-ff-a"]} <= {3, 5, 8}
    assert [r["candidate_uid"] for r in by["i-ff-a"]] == [candidate_uid("i-ff-a", k) for k in range(len(by["i-ff-a"]))]
    ok = sum(r["status"] == "ok" for r in rows)
    mats = {m.asset_key.path[-1]: m for m in results[SHARD].get_asset_materialization_events()}
    cand_md = mats["edit_candidates"].materialization.metadata
    score_md = mats["metric_scores"].materialization.metadata
    assert cand_md["ok"].value == ok and cand_md["failed"].value == 3
    assert cand_md["candidates_per_second"].value > 0
    kept = sum(r["outcome"] == "selected" for r in rows)
    assert kept > 0 and cand_md["kept_samples"].value == kept == score_md["kept_samples"].value
    assert cand_md["candidates_per_kept_sample"].value == round(ok / kept, 4)
    assert score_md["lake_bytes_per_kept_sample"].value > 0 and score_md["model_seconds_per_kept_sample"].value > 0
    assert set(score_md["pass_rate_by_threshold"].value) == {
        "clip_sim_image",
        "clip_sim_dir",
        "clip_sim_source",
        "clip_sim_target",
        "dinov2_sim",
    }
    assert "data:image/jpeg;base64" in cand_md["preview"].value


def test_region_masks_not_materialized_gives_failed_rows(run):
    lake, _, _, results = run
    assert results[NO_MASKS].success
    rows = lake.read_table("edit_candidates", NO_MASKS).to_pylist()
    region = [r for r in rows if r["mode"] == "region"]
    assert len(region) == 2 and all(r["status"] == "failed" and "not materialized" in r["error"] for r in region)
    assert all(r["outcome"] == "upstream_failed: region_masks" for r in region)
    assert lake.num_rows("metric_scores", NO_MASKS) == len(rows)


def test_checks_pass(run):
    _, _, _, results = run
    evals = results[SHARD].get_asset_check_evaluations()
    assert {e.check_name for e in evals} == {"edit_candidates_integrity", "edit_candidates_failure_rate"}
    integrity = next(e for e in evals if e.check_name == "edit_candidates_integrity")
    assert integrity.passed


def _files(root, shard):
    return {
        a: (root / a / f"shard={shard}" / "data.parquet").read_bytes() for a in ("edit_candidates", "metric_scores")
    }


def test_rematerializing_reproduces_both_shards_byte_for_byte(run):
    lake, inst, resources, _ = run
    from pathlib import Path

    root = Path(lake.root)
    before = _files(root, SHARD)
    assert dg.materialize([candidates_and_scores], partition_key=SHARD, instance=inst, resources=resources).success
    assert _files(root, SHARD) == before


def test_a_crash_mid_step_leaves_the_previous_versions_of_both(run, monkeypatch):
    lake, inst, resources, _ = run
    from pathlib import Path

    root = Path(lake.root)
    before = _files(root, SHARD)
    calls = {"n": 0}

    def dies_after_the_failed_rows_were_written(self, *args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("worker killed")

    # the failed-upstream rows of both tables are already in the writers when the first scoring call dies
    monkeypatch.setattr(ScorerResource, "score", dies_after_the_failed_rows_were_written)
    with pytest.raises(Exception, match="worker killed"):
        dg.materialize([candidates_and_scores], partition_key=SHARD, instance=inst, resources=resources)
    assert calls["n"] == 1
    assert _files(root, SHARD) == before
    leftovers = [p.name for a in ("edit_candidates", "metric_scores") for p in (root / a / f"shard={SHARD}").iterdir()]
    assert leftovers == ["data.parquet", "data.parquet"]


def test_integrity_check_catches_a_broken_shard(run, tmp_path):
    lake, _, _, _ = run
    rows = lake.read_table("edit_candidates", SHARD).to_pylist()
    ok = next(r for r in rows if r["status"] == "ok" and r["mode"] == "region" and r["image_kept"])
    bad_lake = Lake(str(tmp_path / "lake"))
    broken = [
        dict(ok, target_image=None),
        dict(ok, mask_image=None, candidate_uid="x"),
        dict(ok, status="weird", candidate_uid="y"),
        dict(ok, image_kept=None, candidate_uid="z"),
        dict(ok, candidate_uid="z"),
    ]
    bad_lake.write_table("edit_candidates", SHARD, pa.Table.from_pylist(broken, schema=EDIT_CANDIDATES_SCHEMA))
    result = candidate_checks.integrity_result(LakeResource(root=str(tmp_path / "lake")), SHARD)
    assert not result.passed
    v = result.metadata["violations"].value
    assert v["kept_without_images"] == 1 and v["region_ok_without_mask"] == 1 and v["bad_status"] == 1
    assert v["images_without_reason"] == 1 and v["duplicate_candidate_uid"] == 1


def test_soft_mask_per_triplet_is_selectable(run, monkeypatch):
    import dataclasses

    from ultraedit_dagster.core import profiles

    lake, inst, resources, _ = run
    per_triplet = dataclasses.replace(
        profiles.PROFILES["tiny"], region=dataclasses.replace(profiles.TINY.region, soft_mask_draw="triplet")
    )
    monkeypatch.setitem(profiles.PROFILES, "tiny", per_triplet)
    assert dg.materialize([candidates_and_scores], partition_key=SHARD, instance=inst, resources=resources).success
    rows = [r for r in lake.read_table("edit_candidates", SHARD).to_pylist() if r["instruction_uid"] == "i-rg-a"]
    assert rows and all(r["soft_value"] == 0.3 and r["mask_image"] == _mask() for r in rows)
    assert all(r["recipe_options"].endswith("soft_mask_draw=triplet") for r in rows)
    # put the default shard back for the other tests
    monkeypatch.undo()
    assert dg.materialize([candidates_and_scores], partition_key=SHARD, instance=inst, resources=resources).success


def test_source_mode_real_keeps_the_photo(run, monkeypatch):
    import dataclasses

    from ultraedit_dagster.core import profiles

    lake, inst, resources, _ = run
    anything = profiles.Thresholds(-1.0, -1.0, -1.0, -1.0, -1.0)  # this test is about the stored source image
    real = dataclasses.replace(
        profiles.TINY,
        free_form=dataclasses.replace(profiles.TINY.free_form, source_mode="real"),
        free_form_thresholds=anything,
    )
    monkeypatch.setitem(profiles.PROFILES, "tiny", real)
    assert dg.materialize([candidates_and_scores], partition_key=NO_MASKS, instance=inst, resources=resources).success
    rows = [r for r in lake.read_table("edit_candidates", NO_MASKS).to_pylist() if r["status"] == "ok"]
    photo = lake.read_table("source_images", NO_MASKS).to_pylist()[0]["image"]
    assert rows and all(r["source_is_real"] for r in rows)
    kept = [r for r in rows if r["image_kept"]]
    assert kept and all(r["source_image"] == photo for r in kept if r["image_uid"] == "img-a")
    assert all(r["target_image"] != photo for r in kept)
