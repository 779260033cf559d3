"""Prompt-to-Prompt control: the aligner, the attention processors, and pair independence (docs/method.md §3).

The tiny SDXL editor (seeded random weights, the real CLIP tokenizer) runs on CPU at 64 px (4x4 latent, attention at
4x4 and 2x2). Several tests would fail on the published controller's defect (CFG layout assumed with CFG off; pairs
mixed across the batch).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from ultraedit_dagster.editing.alignment import align_tokens, content_ids, refine_mapping
from ultraedit_dagster.editing.generation import CandidateParams, PairGenerator, PairRequest
from ultraedit_dagster.editing.p2p import P2PConfig, P2PController
from ultraedit_dagster.models.editor import build_clip_tokenizer, load_editor

SIZE = 64
CAPTIONS = [
    ("a photo of a cat sitting on a red couch", "a photo of a dog sitting on a red couch"),
    ("a bowl of green apples on a table", "a bowl of green apples and a lemon on a table"),
    ("two people walking on a snowy road at night", "two people walking on a road at night"),
]


# -- aligner ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return build_clip_tokenizer()


def _ids(tok, text):
    enc = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
    return content_ids(enc, tok.bos_token_id, tok.eos_token_id)


def test_align_replacement_insertion_deletion_on_ids():
    assert align_tokens([1, 2, 3, 4], [1, 2, 9, 4]) == [0, 1, -1, 3]  # replacement
    assert align_tokens([1, 2, 3], [1, 2, 7, 8, 3]) == [0, 1, -1, -1, 2]  # insertion
    assert align_tokens([1, 2, 7, 8, 3], [1, 2, 3]) == [0, 1, 4]  # deletion
    assert align_tokens([], [1, 2]) == [-1, -1]
    assert align_tokens([1, 2], []) == []


def test_align_repeated_words_is_monotone_and_maximal():
    # "a cat and a cat" -> "a dog and a cat": the unchanged 'a' 'and' 'a' 'cat' align in order
    src, tgt = [5, 6, 7, 5, 6], [5, 8, 7, 5, 6]
    assert align_tokens(src, tgt) == [0, -1, 2, 3, 4]
    # a repeated word deleted: only one of the two can align, and pairs stay increasing
    m = align_tokens([5, 6, 6, 7], [5, 6, 7])
    assert m[0] == 0 and m[2] == 3 and m[1] in (1, 2)
    pairs = [(i, j) for j, i in enumerate(align_tokens([3, 1, 3, 1, 3], [1, 3, 3, 1])) if i >= 0]
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(pairs))
    assert len(pairs) == 3  # LCS of (3 1 3 1 3) and (1 3 3 1) has length 3


def test_refine_mapping_on_clip_tokens(tok):
    s, t = "a photo of a cat on a couch", "a photo of a fluffy dog on a couch"
    si, ti = _ids(tok, s), _ids(tok, t)
    m = refine_mapping(si, ti)
    assert m.mapper.shape == (77,) and m.alphas.shape == (77,)
    # start token, then 'a photo of a' aligned one to one
    assert list(m.mapper[:5]) == [0, 1, 2, 3, 4] and m.alphas[:5].tolist() == [1.0] * 5
    words_t = tok.convert_ids_to_tokens(ti)
    for j, word in enumerate(words_t):
        pos = 1 + j
        if word in ("fluffy</w>", "dog</w>"):
            assert m.alphas[pos] == 0.0, word
        else:
            assert m.alphas[pos] == 1.0, word
            assert si[m.mapper[pos] - 1] == ti[j]
    # end token of the target reads the source's end token; padding follows it
    assert m.mapper[len(ti) + 1] == len(si) + 1 and m.alphas[len(ti) + 1] == 1.0
    assert m.mapper[len(ti) + 2] == len(si) + 2
    ident = refine_mapping(si, si)
    assert (ident.mapper == np.arange(77)).all() and (ident.alphas == 1).all()


def test_refine_mapping_multi_token_word(tok):
    # a word the BPE splits into several tokens aligns token by token
    s, t = "a xylophonist plays", "a xylophonist sings"
    si, ti = _ids(tok, s), _ids(tok, t)
    assert len(si) >= 4  # 'xylophonist' is more than one token
    m = refine_mapping(si, ti)
    assert m.alphas[1 : len(ti)].tolist() == [1.0] * (len(ti) - 1) and m.alphas[len(ti)] == 0.0


# -- controller, unit level ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("n", [1, 3])
def test_controller_reads_own_source_only(groups, n):
    torch.manual_seed(0)
    config = P2PConfig(self_max_tokens=None, control_uncond=True)  # every group controlled: the pairing is visible
    ctrl = P2PController(n, groups, num_steps=4, self_fractions=[1.0] * n, config=config)
    probs = torch.rand(groups * 2 * n, 2, 6, 6).softmax(-1)  # [B, H, N, N]
    out = ctrl.edit_self(probs, ctrl.self_active("x", 6)).view(groups, 2, n, 2, 6, 6)
    src = probs.view(groups, 2, n, 2, 6, 6)[:, 0]
    for g in range(groups):
        for i in range(n):
            assert torch.equal(out[g, 1, i], src[g, i])  # target i of group g == source i of group g
            assert torch.equal(out[g, 0, i], src[g, i])  # sources untouched


@pytest.mark.parametrize("n", [1, 3])
def test_self_injection_skips_the_unconditional_branch_by_default(n):
    """docs/method.md §12: P2P (and the ip2p recipe) share self-attention in the conditional CFG half only; the
    unconditional half is controlled only when `control_uncond` is selected. Without CFG the one group is controlled."""
    assert P2PConfig().control_uncond is False
    torch.manual_seed(0)
    probs = torch.rand(2 * 2 * n, 2, 6, 6).softmax(-1)  # [B, H, N, N], CFG: [uncond; cond]
    ref = probs.view(2, 2, n, 2, 6, 6)
    ctrl = P2PController(n, 2, num_steps=4, self_fractions=[1.0] * n, config=P2PConfig(self_max_tokens=None))
    out = ctrl.edit_self(probs, ctrl.self_active("x", 6)).view(2, 2, n, 2, 6, 6)
    assert torch.equal(out[0], ref[0])  # unconditional group: untouched
    assert torch.equal(out[1, 1], ref[1, 0])  # conditional group: target i reads source i
    both = P2PController(n, 2, 4, [1.0] * n, config=P2PConfig(self_max_tokens=None, control_uncond=True))
    out = both.edit_self(probs, both.self_active("x", 6)).view(2, 2, n, 2, 6, 6)
    assert torch.equal(out[0, 1], ref[0, 0]) and torch.equal(out[1, 1], ref[1, 0])  # the alternative: both groups
    single = P2PController(n, 1, 4, [1.0] * n, config=P2PConfig(self_max_tokens=None))
    p1 = probs[: 2 * n]
    out = single.edit_self(p1, single.self_active("x", 6)).view(1, 2, n, 2, 6, 6)
    assert torch.equal(out[0, 1], p1.view(1, 2, n, 2, 6, 6)[0, 0])  # no CFG: the one group is controlled


@pytest.mark.parametrize("num_steps", [1, 3, 4, 10])
def test_cross_refine_runs_for_each_pairs_own_p_by_default(num_steps):
    """docs/method.md §12: the released UltraEdit code builds its controller with the candidate's p for both the
    self-attention injection and the cross-attention refine; `cross_fraction` fixes it instead (0.8 before)."""
    from ultraedit_dagster.editing.alignment import RefineMapping
    from ultraedit_dagster.editing.p2p import leading_steps

    assert P2PConfig().cross_fraction is None
    mapping = RefineMapping(np.arange(5), np.ones(5, dtype=np.float32))
    ps = [0.1, 0.5, 0.9]
    ctrl = P2PController(3, 1, num_steps, ps, refine=[mapping] * 3)
    assert ctrl.cross_steps.tolist() == [leading_steps(p, num_steps) for p in ps] == ctrl.self_steps.tolist()
    fixed = P2PController(3, 1, num_steps, ps, refine=[mapping] * 3, config=P2PConfig(cross_fraction=0.8))
    assert fixed.cross_steps.tolist() == [leading_steps(0.8, num_steps)] * 3
    assert fixed.self_steps.tolist() == ctrl.self_steps.tolist()
    # p = 0.1 of 10 steps: refine on step 0 only, not on step 1 (0.8 would refine steps 0-7)
    if num_steps == 10:
        ctrl.begin_step(1)
        assert ctrl.cross_active("x").tolist() == [False, True, True]
        fixed.begin_step(1)
        assert fixed.cross_active("x").tolist() == [True, True, True]


def test_controller_cross_refine_unit():
    n, m = 2, 5
    from ultraedit_dagster.editing.alignment import RefineMapping

    maps = [
        RefineMapping(np.array([0, 1, 3, 3, 4]), np.array([1, 1, 0, 1, 1], dtype=np.float32)),
        None,  # no refine for pair 1
    ]
    ctrl = P2PController(n, 2, num_steps=2, self_fractions=[0, 0], refine=maps, config=P2PConfig(cross_fraction=0.8))
    probs = torch.rand(2 * 2 * n, 1, 3, m).softmax(-1)  # [B, H, N, M]
    out = ctrl.edit_cross(probs, ctrl.cross_active("x")).view(2, 2, n, 1, 3, m)
    ref = probs.view(2, 2, n, 1, 3, m)
    assert torch.equal(out[0], ref[0])  # unconditional group untouched
    assert torch.equal(out[1, 1, 1], ref[1, 1, 1])  # pair without refine untouched
    tgt, src = out[1, 1, 0], ref[1, 0, 0]
    assert torch.equal(tgt[..., [0, 1, 3, 4]], src[..., [0, 1, 3, 4]])  # aligned: the mapped source columns
    assert torch.equal(tgt[..., 2], ref[1, 1, 0][..., 2])  # unaligned: its own


def test_controller_step_fraction():
    ctrl = P2PController(3, 1, num_steps=4, self_fractions=[0.0, 0.5, 1.0], config=P2PConfig(self_max_tokens=None))
    seen = []
    for k in range(4):
        ctrl.begin_step(k)
        a = ctrl.self_active("x", 4)
        seen.append([False] * 3 if a is None else a.tolist())
    # round(p * T) leading steps: 0, 2, 4
    assert seen == [[False, True, True], [False, True, True], [False, False, True], [False, False, True]]
    from ultraedit_dagster.editing.p2p import leading_steps

    assert [leading_steps(f, 1) for f in (0.0, 0.1, 0.49, 0.5, 0.8, 1.0)] == [0, 0, 0, 1, 1, 1]
    assert [leading_steps(f, 4) for f in (0.1, 0.3, 0.8, 0.9)] == [0, 1, 3, 4]


# -- the processors in the tiny UNet ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the tiny models are too small to gain from threads; on a shared 2-core machine 2 threads oversubscribe badly
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    return load_editor("tiny")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    base = rng.random((SIZE // 8, SIZE // 8, 3))
    arr = np.kron(base, np.ones((8, 8, 1)))  # blocky, so the VAE latent has structure
    return Image.fromarray((arr * 255).astype(np.uint8))


def _requests(image, n, guidance=0.6, p=1.0, steps=8, strength=0.6, captions=CAPTIONS, mode="free_form"):
    return [
        PairRequest(
            uid=f"pair{i}",
            mode=mode,
            image=image,
            source_caption=captions[i % len(captions)][0],
            target_caption=captions[i % len(captions)][1],
            params=CandidateParams(seed=1000 + i, steps=steps, strength=strength, guidance=guidance, p=p),
            image_key="img",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("cfg", [False, True], ids=["cfg_off", "cfg_on"])
@pytest.mark.parametrize("n", [1, 3])
def test_p1_target_self_attention_equals_source_everywhere(pipe, image, n, cfg):
    gen = PairGenerator(pipe, batch_size=8, p2p=P2PConfig(self_max_tokens=None, cross_fraction=0.0), refine=False)
    records = []
    gen.recorder = lambda name, kind, step, probs: records.append((name, kind, step, probs))
    groups = 2 if cfg else 1
    gen.run_batch(_requests(image, n, guidance=3.0 if cfg else 0.6, p=1.0))
    self_layers = {name for name in pipe.unet.attn_processors if ".attn1." in name}
    self_records = [r for r in records if r[1] == "self"]
    assert {r[2] for r in self_records} == {0, 1, 2, 3}  # int(8 * 0.6) = 4 steps, every one injected
    assert len(self_records) == 4 * len(self_layers)
    assert {r[0] for r in self_records} == self_layers
    uncond_diff = 0.0
    for name, _, step, probs in self_records:
        view = probs.view(groups, 2, n, *probs.shape[1:])
        for i in range(n):
            # the conditional group (the only group without CFG) is injected ...
            assert torch.equal(view[groups - 1, 1, i], view[groups - 1, 0, i]), (name, step, i)
            if cfg and step > 0:  # ... the unconditional one is not (docs/method.md §12)
                uncond_diff = max(uncond_diff, float((view[0, 1, i] - view[0, 0, i]).abs().max()))
    assert not cfg or uncond_diff > 1e-4

    # the same run with p = 0: the target's own maps differ from its source's (the check above can fail)
    records.clear()
    gen.run_batch(_requests(image, n, guidance=3.0 if cfg else 0.6, p=0.0))
    diffs = [
        float((p.view(groups, 2, n, *p.shape[1:])[:, 1] - p.view(groups, 2, n, *p.shape[1:])[:, 0]).abs().max())
        for name, kind, step, p in records
        if kind == "self" and step > 0
    ]
    assert max(diffs) > 1e-4


def test_default_layers_are_16x16_and_smaller(pipe, image):
    # with self_max_tokens = 4 only the 2x2 layers (4 tokens) of the 64-px run are injected, not the 4x4 ones
    gen = PairGenerator(pipe, p2p=P2PConfig(self_max_tokens=4, cross_fraction=0.0), refine=False)
    records = []
    gen.recorder = lambda name, kind, step, probs: records.append((name, kind, step, probs))
    gen.run_batch(_requests(image, 2, p=1.0))
    selfs = [r for r in records if r[1] == "self"]
    assert selfs and all(r[3].shape[2] <= 4 for r in selfs)
    big = {n for n in pipe.unet.attn_processors if n.startswith("down_blocks.0") and ".attn1." in n}
    assert big and not big & {r[0] for r in selfs}
    for _, _, _, probs in selfs:
        view = probs.view(1, 2, 2, *probs.shape[1:])
        assert torch.equal(view[0, 1], view[0, 0])
    assert P2PConfig().self_max_tokens == 256  # the default: 16x16 and smaller


@pytest.mark.parametrize("cfg", [False, True], ids=["cfg_off", "cfg_on"])
def test_cross_refine_follows_source_on_aligned_tokens(pipe, image, cfg):
    gen = PairGenerator(pipe, p2p=P2PConfig(self_max_tokens=None, cross_fraction=1.0), refine=True)
    records = []
    gen.recorder = lambda name, kind, step, probs: records.append((name, kind, step, probs))
    n, groups = 3, (2 if cfg else 1)
    reqs = _requests(image, n, guidance=3.0 if cfg else 0.6, p=0.0)
    gen.run_batch(reqs)
    maps = [gen._refine(r.source_caption, r.target_caption) for r in reqs]
    cross = [r for r in records if r[1] == "cross"]
    assert cross
    for _, _, _, probs in cross:
        view = probs.view(groups, 2, n, *probs.shape[1:])  # [G, 2, n, H, N, 77]
        cond = groups - 1
        for i, m in enumerate(maps):
            aligned = np.flatnonzero(m.alphas == 1.0)
            unaligned = np.flatnonzero(m.alphas == 0.0)
            src, tgt = view[cond, 0, i], view[cond, 1, i]
            assert torch.equal(tgt[..., aligned], src[..., m.mapper[aligned]])
            if len(unaligned):  # a replaced / inserted word keeps its own attention
                assert not torch.equal(tgt[..., unaligned], src[..., unaligned])


@pytest.mark.parametrize("cfg", [False, True], ids=["cfg_off", "cfg_on"])
def test_pair_identical_alone_or_batched(pipe, image, cfg):
    """Pair i's images do not depend on its batch mates.

    Bit-for-bit identity across *batch sizes* is not something CPU/GPU GEMM and conv kernels promise (the tiny UNet
    alone differs by ~1e-6 between batch 1 and batch 6), so the floats are compared at 1e-4 and the 8-bit images at
    one grey level; contamination between pairs (the published defect) moves them by orders of magnitude more.
    """
    gen = PairGenerator(pipe, batch_size=8, p2p=P2PConfig(self_max_tokens=None))
    reqs = _requests(image, 3, guidance=3.0 if cfg else 0.6, p=0.7)
    src_b, tgt_b = gen.run_batch(reqs)
    png_b = gen.generate(reqs)
    for i, req in enumerate(reqs):
        src_a, tgt_a = gen.run_batch([req])
        assert torch.allclose(src_a[0], src_b[i], atol=1e-4) and torch.allclose(tgt_a[0], tgt_b[i], atol=1e-4), i
        alone = gen.generate([req])[0]
        for a, b in ((alone.source, png_b[i].source), (alone.target, png_b[i].target)):
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert float((tgt_b[0] - tgt_b[1]).abs().max()) > 1e-2  # different pairs, different images
    # a batch of identical requests: every row exactly the same (same batch, same arithmetic per row)
    same = [dataclasses.replace(reqs[0], uid=f"copy{k}") for k in range(3)]
    src_s, tgt_s = gen.run_batch(same)
    assert all(torch.equal(tgt_s[0], tgt_s[k]) for k in (1, 2))


@pytest.mark.parametrize("cfg", [False, True], ids=["cfg_off", "cfg_on"])
def test_identical_captions_give_identical_images(pipe, image, cfg):
    gen = PairGenerator(pipe, p2p=P2PConfig())
    same = [("a red car parked on a street", "a red car parked on a street"), CAPTIONS[0]]
    reqs = _requests(image, 2, guidance=3.0 if cfg else 0.6, p=0.3, captions=same)
    src, tgt = gen.run_batch(reqs)
    assert torch.equal(src[0], tgt[0])
    assert not torch.equal(src[1], tgt[1])


@pytest.mark.parametrize("cfg", [False, True], ids=["cfg_off", "cfg_on"])
def test_p0_without_refine_equals_plain_generation(pipe, image, cfg):
    gen = PairGenerator(pipe, p2p=P2PConfig(self_max_tokens=None), refine=False)
    reqs = _requests(image, 2, guidance=3.0 if cfg else 0.6, p=0.0)
    _, tgt = gen.run_batch(reqs)
    plain, _ = gen.run_batch(reqs, control=False, targets_only=True)
    assert torch.allclose(tgt, plain, atol=1e-5), float((tgt - plain).abs().max())
    # and the control is not a no-op: p = 1 moves the target away from the plain generation
    reqs1 = _requests(image, 2, guidance=3.0 if cfg else 0.6, p=1.0)
    _, tgt1 = gen.run_batch(reqs1)
    assert float((tgt1 - plain).abs().max()) > 1e-3
