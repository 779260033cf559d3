"""Issue 17: before generation, a free-form local instruction's object must be in the image (tags, else grounding),
otherwise the instruction fails with `object_not_in_image` instead of being generated (docs/method.md §4). A profile
setting: the `ultraedit` profile turns it on, `tiny` keeps it off."""

import dataclasses
import os
from collections import Counter

import numpy as np
import pyarrow as pa
from PIL import Image

from tests.regions.test_object_trust import _Grounder, _Segmenter, _Selector, _Tagger
from ultraedit_dagster.core.imaging import encode_png
from ultraedit_dagster.core.profiles import TINY, get_profile
from ultraedit_dagster.editing.rows import load_work
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.regions import checks as region_checks
from ultraedit_dagster.regions import mask_math as mm
from ultraedit_dagster.regions.rows import (
    FREE_FORM,
    OBJECT_NOT_FOUND,
    OBJECT_NOT_IN_IMAGE,
    REGION_MASKS_SCHEMA,
    process_images,
    region_mask_batches,
)

SHARD = "pres-00000"
TINY_PRESENCE = dataclasses.replace(
    TINY, region_masking=dataclasses.replace(TINY.region_masking, free_form_presence=True)
)

# instruction -> (uid, edit type, source caption, target caption, selector answer)
FREE_FORM_CASES = {
    "replace the dog with a cat": ("ff-tagged", "Replace", "A dog on a rug.", "A cat on a rug.", ("dog",)),
    "make the lamp green": ("ff-grounded", "Change Color", "A lamp by a dog.", "A green lamp by a dog.", ("lamp",)),
    "replace the vase with a clock": ("ff-absent", "Replace", "A vase on a rug.", "A clock on a rug.", ("vase",)),
    "make the hat red": ("ff-none", "Change Color", "A dog in a hat.", "A dog in a red hat.", ()),
    # presence is not required: the added object does not exist yet; a style change has no object
    "add a kite in the sky": ("ff-add", "Add", "A dog on a rug.", "A dog on a rug and a kite.", ()),
    "turn it into a watercolor painting": ("ff-style", "Transform Global", "A dog.", "A watercolor of a dog.", ()),
}


def _ins(uid, instruction, edit_type, source, target, mode, image_uid="img"):
    return {
        "instruction_uid": uid,
        "image_uid": image_uid,
        "shard": SHARD,
        "instruction": instruction,
        "source_caption": source,
        "target_caption": target,
        "edit_type": edit_type,
        "mode": mode,
        "status": "ok",
        "error": None,
        "profile": "tiny",
    }


def _instructions(image_uid="img") -> list[dict]:
    rows = [
        _ins(uid, text, et, src, tgt, FREE_FORM, image_uid) for text, (uid, et, src, tgt, _) in FREE_FORM_CASES.items()
    ]
    rows.append(_ins("rg-vase", "replace the vase with a lamp", "Replace", "A vase.", "A lamp.", "region", image_uid))
    return rows


def _models():
    answers = {text: case[4] for text, case in FREE_FORM_CASES.items()}
    answers["replace the vase with a lamp"] = ("vase",)
    # the tagger sees the dog and the rug; the grounder boxes the dog and the lamp (a lamp the tagger missed)
    return dict(
        tagger=_Tagger(("dog", "rug")),
        selector=_Selector(answers),
        grounder=_Grounder(("dog.", "lamp.")),
        segmenter=_Segmenter(),
    )


def test_free_form_local_edit_needs_its_object_in_the_image():
    image = Image.new("RGB", (64, 64), (120, 130, 140))
    checked = [
        i for i in _instructions() if i["instruction_uid"] in ("ff-tagged", "ff-grounded", "ff-absent", "ff-none")
    ]
    region = [i for i in _instructions() if i["mode"] == "region"]
    stats: Counter = Counter()
    rows, _ = process_images(
        [("img", image)],
        {"img": checked + region},
        shard=SHARD,
        profile="tiny",
        global_seed=0,
        qc=mm.MaskQC(),
        soft_probability=0.0,
        soft_values=(0.0,),
        stats=stats,
        **_models(),
    )
    by_uid = {r["instruction_uid"]: r for r in rows}
    # present (tagged, or grounded when untagged): no row; absent or unnamed: a failed row without masks
    assert set(by_uid) == {"ff-absent", "ff-none", "rg-vase"}
    absent = by_uid["ff-absent"]
    assert absent["mode"] == FREE_FORM and absent["status"] == "failed"
    assert absent["error"].startswith(f"{OBJECT_NOT_IN_IMAGE}: 'vase'"), absent["error"]
    assert absent["tags"] == ["dog", "rug"] and absent["grounder_id"] == "fake-grounder"
    assert by_uid["ff-none"]["error"].startswith(f"{OBJECT_NOT_FOUND}: "), by_uid["ff-none"]["error"]
    for r in (absent, by_uid["ff-none"]):
        assert all(r[c] is None for c in ("fine_mask", "soft_mask", "mask_area_fraction"))
    # region rows are unchanged by the check
    assert by_uid["rg-vase"]["mode"] == "region" and by_uid["rg-vase"]["error"].startswith(OBJECT_NOT_IN_IMAGE)
    assert stats == Counter(free_form_checked=4, free_form_present=2)
    assert region_checks.local_full_mask_rows(rows) == []


def _lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    img = np.full((64, 64, 3), 150, np.uint8)
    lake.write_table(
        "source_images",
        SHARD,
        pa.Table.from_pylist(
            [{"uid": "img", "shard": SHARD, "image": encode_png(img), "status": "ok", "error": None, "profile": "x"}]
        ),
    )
    lake.write_table("edit_instructions", SHARD, pa.Table.from_pylist(_instructions()))
    return lake


def _materialize_masks(lake: Lake, profile) -> tuple[list[dict], Counter]:
    stats: Counter = Counter()
    rows = [
        r
        for batch, _ in region_mask_batches(lake, SHARD, profile=profile, global_seed=0, stats=stats, **_models())
        for r in batch
    ]
    lake.write_table("region_masks", SHARD, pa.Table.from_pylist(rows, schema=REGION_MASKS_SCHEMA))
    return rows, stats


def _kept(instructions: dict[str, list[dict]]) -> set[str]:
    return {i["instruction_uid"] for items in instructions.values() for i in items}


def test_presence_on_fails_candidates_of_absent_objects_before_generation(tmp_path):
    lake = _lake(tmp_path)
    rows, stats = _materialize_masks(lake, TINY_PRESENCE)
    free = {r["instruction_uid"]: r for r in rows if r["mode"] == FREE_FORM}
    assert set(free) == {"ff-absent", "ff-none"} and all(r["status"] == "failed" for r in free.values())
    # Add and style edits are not checked; the four object edits are
    assert stats == Counter(free_form_checked=4, free_form_present=2)

    failed, instructions, _ = load_work(lake, SHARD, TINY_PRESENCE, "tiny-sdxl")
    reasons = {r["instruction_uid"]: r["error"] for r in failed}
    assert reasons["ff-absent"].startswith(f"region_masks: {OBJECT_NOT_IN_IMAGE}: 'vase'"), reasons
    assert reasons["ff-none"].startswith(f"region_masks: {OBJECT_NOT_FOUND}: ")
    assert all(r["status"] == "failed" and r["source_image"] is None for r in failed)
    # present objects, an Add and a style edit are generated
    assert _kept(instructions) == {"ff-tagged", "ff-grounded", "ff-add", "ff-style"}

    # region_masks not materialized: a local free-form edit is not generated unchecked; Add and style edits are
    os.remove(lake.shard_uri("region_masks", SHARD))
    assert not lake.exists("region_masks", SHARD)
    failed, instructions, _ = load_work(lake, SHARD, TINY_PRESENCE, "tiny-sdxl")
    unchecked = {r["instruction_uid"] for r in failed if "presence is not checked" in r["error"]}
    assert unchecked == {"ff-tagged", "ff-grounded", "ff-absent", "ff-none"}
    assert _kept(instructions) == {"ff-add", "ff-style"}


def test_presence_off_in_tiny_generates_every_free_form_instruction(tmp_path):
    assert TINY.region_masking.free_form_presence is False
    assert get_profile("tiny-ip2p").region_masking.free_form_presence is False
    assert get_profile("ultraedit").region_masking.free_form_presence is True
    lake = _lake(tmp_path)
    rows, stats = _materialize_masks(lake, TINY)
    assert [r["instruction_uid"] for r in rows] == ["rg-vase"] and stats["free_form_checked"] == 0
    failed, instructions, _ = load_work(lake, SHARD, TINY, "tiny-sdxl")
    assert [r["instruction_uid"] for r in failed] == ["rg-vase"]
    assert _kept(instructions) == {uid for uid, *_ in FREE_FORM_CASES.values()}


def test_region_masks_asset_with_presence_on_keeps_its_checks_coherent(tmp_path, monkeypatch):
    """The real asset and its checks with the tiny models and the setting on: free-form rows are only failed ones,
    the blocking checks pass, the metadata and edit_candidates' work list agree with the table."""
    import dagster as dg

    from tests.regions.test_region_asset import _resources
    from ultraedit_dagster.core import profiles
    from ultraedit_dagster.regions.assets import region_masks

    monkeypatch.setitem(profiles.PROFILES, "tiny", TINY_PRESENCE)
    lake = _lake(tmp_path)
    rng = np.random.default_rng(3)
    img = np.full((128, 128, 3), 180, np.uint8)
    img[30:90, 20:100] = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    lake.write_table(
        "source_images",
        SHARD,
        pa.Table.from_pylist(
            [{"uid": "img", "shard": SHARD, "image": encode_png(img), "status": "ok", "error": None, "profile": "x"}]
        ),
    )
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", [SHARD])
    res = dg.materialize(
        [region_masks, *region_checks.asset_checks], partition_key=SHARD, instance=inst, resources=_resources(tmp_path)
    )
    assert res.success
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert all(e.passed for e in evals.values()), {k: e.metadata for k, e in evals.items() if not e.passed}
    rows = lake.read_table("region_masks", SHARD).to_pylist()
    free = [r for r in rows if r["mode"] == FREE_FORM]
    assert all(r["status"] == "failed" and r["soft_mask"] is None for r in free)
    md = res.asset_materializations_for_node("region_masks")[0].metadata
    assert md["free_form_presence"].value is True and md["free_form_checked"].value == 4
    assert md["free_form_present"].value + len(free) == 4
    assert sum(md["free_form_outcomes"].value.values()) == len(free)
    assert evals["region_masks_qc_failure_rate"].metadata["free_form_failed"].value == len(free)
    failed, instructions, _ = load_work(lake, SHARD, TINY_PRESENCE, "tiny-sdxl")
    assert {r["instruction_uid"] for r in failed} & {uid for uid, *_ in FREE_FORM_CASES.values()} == {
        r["instruction_uid"] for r in free
    }
    assert {"ff-add", "ff-style"} <= _kept(instructions)


def test_ultraedit_profile_checks_presence_through_the_llm_object_selector(tmp_path):
    """The `ultraedit` profile's own settings and its openai object selector against the test server: one selection
    request per checked instruction (free-form object edits and region rows), the absent object fails."""
    from tests.openai_test_server import OpenAITestServer
    from ultraedit_dagster.core.profiles import ULTRAEDIT
    from ultraedit_dagster.core.resources import LLMEndpoint
    from ultraedit_dagster.regions.resources import ObjectSelectorResource

    lake = _lake(tmp_path)
    models = _models()
    with OpenAITestServer() as server:
        endpoint = LLMEndpoint(model="sel-test", base_url=server.base_url, cache_dir=str(tmp_path / "cache"))
        models["selector"] = ObjectSelectorResource.from_profile(ULTRAEDIT, endpoint=endpoint)
        assert models["selector"].backend == "openai"
        stats: Counter = Counter()
        rows = [
            r
            for batch, _ in region_mask_batches(lake, SHARD, profile=ULTRAEDIT, global_seed=0, stats=stats, **models)
            for r in batch
        ]
        # 4 free-form object edits + 1 region row; the Add and the style edit are not sent
        assert server.count("/chat/completions") == 5
    free = {r["instruction_uid"]: r for r in rows if r["mode"] == FREE_FORM}
    # the server names the object the instruction takes from the source caption: dog (tagged), lamp (grounded),
    # vase (absent), hat (neither tagged nor boxed)
    assert set(free) == {"ff-absent", "ff-none"}
    assert free["ff-absent"]["error"].startswith(f"{OBJECT_NOT_IN_IMAGE}: 'vase'")
    assert free["ff-none"]["error"].startswith(f"{OBJECT_NOT_IN_IMAGE}: 'hat'")
    assert all(r["object_selector_id"] == "openai:sel-test" and r["profile"] == "ultraedit" for r in rows)
    assert stats == Counter(free_form_checked=4, free_form_present=2)
