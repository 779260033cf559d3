"""A recipe chosen per registered manifest (docs/method.md §12): the registration records it, the fused step runs the
shard under the active profile's variant for that recipe (its editor, parameters, thresholds and selection), and
every row records it; registering the same name with another recipe is refused."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import torch

from tests.editing.test_editor_asset import SIZE, _write_upstream
from ultraedit_dagster.core.profiles import IP2P, TINY, TINY_IP2P, ULTRAEDIT, profile_for_recipe
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.editing.assets import candidates_and_scores, editor_for_recipe
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
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
