"""Rounds, the stopping policy and the image-keeping rule of the fused step (docs/method.md §8), with the tiny editor
and scorer on a small synthetic shard."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
import torch

from tests.editing.test_editor_asset import SHARD, SIZE, _write_upstream
from ultraedit_dagster.core.imaging import decode_png, encode_png
from ultraedit_dagster.core.profiles import TINY, Rounds, Thresholds
from ultraedit_dagster.editing.generation import FREE_FORM, REGION, PairRequest, draw_params, load_mask
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rounds import RoundRunner, is_audited, needed_passing, needs_more
from ultraedit_dagster.editing.rows import candidate_uid
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.selection import select
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.scoring.rows import score_rows

IDS = {"clip_model_id": "c", "dinov2_model_id": "d", "scorer_input_sizes": "s"}
N = 6
THRESHOLDS = Thresholds(
    clip_sim_image=0.99, clip_sim_dir=0.0, clip_sim_source=0.1, clip_sim_target=0.15, dinov2_sim=0.99
)


def _profile(policy: str, audit: float = 0.0):
    return dataclasses.replace(
        TINY,
        free_form=dataclasses.replace(TINY.free_form, candidates_per_triplet=N),
        region=dataclasses.replace(TINY.region, candidates_per_triplet=N),
        rounds=Rounds(round_size=2, policy=policy, extra_rounds=0, audit_fraction=audit),
        free_form_thresholds=THRESHOLDS,
        region_thresholds=THRESHOLDS,
        selection=dataclasses.replace(TINY.selection, free_form_top_k=1, region_top_k=1, region_min_passing=1),
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return (
        EditorResource.from_profile(TINY, device="cpu", working_size=SIZE),
        ScorerResource.from_profile(TINY, device="cpu"),
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lk = Lake(str(tmp_path_factory.mktemp("rounds") / "lake"))
    _write_upstream(lk, SHARD, with_masks=True)
    return lk


def _run(lake, models, profile):
    editor, scorer = models
    runner = RoundRunner(lake, SHARD, profile=profile, global_seed=0, editor=editor, scorer=scorer, score_ids=IDS)
    cands, scores = [], []
    for c, s in runner.run():
        cands += c
        scores += s
    return runner, cands, scores


@pytest.fixture(scope="module")
def exhaustive(lake, models):
    return _run(lake, models, _profile("exhaustive"))


@pytest.fixture(scope="module")
def early(lake, models):
    return _run(lake, models, _profile("early"))


def test_policy_rule():
    r = Rounds(round_size=2, policy="early", extra_rounds=1)
    assert needs_more(2, 6, 1, None, r)  # not enough passing yet
    assert needs_more(2, 6, 1, 1, r)  # enough after round 1, one extra round to go
    assert not needs_more(4, 6, 2, 1, r)
    assert not needs_more(6, 6, 3, None, r)  # all N generated
    assert needs_more(4, 6, 2, 1, dataclasses.replace(r, policy="exhaustive"))
    assert needed_passing(True, TINY.selection) == 3
    with pytest.raises(ValueError):
        Rounds(policy="sometimes")


def test_exhaustive_reproduces_the_one_shot_selection(lake, models, exhaustive):
    """The old path: every candidate generated in one call, written as PNG, decoded, scored, then selected."""
    runner, cands, scores = exhaustive
    profile = _profile("exhaustive")
    editor, scorer = models
    ins = {r["instruction_uid"]: r for r in lake.read_table("edit_instructions", SHARD).to_pylist()}
    src = {r["uid"]: r for r in lake.read_table("source_images", SHARD).to_pylist()}
    masks = {m["instruction_uid"]: m for m in lake.read_table("region_masks", SHARD).to_pylist()}
    generated = {c["instruction_uid"] for c in cands if c["status"] == "ok"}
    assert generated == {"i-ff-a", "i-ff-b", "i-rg-a"}
    reqs, rows = [], []
    for uid in sorted(generated):
        i = ins[uid]
        image = decode_png(src[i["image_uid"]]["image"]).convert("RGB")
        region = i["mode"] == REGION
        for k in range(N):
            cu = candidate_uid(uid, k)
            params = draw_params(0, cu, i["mode"], profile.region if region else profile.free_form)
            mask = load_mask(decode_png(masks[uid]["soft_mask"]), image.size[0]) if region else None
            reqs.append(
                PairRequest(
                    cu, REGION if region else FREE_FORM, image, i["source_caption"], i["target_caption"], params, mask
                )
            )
            rows.append(dict(i, candidate_uid=cu, status="ok", error=None))
    fresh = editor.generator()
    results = fresh.generate(reqs)
    for row, res in zip(rows, results, strict=True):
        row["source_image"], row["target_image"] = encode_png(res.source), encode_png(res.target)
    old = select(score_rows(rows, scorer, profile, IDS), profile.selection)
    assert old.selected
    new_selected = sorted(c["candidate_uid"] for c in cands if c["outcome"] == "selected")
    assert new_selected == sorted(r["candidate_uid"] for r in old.selected)
    assert all(len([c for c in cands if c["instruction_uid"] == u]) == N for u in generated)


def test_early_never_generates_after_the_stop_and_selects_from_what_it_made(early, exhaustive):
    runner, cands, scores = early
    profile = _profile("early")
    by_triplet = defaultdict(list)
    for uid, rnd, k in runner.log:
        by_triplet[uid].append((rnd, k))
    stopped_early = 0
    for uid, gen in by_triplet.items():
        stop = runner.stop_log[uid]
        assert all(rnd < stop for rnd, _ in gen)  # nothing after the stop decision
        assert [k for _, k in gen] == list(range(len(gen)))  # candidate i is always the same candidate
        passing_by_round = defaultdict(int)
        mode = next(s["mode"] for s in scores if s["instruction_uid"] == uid)
        for s in scores:
            if s["instruction_uid"] == uid and s["pass_all"]:
                passing_by_round[s["round"]] += 1
        need = needed_passing(mode == REGION, profile.selection)
        before_last = sum(v for r, v in passing_by_round.items() if r < stop - 1)
        assert before_last < need  # it did not run a round it did not need
        if len(gen) < N:
            stopped_early += 1
            assert sum(passing_by_round.values()) >= need
    assert stopped_early >= 1
    made = {c["candidate_uid"] for c in cands}
    assert {s["candidate_uid"] for s in scores} == made
    assert {c["candidate_uid"] for c in cands if c["outcome"] == "selected"} <= made
    # the same candidate has the same parameters under both policies
    ex_c = {c["candidate_uid"]: c for c in exhaustive[1]}
    assert all(
        (c["seed"], c["p"], c["steps"]) == tuple(ex_c[c["candidate_uid"]][k] for k in ("seed", "p", "steps"))
        for c in cands
    )
    assert len(cands) < len(exhaustive[1])


def test_images_exist_exactly_for_the_rows_the_rule_names(lake, models):
    runner, cands, scores = _run(lake, models, _profile("exhaustive", audit=0.3))
    sel = _profile("exhaustive").selection
    by_uid = {s["candidate_uid"]: s for s in scores}
    passing = defaultdict(list)
    for c in cands:
        s = by_uid[c["candidate_uid"]]
        if s["status"] == "ok" and s["pass_all"]:
            passing[c["instruction_uid"]].append((-s["clip_sim_dir"], c["candidate_uid"]))
    top = {uid for lst in passing.values() for _, uid in sorted(lst)[: sel.free_form_top_k]}
    audited = 0
    for c in cands:
        uid = c["candidate_uid"]
        audit = c["status"] == "ok" and is_audited(0, uid, 0.3)
        audited += audit and uid not in top
        expect = uid in top or audit
        assert (c["source_image"] is not None) == expect and (c["target_image"] is not None) == expect, c["outcome"]
        assert c["outcome"] and by_uid[uid]["outcome"] == c["outcome"]
        if c["status"] == "ok" and uid not in top:
            assert c["outcome"].startswith("below_") or c["outcome"] == "passed_not_selected"
            assert by_uid[uid]["clip_sim_dir"] is not None  # scores kept without images
    assert audited >= 1 and runner.stats.images_kept["audit"] == audited
    assert np.isclose(sum(is_audited(0, f"u{i}", 0.01) for i in range(20000)) / 20000, 0.01, atol=0.003)
