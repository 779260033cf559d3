"""The InstructPix2Pix recipe (docs/method.md §12): text-to-image pairs from pure noise with the tiny SD 1.5-shaped
editor; CFG with the drawn scale; self-attention shared in the conditional branch only, for round(p*T) steps; no
cross-attention refine; reproducible; its profile's parameters, filters and selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from ultraedit_dagster.core.profiles import IP2P, TINY_IP2P, get_profile
from ultraedit_dagster.editing.generation import FREE_FORM, CandidateParams, PairGenerator, PairRequest, draw_params
from ultraedit_dagster.editing.p2p import P2PConfig, leading_steps
from ultraedit_dagster.editing.params import recipe_version
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.models.editor import load_editor

SIZE = 64
SRC, TGT = "a photo of a cat on a couch", "a photo of a dog on a couch"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd():
    return load_editor("tiny-sd15")


def _gen(sd, **kw) -> PairGenerator:
    """The generator EditorResource.from_profile(TINY_IP2P) builds (same P2P choices)."""
    g = TINY_IP2P.generator
    p2p = P2PConfig(self_max_tokens=g.self_max_tokens, cross_fraction=g.cross_fraction, control_uncond=g.control_uncond)
    return PairGenerator(sd, p2p=p2p, refine=g.refine, recipe="ip2p", **kw)


def _image(seed: int, size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((np.kron(rng.random((8, 8, 3)), np.ones((size // 8, size // 8, 1))) * 255).astype(np.uint8))


def _req(uid, image, seed=3, steps=10, guidance=9.0, p=0.34, src=SRC, tgt=TGT):
    params = CandidateParams(seed=seed, steps=steps, strength=1.0, guidance=guidance, p=p)
    return PairRequest(uid, FREE_FORM, image, src, tgt, params, image_key=uid)


def test_the_profiles_follow_the_released_generate_img_dataset(sd):
    assert get_profile("ip2p") is IP2P and IP2P.recipe == TINY_IP2P.recipe == "ip2p"
    ff = IP2P.free_form
    assert ff.steps_choices == (100,) and ff.guidance_range == (7.5, 15.0) and ff.p_range == (0.1, 0.9)
    assert ff.candidates_per_triplet == 100 and ff.strength == 1.0 and IP2P.region_fraction == 0.0
    t = IP2P.free_form_thresholds
    assert (t.clip_sim_image, t.clip_sim_dir, t.clip_sim_source, t.clip_sim_target) == (0.70, 0.2, 0.2, 0.2)
    assert t.dinov2_sim < 0 and t.min_l1 == 0.0  # no DINOv2 filter, no L1 band in the released code
    assert IP2P.selection.free_form_top_k == 4 and IP2P.rounds.policy == "exhaustive"
    g = IP2P.generator
    assert g.self_max_tokens is None and g.refine is False and g.control_uncond is False
    for k in range(50):
        params = draw_params(0, f"c{k}", FREE_FORM, ff)
        assert params.steps == 100 and 7.5 <= params.guidance <= 15.0 and 0.1 <= params.p <= 0.9
    res = EditorResource.from_profile(TINY_IP2P)
    assert (res.model, res.recipe, res.self_max_tokens, res.refine) == ("tiny-sd15", "ip2p", None, False)
    assert recipe_version("ip2p") == "ip2p-v1"
    assert TINY_IP2P.free_form.steps_choices == (4,)  # the tiny variant: few steps
    assert type(sd.scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_first_unet_input_is_pure_noise_without_any_image(sd):
    """Two different images (one of them blank) give the same first UNet input, and it is the candidate's seeded
    noise at the first level, the same for the source and the target row."""
    inputs = []
    hook = sd.unet.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    try:
        gen = _gen(sd)
        gen.run_batch([_req("a", _image(1), steps=4)])
        first_a = inputs[0]
        inputs.clear()
        gen.run_batch([_req("b", Image.new("RGB", (SIZE, SIZE), (255, 255, 255)), steps=4)])
        first_b = inputs[0]
    finally:
        hook.remove()
    assert torch.equal(first_a, first_b)
    assert first_a.shape == (4, 4, SIZE // 16, SIZE // 16)  # CFG: [uncond src, uncond tgt, cond src, cond tgt]
    assert all(torch.equal(first_a[0], first_a[k]) for k in range(1, 4))  # the same noise for both images
    sched = type(sd.scheduler).from_config(sd.scheduler.config)
    sched.set_timesteps(4)
    sched.set_begin_index(0)
    noise = torch.randn((1, 4, SIZE // 16, SIZE // 16), generator=torch.Generator("cpu").manual_seed(3))
    expected = sched.scale_model_input(noise * sched.init_noise_sigma, sched.timesteps[0])
    assert torch.allclose(first_a[0], expected[0], atol=1e-6)
    # a non-ip2p generator with the same request does read the image (the check above can fail)
    inputs.clear()
    hook = sd.unet.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    try:
        img2img = PairGenerator(sd, p2p=P2PConfig(self_max_tokens=None), refine=False)
        img2img.run_batch([_req("a", _image(1), steps=4)])
        a = inputs[0]
        inputs.clear()
        img2img.run_batch([_req("b", _image(2), steps=4)])
        assert not torch.equal(a, inputs[0])
    finally:
        hook.remove()


@pytest.mark.parametrize("guidance", [7.5, 12.25])
def test_cfg_runs_with_the_drawn_scale(sd, monkeypatch, guidance):
    outputs, steps_in = [], []
    hook = sd.unet.register_forward_hook(lambda m, args, out: outputs.append(out[0].detach().float().clone()))
    step = type(sd.scheduler).step

    def recording_step(self, model_output, *args, **kwargs):
        steps_in.append(model_output.detach().clone())
        return step(self, model_output, *args, **kwargs)

    monkeypatch.setattr(type(sd.scheduler), "step", recording_step)
    try:
        _gen(sd).run_batch([_req("a", _image(1), steps=3, guidance=guidance)])
    finally:
        hook.remove()
    assert len(outputs) == len(steps_in) == 3
    for out, used in zip(outputs, steps_in, strict=True):
        uncond, cond = out.chunk(2)
        assert not torch.allclose(uncond, cond)
        assert torch.allclose(used, uncond + guidance * (cond - uncond), atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.34, 0.9])
def test_self_attention_shared_in_the_conditional_branch_only_for_round_p_t_steps(sd, p):
    steps = 10
    gen = _gen(sd)
    records = []
    gen.recorder = lambda name, kind, step, probs: records.append((name, kind, step, probs))
    gen.run_batch([_req("a", _image(1), steps=steps, p=p)])
    shared = leading_steps(p, steps)
    assert shared == round(p * steps)
    self_layers = {n for n in sd.unet.attn_processors if ".attn1." in n}
    selfs = [r for r in records if r[1] == "self"]
    assert {r[0] for r in selfs} == self_layers  # every self-attention layer, as the released code
    for _, _, step, probs in selfs:
        view = probs.view(2, 2, 1, *probs.shape[1:])  # [uncond / cond, source / target, pair, ...]
        cond_same = torch.equal(view[1, 1], view[1, 0])
        assert cond_same == (step < shared), (step, shared)
        if step > 0:  # step 0: both unconditional rows are identical inputs; later the branch is left alone
            assert not torch.equal(view[0, 1], view[0, 0])
    # no cross-attention refine: the target keeps its own cross-attention
    cross = [r for r in records if r[1] == "cross" and r[2] == 0]
    assert cross and all(
        not torch.equal(r[3].view(2, 2, 1, *r[3].shape[1:])[1, 1], r[3].view(2, 2, 1, *r[3].shape[1:])[1, 0])
        for r in cross
    )


def test_reproducible_and_independent_of_batch_mates(sd):
    gen = _gen(sd)
    reqs = [_req(f"r{k}", _image(k), seed=10 + k, steps=4, guidance=7.5 + k, p=0.2 * (k + 1)) for k in range(3)]
    src_b, tgt_b = gen.run_batch(reqs)
    src_again, tgt_again = _gen(sd).run_batch(reqs)
    assert torch.equal(src_b, src_again) and torch.equal(tgt_b, tgt_again)
    for k, req in enumerate(reqs):
        s, t = gen.run_batch([req])
        assert torch.allclose(s[0], src_b[k], atol=1e-4) and torch.allclose(t[0], tgt_b[k], atol=1e-4)
    assert not torch.equal(src_b[0], tgt_b[0])  # the caption pair makes two images
    # the seed decides the pair; the image does not
    other = dataclasses.replace(reqs[0], image=_image(99))
    s, t = gen.run_batch([other])
    assert torch.equal(s[0], gen.run_batch([reqs[0]])[0][0])
    out = gen.generate(reqs)
    assert all(r.ok and r.source.size == (SIZE, SIZE) for r in out)


def test_tiny_ip2p_shard_rows_record_the_recipe(tmp_path):
    from bench.rounds_cost import build_shard
    from ultraedit_dagster.editing.rounds import RoundRunner
    from ultraedit_dagster.lake.store import Lake
    from ultraedit_dagster.scoring.resources import ScorerResource

    lake = Lake(str(tmp_path / "lake"))
    build_shard(lake, "ip-00000", images=2, size=64)
    runner = RoundRunner(
        lake,
        "ip-00000",
        profile=TINY_IP2P,
        global_seed=0,
        editor=EditorResource.from_profile(TINY_IP2P, device="cpu", working_size=64),
        scorer=ScorerResource.from_profile(TINY_IP2P, device="cpu"),
        score_ids={"clip_model_id": "c", "dinov2_model_id": "d", "scorer_input_sizes": "s"},
    )
    out = list(runner.run())
    cands = [c for batch, _ in out for c in batch]
    scores = [s for _, batch in out for s in batch]
    assert cands and all(c["status"] == "ok" for c in cands)
    assert {(c["recipe"], c["recipe_version"]) for c in cands} == {("ip2p", "ip2p-v1")}
    assert {(s["recipe"], s["recipe_version"]) for s in scores} == {("ip2p", "ip2p-v1")}
    assert {c["recipe_options"] for c in cands} == {
        "control_uncond=False;cross_fraction=p;refine=False;region_masked_steps=end;sdxl_added_cond=True;"
        "self_max_tokens=all"
    }
    assert all(c["steps"] == 4 and c["strength"] == 1.0 and 7.5 <= c["guidance"] <= 15.0 for c in cands)
    # region instructions (the bench shard has some) are text-to-image pairs too: no mask, no band value
    region = [c for c in cands if c["mode"] == "region"]
    assert region and all(c["mask_image"] is None and c["soft_value"] is None for c in region)
    assert all(s["unet_row_steps"] == 2 * 2 * 4 for s in scores)  # CFG: 4 UNet rows x 4 steps
