"""region_masks end to end on a small synthetic shard, with the tiny tagger / grounder / SAM and the rule selector."""

from __future__ import annotations

import io

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from ultraedit_dagster.core.imaging import encode_png
from ultraedit_dagster.core.llm_client import ChatResult
from ultraedit_dagster.core.profiles import TINY
from ultraedit_dagster.core.resources import LLMEndpoint, PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.regions import checks as region_checks
from ultraedit_dagster.regions.assets import region_masks
from ultraedit_dagster.regions.resources import (
    GrounderResource,
    ObjectSelectorResource,
    SegmenterResource,
    TaggerResource,
)
from ultraedit_dagster.regions.rows import REGION_MASKS_SCHEMA

SHARD = "demo-00000"
SIZE = 128


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 180, np.uint8)
    img[30:90, 20:100] = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    return encode_png(img)


def _write_upstream(lake: Lake) -> None:
    src = [
        {"uid": "img-a", "shard": SHARD, "image": _image(1), "status": "ok", "error": None, "profile": "tiny"},
        {"uid": "img-b", "shard": SHARD, "image": _image(2), "status": "ok", "error": None, "profile": "tiny"},
        {
            "uid": "img-bad",
            "shard": SHARD,
            "image": None,
            "status": "failed",
            "error": "not a decodable image",
            "profile": "tiny",
        },
    ]
    lake.write_table("source_images", SHARD, pa.Table.from_pylist(src))

    def ins(uid, image_uid, instruction, source, target, edit_type, mode="region", status="ok", error=None):
        return {
            "instruction_uid": uid,
            "image_uid": image_uid,
            "shard": SHARD,
            "instruction": instruction,
            "source_caption": source,
            "target_caption": target,
            "edit_type": edit_type,
            "mode": mode,
            "status": status,
            "error": error,
            "profile": "tiny",
        }

    rows = [
        ins(
            "i-dog", "img-a", "replace the dog with a cat", "A dog lying on a rug.", "A cat lying on a rug.", "Replace"
        ),
        ins(
            "i-door",
            "img-a",
            "change the red door to blue",
            "A red door on a house.",
            "A blue door on a house.",
            "Change Color",
        ),
        ins("i-snow", "img-b", "make it snowy", "A road in summer.", "A snowy road in winter.", "Turn"),
        ins("i-free", "img-b", "make the car blue", "A red car.", "A blue car.", "Change Color", mode="free_form"),
        ins("i-upfail", "img-b", None, None, None, None, status="failed", error="LLM error: 500"),
        ins("i-badimg", "img-bad", "replace the cat with a dog", "A cat.", "A dog.", "Replace"),
        ins("i-missing", "img-zzz", "replace the cat with a dog", "A cat.", "A dog.", "Replace"),
    ]
    lake.write_table("edit_instructions", SHARD, pa.Table.from_pylist(rows))


def _resources(tmp_path, **selector_kw):
    return {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(profile_name="tiny", global_seed=0),
        "tagger": TaggerResource.from_profile(TINY, device="cpu"),
        "object_selector": ObjectSelectorResource.from_profile(TINY, **selector_kw),
        "grounder": GrounderResource.from_profile(TINY, device="cpu"),
        "segmenter": SegmenterResource.from_profile(TINY, device="cpu"),
    }


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("region")
    lake = Lake(str(tmp_path / "lake"))
    _write_upstream(lake)
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", [SHARD])
    result = dg.materialize(
        [region_masks, *region_checks.asset_checks], partition_key=SHARD, instance=inst, resources=_resources(tmp_path)
    )
    return result, lake.read_table("region_masks", SHARD)


def test_rows_statuses_and_reasons(materialized):
    result, table = materialized
    assert result.success
    assert table.schema.equals(REGION_MASKS_SCHEMA)
    rows = {r["instruction_uid"]: r for r in table.to_pylist()}
    # one row per region-mode instruction; free-form ones are not in the table
    assert set(rows) == {"i-dog", "i-door", "i-snow", "i-upfail", "i-badimg", "i-missing"}
    assert rows["i-upfail"]["status"] == "failed" and rows["i-upfail"]["error"].startswith("edit_instructions: ")
    assert rows["i-badimg"]["error"] == "source_images: not a decodable image"
    assert rows["i-missing"]["error"].startswith("source_images: image img-zzz not in the shard")
    for r in rows.values():
        assert r["shard"] == SHARD and r["profile"] == "tiny"
        assert (r["status"] == "ok") == (r["error"] is None)

    snow = rows["i-snow"]  # the NONE path: full-image masks, no grounding
    assert snow["status"] == "ok" and snow["edit_object"] == "NONE" and snow["qc"] == "ok"
    assert snow["grounder_id"] is None and snow["boxes"] == [] and snow["mask_area_fraction"] == 1.0
    for col in ("fine_mask", "hull_mask", "box_mask", "inner_mask", "outer_mask", "soft_mask"):
        m = np.asarray(Image.open(io.BytesIO(snow[col])))
        assert m.shape == (SIZE, SIZE) and m.dtype == np.uint8 and np.all(m == 255)

    for uid, obj in (("i-dog", "dog"), ("i-door", "door")):
        r = rows[uid]
        assert r["edit_object"] == obj and r["grounding_text"] == f"{obj}."
        assert (
            r["tags"] and len(r["tags"]) <= TINY.region_masking.max_tags and r["tagger_id"].startswith("open_clip:tiny")
        )
        assert r["object_selector_id"] == "rules"
        # the tiny grounder always finds boxes (random weights); max_boxes=2 in the tiny profile
        assert 1 <= len(r["boxes"]) <= 2 and all(s > 0.30 for s in r["box_scores"])
        assert r["grounder_id"].startswith("tiny-grounding-dino") and r["segmenter_id"].startswith("sam-tiny")
        assert r["qc"] is not None and r["contour_count"] is not None
        if r["status"] == "ok":
            assert r["qc"] == "ok" and 0.01 < r["mask_area_fraction"] < 0.9
        else:
            assert r["error"] == f"mask qc: {r['qc']}"
        fine = np.asarray(Image.open(io.BytesIO(r["fine_mask"])))
        assert fine.shape == (SIZE, SIZE) and set(np.unique(fine).tolist()) <= {0, 255}
        assert abs((fine > 0).mean() - r["mask_area_fraction"]) < 1e-9


def test_metadata_and_checks(materialized):
    result, _ = materialized
    mat = result.asset_materializations_for_node("region_masks")[0]
    md = mat.metadata
    assert md["rows"].value == 6
    outcomes = md["outcomes"].value
    assert outcomes["upstream"] == 3 and outcomes["whole image (NONE)"] == 1 and sum(outcomes.values()) == 6
    assert "data:image/jpeg;base64," in md["preview"].value or "no ok region rows" in md["preview"].value
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evals) == {
        c.check_specs_by_output_name[next(iter(c.check_specs_by_output_name))].name for c in region_checks.asset_checks
    }
    assert evals["region_masks_valid_masks"].passed
    assert evals["region_masks_ok_rows_have_masks"].passed
    assert evals["region_masks_qc_failure_rate"].passed  # tiny profile allows any rate


def test_mask_check_catches_wrong_sizes_and_values():
    good = encode_png(Image.fromarray(np.zeros((8, 8), np.uint8), mode="L"))
    grey = encode_png(Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L"))
    row = {c: good for c in ("fine_mask", "hull_mask", "box_mask", "inner_mask", "outer_mask", "soft_mask")}
    assert region_checks.mask_problems({**row, "soft_value": None}, (8, 8)) == []
    assert region_checks.mask_problems({**row, "soft_value": None}, (16, 16))  # wrong size
    assert region_checks.mask_problems({**row, "fine_mask": grey, "soft_value": None}, (8, 8))  # not binary
    assert region_checks.mask_problems({**row, "soft_mask": grey, "soft_value": None}, (8, 8))  # no band value
    assert region_checks.mask_problems({**row, "soft_mask": grey, "soft_value": 0.3}, (8, 8)) == []


class _FakeLLM:
    def __init__(self, answers):
        self.answers = answers
        self.prompts = []

    def chat_many(self, requests, **params):
        self.prompts += [m[0]["content"] for m in requests]
        return [ChatResult(self.answers.get(self._instruction(m[0]["content"]), "NONE"), 100, 3) for m in requests]

    @staticmethod
    def _instruction(prompt):
        return prompt.split("Now the real task.")[1].split("Instruction: ")[1].split("\n")[0]


def test_openai_selector_backend_parses_answers_and_reports_failures():
    sel = ObjectSelectorResource(
        backend="openai", endpoint=LLMEndpoint(model="test-model", base_url="http://127.0.0.1:9/v1")
    )
    fake = _FakeLLM({"replace the dog with a cat": "dog", "x": "The object is probably the large dog in front"})
    sel.endpoint._client = fake
    out = sel.select_many(
        [
            {
                "instruction": "replace the dog with a cat",
                "source_caption": "A dog.",
                "target_caption": "A cat.",
                "tags": ["dog"],
            },
            {
                "instruction": "make it snowy",
                "source_caption": "A road.",
                "target_caption": "A snowy road.",
                "tags": [],
            },
            {"instruction": "x", "source_caption": "A dog.", "target_caption": "A dog.", "tags": []},
        ]
    )
    assert out[0].objects == ("dog",) and out[0].backend == "openai:test-model" and out[0].prompt_tokens == 100
    assert out[1].is_none
    assert isinstance(out[2], ValueError)
    assert "Tags: dog" in fake.prompts[0]
