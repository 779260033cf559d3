"""A recipe chosen per registered manifest (docs/method.md §12): the registration records it, the fused step runs the
shard under the active profile's variant for that recipe (its editor, parameters, thresholds and selection), and
every row records it; filtered_release selects and its checks judge the shard under the same variant, and one release
card over both recipes names each one's thresholds and rule; registering the same name with another recipe is
refused."""

from __future__ import annotations

import dataclasses
import json

import dagster as dg
import pyarrow as pa
import pytest
import torch

from tests.editing.test_editor_asset import SIZE, _write_upstream
from ultraedit_dagster.core.profiles import IP2P, PROFILES, TINY, TINY_IP2P, ULTRAEDIT, profile_for_recipe
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.editing.assets import candidates_and_scores, editor_for_recipe
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.assets import filtered_release, release_card
from ultraedit_dagster.release.checks import asset_checks as release_checks
from ultraedit_dagster.release.selection import release_rule
from ultraedit_dagster.scoring.checks import asset_checks as scoring_checks
from ultraedit_dagster.scoring.metrics import THRESHOLD_METRICS
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.sources.manifests import ManifestError, manifest_recipe, register_manifest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _manifest(tmp_path) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"image": str(tmp_path / "a.png"), "caption": "a cat on a sofa"}) + "\n")
    return str(path)


def test_profile_variants():
    assert profile_for_recipe(TINY, None) is TINY and profile_for_recipe(TINY, "ultraedit") is TINY
    assert profile_for_recipe(TINY, "ip2p") is TINY_IP2P and profile_for_recipe(TINY_IP2P, "ultraedit") is TINY
    assert profile_for_recipe(ULTRAEDIT, "ip2p") is IP2P and profile_for_recipe(IP2P, "ultraedit") is ULTRAEDIT
    editor = EditorResource.from_profile(TINY, device="cpu", working_size=SIZE, batch_size=3)
    assert editor_for_recipe(editor, TINY) is editor
    other = editor_for_recipe(editor, TINY_IP2P)
    assert (other.model, other.recipe, other.working_size, other.batch_size) == ("tiny-sd15", "ip2p", SIZE, 3)
    assert editor_for_recipe(editor, TINY_IP2P) is other  # one per recipe and configuration: the model loads once


def test_registration_records_the_recipe_and_refuses_another(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    path = _manifest(tmp_path)
    reg = register_manifest(lake, path, name="capsip", recipe="ip2p")
    assert reg.shard_keys == ["capsip-00000"] and manifest_recipe(lake, "capsip-00000") == "ip2p"
    register_manifest(lake, path, name="capsip", recipe="ip2p")  # the same registration again: fine
    with pytest.raises(ManifestError, match="recipe ip2p"):
        register_manifest(lake, path, name="capsip")
    register_manifest(lake, path, name="caps")  # the same captions under another name, default recipe
    assert manifest_recipe(lake, "caps-00000") is None and manifest_recipe(lake, "never-00000") is None
    with pytest.raises(ManifestError, match="unknown recipe"):
        register_manifest(lake, path, name="capsx", recipe="dalle")


def test_the_step_runs_a_manifest_under_its_recipe(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    path = _manifest(tmp_path)
    register_manifest(lake, path, name="capsip", recipe="ip2p")
    register_manifest(lake, path, name="caps")
    for shard in ("capsip-00000", "caps-00000"):
        _write_upstream(lake, shard, with_masks=True)
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", ["capsip-00000", "caps-00000"])
    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(profile_name="tiny", global_seed=0),
        "editor": EditorResource.from_profile(TINY, device="cpu", working_size=SIZE),
        "scorer": ScorerResource.from_profile(TINY, device="cpu"),
    }
    for shard in ("capsip-00000", "caps-00000"):
        assert dg.materialize([candidates_and_scores], partition_key=shard, instance=inst, resources=resources).success
    ip = [r for r in lake.read_table("edit_candidates", "capsip-00000").to_pylist() if r["status"] == "ok"]
    ue = [r for r in lake.read_table("edit_candidates", "caps-00000").to_pylist() if r["status"] == "ok"]
    assert ip and ue
    assert {(r["recipe"], r["recipe_version"], r["editor_id"]) for r in ip} == {("ip2p", "ip2p-v1", "tiny-sd15-seed0")}
    assert all(r["steps"] == 4 and r["strength"] == 1.0 and r["guidance"] >= 7.5 for r in ip)
    assert {(r["recipe"], r["editor_id"]) for r in ue} == {("ultraedit", "tiny-seed0")}
    scores = lake.read_table("metric_scores", "capsip-00000").to_pylist()
    assert {s["recipe"] for s in scores} == {"ip2p"}
    # scored under the ip2p variant's thresholds (no DINOv2 filter)
    assert {s["thresholds"] for s in scores} == {
        "clip_sim_image>=0.999, clip_sim_dir>=0.0, clip_sim_source>=0.15, clip_sim_target>=0.15, dinov2_sim>=-1.0"
    }


def test_the_release_selects_and_checks_each_manifest_under_its_recipe(tmp_path, monkeypatch):
    """filtered_release and its checks use the shard's recipe profile, and one card over both recipes names each
    one's thresholds, rule and plots. The tiny models' CLIP scores rarely reach tiny's minimums, so the ip2p variant
    here has every minimum at -1 (its L1 band kept): selected under the active profile instead, it keeps nothing."""
    open_minimums = {m: -1.0 for m in THRESHOLD_METRICS}
    lenient = dataclasses.replace(
        TINY_IP2P,
        free_form_thresholds=dataclasses.replace(TINY_IP2P.free_form_thresholds, **open_minimums),
        region_thresholds=dataclasses.replace(TINY_IP2P.region_thresholds, **open_minimums),
    )
    monkeypatch.setitem(PROFILES, "tiny-ip2p", lenient)
    lake = Lake(str(tmp_path / "lake"))
    path = _manifest(tmp_path)
    register_manifest(lake, path, name="capsip", recipe="ip2p")
    register_manifest(lake, path, name="caps")
    for shard in ("capsip-00000", "caps-00000"):
        _write_upstream(lake, shard, with_masks=True)
    # the text stage writes an ip2p manifest's triplets free-form only (tiny-ip2p has no region share)
    instructions = lake.read_table("edit_instructions", "capsip-00000")
    free_form = [{**r, "mode": "free_form"} for r in instructions.to_pylist()]
    lake.write_table("edit_instructions", "capsip-00000", pa.Table.from_pylist(free_form, schema=instructions.schema))
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", ["capsip-00000", "caps-00000"])
    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(profile_name="tiny", global_seed=0),
        "editor": EditorResource.from_profile(TINY, device="cpu", working_size=SIZE),
        "scorer": ScorerResource.from_profile(TINY, device="cpu"),
    }
    for shard in ("capsip-00000", "caps-00000"):
        run = dg.materialize(
            [candidates_and_scores, filtered_release, *scoring_checks, *release_checks],
            partition_key=shard,
            instance=inst,
            resources=resources,
        )
        assert run.success
        failed = {c.check_name for c in run.get_asset_check_evaluations() if not c.passed}
        assert failed <= {"metric_scores_pass_rate", "metric_scores_expectations"}, (shard, failed)  # warnings
    for shard, profile in (("capsip-00000", lenient), ("caps-00000", TINY)):
        released = lake.read_table("filtered_release", shard).to_pylist()
        rule = release_rule(profile)
        assert {r["thresholds"] for r in released} <= set(rule["thresholds"].values()), shard
        assert {r["selection_rule"] for r in released} <= {rule["selection_rule"]}, shard
    ip_released = lake.read_table("filtered_release", "capsip-00000").to_pylist()
    assert ip_released, "the ip2p shard keeps samples under its own thresholds"
    per_triplet = {}
    for r in ip_released:
        per_triplet[r["instruction_uid"]] = per_triplet.get(r["instruction_uid"], 0) + 1
    assert max(per_triplet.values()) <= lenient.selection.free_form_top_k
    card = dg.materialize([release_card], instance=inst, resources=resources)
    assert card.success
    excluded = card.asset_materializations_for_node("release_card")[0].metadata["excluded_shards"].value
    assert excluded == {}, excluded
    text = (tmp_path / "lake" / "release" / "README.md").read_text()
    assert "| metric | free_form (tiny) | region (tiny) | free_form (tiny-ip2p) | region (tiny-ip2p) |" in text
    assert "tiny-ip2p shards: rule" in text and "tiny shards: rule" in text
    assert (tmp_path / "lake" / "release" / "figures" / "thresholds_tiny-ip2p_free_form_tradeoff.png").is_file()
    # what a kept sample cost under each recipe, from its own shards: the card, release.json and the demo's print
    by_profile = json.loads((tmp_path / "lake" / "release" / "release.json").read_text())["cost"]["by_profile"]
    assert set(by_profile) == {"tiny", "tiny-ip2p"}
    assert by_profile["tiny-ip2p"]["kept_samples"] == len(ip_released)
    assert by_profile["tiny"]["kept_samples"] == len(lake.read_table("filtered_release", "caps-00000"))
    assert set(by_profile["tiny-ip2p"]["model_seconds_per_kept_sample"]) == {"generation", "scoring"}
    assert "| tiny-ip2p | " in text
