"""Metrics (SSIM vs scikit-image, L1, CLIP formulas, pass flags), selection, and the scorer's model loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import structural_similarity
from skimage.transform import resize

from ultraedit_dagster.core.profiles import SelectionRule, Thresholds
from ultraedit_dagster.release.selection import select
from ultraedit_dagster.scoring.metrics import clip_similarities, l1, pass_flags, ssim


def _sk(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, channel_axis=-1, data_range=1.0)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(2, 0, 1)[None]


def test_ssim_matches_skimage_on_random_pairs():
    rng = np.random.default_rng(0)
    for shape, noise in [((64, 64, 3), 0.05), ((48, 80, 3), 0.3), ((33, 29, 3), 1.0)]:
        a = rng.random(shape)
        b = np.clip(a + rng.normal(0, noise, shape), 0, 1)
        assert abs(ssim(_t(a), _t(b)).item() - _sk(a, b)) < 1e-3
    # batched: one call for several pairs gives the per-pair values
    a = rng.random((4, 40, 40, 3))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    got = ssim(torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2))
    want = [_sk(a[i], b[i]) for i in range(4)]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-3)


def test_ssim_matches_skimage_on_real_photos_and_uint8():
    photos = [
        resize(skdata.astronaut(), (128, 128), anti_aliasing=True),
        resize(skdata.chelsea(), (128, 128), anti_aliasing=True),
        resize(skdata.coffee(), (128, 128), anti_aliasing=True),
    ]
    for a, b in [(photos[0], photos[1]), (photos[1], photos[2]), (photos[0], np.clip(photos[0] * 0.8 + 0.1, 0, 1))]:
        assert abs(ssim(_t(a), _t(b)).item() - _sk(a, b)) < 1e-3
    # uint8 input is scaled by 255 like img_as_float
    a8 = (photos[0] * 255).round().astype(np.uint8)
    b8 = (photos[2] * 255).round().astype(np.uint8)
    assert abs(ssim(_t(a8), _t(b8)).item() - _sk(a8 / 255.0, b8 / 255.0)) < 1e-3
    assert ssim(_t(a8), _t(a8)).item() == pytest.approx(1.0, abs=1e-6)


def test_l1_is_mean_absolute_difference():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 51, np.uint8)
    assert l1(_t(a), _t(b)).item() == pytest.approx(0.2)
    assert l1(_t(a), _t(a)).item() == 0.0


def test_clip_similarity_formulas():
    rng = np.random.default_rng(1)
    v = [torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(3, 8))).float(), dim=-1) for _ in range(4)]
    img_s, img_t, txt_s, txt_t = v
    got = clip_similarities(img_s, img_t, txt_s, txt_t)
    for i in range(3):
        cos = lambda x, y: float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
        a, b, c, d = (t[i].numpy() for t in v)
        assert got["clip_sim_source"][i].item() == pytest.approx(cos(a, c), abs=1e-5)
        assert got["clip_sim_target"][i].item() == pytest.approx(cos(b, d), abs=1e-5)
        assert got["clip_sim_dir"][i].item() == pytest.approx(cos(b - a, d - c), abs=1e-5)
        assert got["clip_sim_image"][i].item() == pytest.approx(cos(a, b), abs=1e-5)
    # identical captions: no edit direction -> 0, not NaN
    same = clip_similarities(img_s, img_t, txt_s, txt_s)["clip_sim_dir"]
    assert torch.all(same == 0)


def test_pass_flags_follow_thresholds():
    thr = Thresholds(0.75, 0.22, 0.2, 0.2, 0.4)
    good = {
        "clip_sim_image": 0.8,
        "clip_sim_dir": 0.3,
        "clip_sim_source": 0.25,
        "clip_sim_target": 0.2,
        "dinov2_sim": 0.5,
        "ssim": 0.0,
    }
    flags = pass_flags(good, thr)
    assert flags["pass_all"] and all(flags.values())
    bad = {**good, "clip_sim_image": 0.74}
    flags = pass_flags(bad, thr)
    assert not flags["pass_clip_sim_image"] and not flags["pass_all"] and flags["pass_clip_sim_dir"]
    assert not pass_flags({**good, "dinov2_sim": math.nan}, thr)["pass_all"]
    assert set(flags) == {
        "pass_clip_sim_image",
        "pass_clip_sim_dir",
        "pass_clip_sim_source",
        "pass_clip_sim_target",
        "pass_dinov2_sim",
        "pass_all",
    }


def _cand(uid, instr, mode, d, ok=True, passed=True):
    return {
        "candidate_uid": uid,
        "instruction_uid": instr,
        "mode": mode,
        "clip_sim_dir": d,
        "status": "ok" if ok else "failed",
        "pass_all": passed,
    }


def test_selection_top_k_per_triplet():
    rows = [_cand(f"f{i}", "F", "free_form", d) for i, d in enumerate([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])]
    rows += [_cand("fx", "F", "free_form", 0.99, passed=False)]  # best score but fails: never kept
    rows += [_cand(f"r{i}", "R", "region", d) for i, d in enumerate([0.3, 0.2, 0.5, 0.1])]
    rows += [
        _cand("q0", "Q", "region", 0.9),
        _cand("q1", "Q", "region", 0.8),
        _cand("q2", "Q", "region", 0.7, passed=False),
    ]
    rows += [_cand("z0", "Z", "free_form", 0.5, ok=False, passed=False)]
    res = select(rows, SelectionRule(free_form_top_k=4, region_top_k=3, region_min_passing=3))
    kept = [(r["candidate_uid"], r["rank"]) for r in res.selected]
    assert kept == [("f3", 1), ("f1", 2), ("f5", 3), ("f2", 4), ("r2", 1), ("r0", 2), ("r1", 3)]
    assert res.triplets == 4 and res.triplets_kept == 2
    assert res.reasons == {"region: fewer than 3 candidates pass": 1, "all candidates failed upstream": 1}
    # configurable: region needs 2 passing -> Q kept
    res = select(rows, SelectionRule(free_form_top_k=1, region_top_k=1, region_min_passing=2))
    assert [r["candidate_uid"] for r in res.selected] == ["f3", "q0", "r2"]


# -- models ------------------------------------------------------------------------------------------------------


def test_tiny_clip_is_seeded_and_checkpoint_file_loads_through_open_clip(tmp_path):
    from ultraedit_dagster.models.clip import encode_images, encode_texts, load_clip, model_input_size

    model, _, tokenizer = load_clip("tiny", "random")
    assert model.token_embedding.num_embeddings == 49408
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    emb = encode_images(model, images)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert model_input_size(model) == (32, 32)
    # the real BPE tokenizer: long text is truncated to 77 tokens, ending in end-of-text
    tokens = tokenizer(["a photo of a cat " * 40])
    assert tokens.shape == (1, 77) and tokens[0, -1].item() == 49407
    txt = encode_texts(model, tokenizer, ["a cat", "a dog " * 100])
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))
    # seeded: same seed same weights; another seed differs
    again, _, _ = load_clip("tiny", "random")
    torch.testing.assert_close(encode_images(again, images), emb)
    other, _, _ = load_clip("tiny", "random", seed=1)
    assert not torch.allclose(encode_images(other, images), emb)
    # a checkpoint file (state_dict saved with torch.save) loads through open_clip's create_model_and_transforms
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(other.state_dict(), ckpt)
    loaded, preprocess, _ = load_clip("tiny", str(ckpt))
    torch.testing.assert_close(encode_images(loaded, images), encode_images(other, images))
    assert preprocess is not None
    with pytest.raises(FileNotFoundError):
        load_clip("tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError):
        load_clip("ViT-B-32", "random")


def test_clip_preprocessing_matches_open_clip_transform():
    """Our batched torch resize + normalisation agrees with open_clip's own PIL preprocess on a real photo."""
    from PIL import Image

    from ultraedit_dagster.models.clip import _mean_std, load_clip, model_input_size, resize_normalize, to_float_batch

    model, preprocess, _ = load_clip("tiny", "random")
    photo = Image.fromarray(skdata.astronaut()).resize((512, 512), Image.Resampling.BICUBIC)
    ours = resize_normalize(to_float_batch([photo]), model_input_size(model), *_mean_std(model))[0]
    theirs = preprocess(photo)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().mean().item() < 0.03  # PIL vs torch bicubic antialiasing differ slightly


def test_dinov2_tiny_normalisation_and_save_pretrained_roundtrip(tmp_path):
    from ultraedit_dagster.models.dinov2 import IMAGENET_MEAN, IMAGENET_STD, encode_images, load_dinov2

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    for name, cls in (("tiny", "Dinov2Model"), ("tiny-registers", "Dinov2WithRegistersModel")):
        model = load_dinov2(name)
        assert type(model).__name__ == cls
        emb = encode_images(model, images, size=56)
        assert emb.shape == (2, 32)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
        model.save_pretrained(tmp_path / name)
        loaded = load_dinov2(str(tmp_path / name))
        assert type(loaded).__name__ == cls
        torch.testing.assert_close(encode_images(loaded, images, size=56), emb)
    # ImageNet normalisation: a mean-coloured image becomes all zeros at the model input
    seen = {}
    model = load_dinov2("tiny")
    hook = model.embeddings.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    grey = np.tile((np.array(IMAGENET_MEAN) * 255).round().astype(np.uint8), (70, 70, 1))
    encode_images(model, [grey], size=56)
    hook.remove()
    assert seen["x"].shape == (1, 3, 56, 56)
    assert seen["x"].abs().max().item() < 0.5 / 255 / min(IMAGENET_STD) + 1e-4


def test_scorer_reuses_embeddings_and_scores_pairs():
    from ultraedit_dagster.models import clip as clip_mod
    from ultraedit_dagster.scoring.resources import ScorerResource

    scorer = ScorerResource(device="cpu")
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tgt = np.clip(src.astype(int) + 40, 0, 255).astype(np.uint8)
    calls = []
    original = clip_mod.encode_images

    def counting(model, images, batch_size=64):
        calls.append(len(images))
        return original(model, images, batch_size)

    clip_mod.encode_images = counting
    try:
        # the same source image in three pairs: encoded once
        out = scorer.score(
            [src, src, src], [tgt, src, tgt], ["a cat", "a cat", "a cat"], ["a red cat", "a cat", "a dog"]
        )
    finally:
        clip_mod.encode_images = original
    assert sum(calls) == 2
    assert out["clip_sim_image"][1] == pytest.approx(1.0, abs=1e-6) and out["ssim"][1] == pytest.approx(1.0)
    assert out["l1"][1] == 0.0 and out["dinov2_sim"][1] == pytest.approx(1.0, abs=1e-6)
    assert out["clip_sim_dir"][1] == 0.0
    assert abs(out["ssim"][0] - _sk(src / 255.0, tgt / 255.0)) < 1e-3
    assert out["clip_sim_image"][0] == pytest.approx(out["clip_sim_image"][2])
    assert scorer.clip_model_id == "open_clip:tiny/random-seed0"
    assert scorer.input_sizes(512) == "clip=32,dinov2=56,ssim=512"
