"""The editor: tokenizer, tiny pipelines, save/load through the real-checkpoint path, candidate parameters,
determinism, the region loop, failure detection and the out-of-memory path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from ultraedit_dagster.core.imaging import encode_png
from ultraedit_dagster.core.profiles import FreeFormGen, RegionGen
from ultraedit_dagster.editing.generation import (
    FREE_FORM,
    REGION,
    CandidateParams,
    PairGenerator,
    PairRequest,
    draw_params,
)
from ultraedit_dagster.editing.p2p import P2PConfig
from ultraedit_dagster.models.editor import (
    CLIP_VOCAB_SIZE,
    build_clip_tokenizer,
    clip_vocab_and_merges,
    editor_id,
    load_editor,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; avoid oversubscribing a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    return load_editor("tiny")


def _image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((size // 8, size // 8, 3))
    return Image.fromarray((np.kron(base, np.ones((8, 8, 1))) * 255).astype(np.uint8))


def _req(
    uid, image, params, mode=FREE_FORM, mask=None, src="a photo of a cat on a couch", tgt="a photo of a dog on a couch"
):
    return PairRequest(uid, mode, image, src, tgt, params, mask=mask, image_key="img")


# -- tokenizer and models ---------------------------------------------------------------------------------------------


def test_clip_tokenizer_built_offline_is_the_real_one():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == CLIP_VOCAB_SIZE and len(merges) == 48894
    tok = build_clip_tokenizer()
    # well-known CLIP ids: <|startoftext|> a photo of a cat <|endoftext|>
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    ids = tok("A Cat!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[:5] == [49406, 320, 2368, 256, 49407] and ids[5] == 49407
    assert build_clip_tokenizer(pad_token="!")("a cat", padding="max_length", max_length=8).input_ids[-1] == 0


def test_tiny_pipeline_shape(pipe):
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.text_encoder.config.vocab_size == pipe.text_encoder_2.config.vocab_size == CLIP_VOCAB_SIZE
    assert pipe.vae_scale_factor == 16
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert editor_id("tiny") == "tiny-seed0"
    # seeded: a second build has identical weights
    other = load_editor("tiny")
    for (n1, p1), (_, p2) in zip(pipe.unet.named_parameters(), other.unet.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1


def test_save_pretrained_and_load_back_through_the_checkpoint_path(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "tiny-sdxl")
    loaded = load_editor(str(tmp_path / "tiny-sdxl"))  # the from_pretrained path used for real checkpoints
    assert type(loaded).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert loaded.tokenizer("a photo of a cat").input_ids == pipe.tokenizer("a photo of a cat").input_ids
    params = CandidateParams(seed=7, steps=5, strength=0.6, guidance=0.5, p=0.5)
    a = PairGenerator(pipe).generate([_req("u", _image(), params)])[0]
    b = PairGenerator(loaded).generate([_req("u", _image(), params)])[0]
    assert encode_png(a.target) == encode_png(b.target) and encode_png(a.source) == encode_png(b.source)


def test_sd15_backend_with_cfg():
    sd = load_editor("tiny-sd15")
    gen = PairGenerator(sd, p2p=P2PConfig(self_max_tokens=None, cross_fraction=0.0), refine=False)
    records = []
    gen.recorder = lambda name, kind, step, probs: records.append((kind, probs))
    params = CandidateParams(seed=3, steps=4, strength=1.0, guidance=7.5, p=1.0)
    src, tgt = gen.run_batch([_req("u", _image(), params)])
    assert torch.isfinite(tgt).all() and not torch.equal(src, tgt)
    selfs = [p for k, p in records if k == "self"]
    # the conditional CFG group is injected (the unconditional one is not by default: test_p2p)
    assert selfs and all(
        torch.equal(p.view(2, 2, 1, *p.shape[1:])[1, 1], p.view(2, 2, 1, *p.shape[1:])[1, 0]) for p in selfs
    )


# -- parameters and determinism ---------------------------------------------------------------------------------------


def test_draw_params_deterministic_and_in_range():
    ff, rg = FreeFormGen(), RegionGen()
    a = [draw_params(0, f"cand{i}", FREE_FORM, ff) for i in range(200)]
    assert a == [draw_params(0, f"cand{i}", FREE_FORM, ff) for i in range(200)]
    assert a != [draw_params(1, f"cand{i}", FREE_FORM, ff) for i in range(200)]
    assert {x.steps for x in a} == {3, 5, 8} and all(x.strength == 0.6 for x in a)
    assert all(0.4 <= x.guidance <= 0.8 and 0.1 <= x.p <= 0.9 for x in a)
    assert len({x.seed for x in a}) == 200 and all(0 <= x.seed < 2**63 for x in a)
    r = [draw_params(0, f"cand{i}", REGION, rg) for i in range(200)]
    assert {x.steps for x in r} == {10, 14} and {x.guidance for x in r} == {0.0, 0.2, 0.4, 0.6}
    assert all(int(x.steps * x.strength) >= 1 for x in r)
    with pytest.raises(ValueError, match="< 1"):
        draw_params(0, "c", FREE_FORM, dataclasses.replace(ff, steps_choices=(1,), strength=0.5))


def test_same_uid_gives_byte_identical_pngs(pipe):
    params = draw_params(0, "cand-x", FREE_FORM, FreeFormGen(steps_choices=(5,)))
    runs = []
    for _ in range(2):
        res = PairGenerator(pipe).generate([_req("cand-x", _image(), params)])[0]
        runs.append((encode_png(res.source), encode_png(res.target)))
    assert runs[0] == runs[1]
    other = PairGenerator(pipe).generate([_req("cand-y", _image(), dataclasses.replace(params, seed=params.seed + 5))])[
        0
    ]
    assert encode_png(other.target) != runs[0][1]


def test_working_size_resizes_in_and_out(pipe):
    gen = PairGenerator(pipe, working_size=64)
    res = gen.generate([_req("u", _image(128), CandidateParams(seed=1, steps=3, strength=0.6, guidance=0.5, p=0.5))])[0]
    assert res.ok and res.source.size == (128, 128) and res.target.size == (128, 128)


# -- region loop ------------------------------------------------------------------------------------------------------


def test_region_loop_keeps_the_outside_of_a_hard_mask(pipe):
    size = 128
    mask = np.zeros((size, size), np.float32)
    mask[:, : size // 2] = 1.0  # edit the left half only
    params = CandidateParams(seed=11, steps=4, strength=1.0, guidance=0.0, p=0.3)
    gen = PairGenerator(pipe)
    src, tgt = gen.run_batch(
        [
            _req(
                "r",
                _image(size),
                params,
                REGION,
                mask,
                src="a red apple on a wooden table",
                tgt="a green pear on a marble table",
            )
        ]
    )
    lat, real = gen.last_latents, gen.last_real_latents  # [2, 4, 8, 8]
    half = lat.shape[-1] // 2
    # the last step is a masked step: outside the mask the latents ARE the real image's, for source and target
    assert torch.equal(lat[:, :, :, half:], real[:, :, :, half:])
    assert float((lat[1, :, :, :half] - lat[0, :, :, :half]).abs().mean()) > 1e-3  # inside, the target differs
    # pixels: far from the boundary the target's outside matches the regenerated source much better than inside
    out_diff = float((tgt[0, :, :, -size // 4 :] - src[0, :, :, -size // 4 :]).abs().mean())
    in_diff = float((tgt[0, :, :, : size // 4] - src[0, :, :, : size // 4]).abs().mean())
    assert out_diff < 0.25 * in_diff, (out_diff, in_diff)
    # without a mask (all ones) the same pair changes everywhere: the mask is what keeps the outside
    _, tgt_full = gen.run_batch(
        [
            _req(
                "r",
                _image(size),
                params,
                REGION,
                np.ones_like(mask),
                src="a red apple on a wooden table",
                tgt="a green pear on a marble table",
            )
        ]
    )
    assert not torch.equal(gen.last_latents[:, :, :, half:], real[:, :, :, half:])


def test_region_soft_mask_band_blends(pipe):
    size = 64
    mask = np.full((size, size), 0.5, np.float32)
    params = CandidateParams(seed=2, steps=2, strength=1.0, guidance=0.0, p=0.0)
    gen = PairGenerator(pipe)
    gen.run_batch([_req("s", _image(size), params, REGION, mask)])
    # last (masked) step: latent = 0.5 * real + 0.5 * denoised  ->  strictly between, not equal to the real latent
    assert not torch.equal(gen.last_latents, gen.last_real_latents)


def test_region_request_without_mask_is_refused(pipe):
    with pytest.raises(ValueError, match="no mask"):
        PairGenerator(pipe).run_batch([_req("m", _image(), CandidateParams(1, 4, 0.5, 0.0, 0.5), REGION, None)])


# -- failures ---------------------------------------------------------------------------------------------------------


def test_nan_and_blank_outputs_fail_their_rows(pipe, monkeypatch):
    gen = PairGenerator(pipe)
    params = CandidateParams(seed=1, steps=3, strength=0.6, guidance=0.5, p=0.5)
    reqs = [_req(f"u{i}", _image(), params) for i in range(3)]

    def fake(batch, control=True, targets_only=False):
        src = torch.rand(len(batch), 3, 64, 64)
        tgt = torch.rand(len(batch), 3, 64, 64)
        tgt[1, 0, 5, 5] = float("nan")
        src[2] = 0.5  # a constant grey source
        return src, tgt

    monkeypatch.setattr(gen, "run_batch", fake)
    res = gen.generate(reqs)
    assert res[0].ok
    assert not res[1].ok and "NaN" in res[1].error
    assert not res[2].ok and "blank source" in res[2].error


def test_simulated_oom_halves_the_batch_then_fails_rows(pipe, monkeypatch):
    gen = PairGenerator(pipe, batch_size=4)
    params = CandidateParams(seed=1, steps=3, strength=0.6, guidance=0.5, p=0.5)
    reqs = [_req(f"u{i}", _image(), params) for i in range(4)]
    sizes = []

    def fits_two(batch, control=True, targets_only=False):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.rand(len(batch), 3, 64, 64), torch.rand(len(batch), 3, 64, 64)

    monkeypatch.setattr(gen, "run_batch", fits_two)
    res = gen.generate(reqs)
    assert sizes == [4, 2, 2] and all(r.ok for r in res)
    assert gen.stats.oom_retries == 1 and gen.batch_size == 2  # later batches start at the half size
    assert [r.uid for r in res] == [r.uid for r in reqs]

    gen2 = PairGenerator(pipe, batch_size=3)
    sizes.clear()

    def never_fits(batch, control=True, targets_only=False):
        sizes.append(len(batch))
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gen2, "run_batch", never_fits)
    res = gen2.generate(reqs[:3])
    assert sizes == [3, 2, 1, 1, 1]  # halved down to single pairs before a row fails
    assert all(not r.ok and "out of memory" in r.error for r in res)

    def other_error(batch, control=True, targets_only=False):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(gen2, "run_batch", other_error)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # only OOM is retried
        gen2.generate(reqs[:1])


def test_oom_at_8_that_fits_at_2_generates_every_row_with_the_failed_tensors_freed(pipe, monkeypatch):
    """docs/method.md §8: the recovery runs after the `except` block (the failed attempt's tensors are unreachable
    during the retry) and keeps halving, 8 -> 4 -> 2, instead of failing rows after one halving."""
    import weakref

    gen = PairGenerator(pipe, batch_size=8)
    params = CandidateParams(seed=1, steps=3, strength=0.6, guidance=0.5, p=0.5)
    reqs = [_req(f"u{i}", _image(), params) for i in range(8)]
    sizes: list[int] = []
    failed_attempts: list[weakref.ref] = []
    alive_during_retry: list[bool] = []

    def fits_two(batch, control=True, targets_only=False):
        alive_during_retry.append(any(ref() is not None for ref in failed_attempts))
        sizes.append(len(batch))
        activations = torch.empty(len(batch), 4, 16, 16)  # what the attempt holds when it runs out of memory
        if len(batch) > 2:
            failed_attempts.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.rand(len(batch), 3, 64, 64), torch.rand(len(batch), 3, 64, 64)

    monkeypatch.setattr(gen, "run_batch", fits_two)
    res = gen.generate(reqs)
    assert sizes == [8, 4, 2, 2, 4, 2, 2]
    assert all(r.ok for r in res) and [r.uid for r in res] == [r.uid for r in reqs]
    assert gen.batch_size == 2 and gen.stats.oom_retries == 3
    assert failed_attempts and not any(alive_during_retry)


def test_vae_encoding_is_cached_per_image_across_batches(pipe):
    gen = PairGenerator(pipe, batch_size=2)
    params = CandidateParams(seed=1, steps=3, strength=0.6, guidance=0.5, p=0.5)
    image = _image()
    reqs = [dataclasses.replace(_req(f"u{i}", image, params), image_key="img-a") for i in range(4)]
    gen.generate(reqs[:2])
    gen.generate(reqs[2:])  # a later round of the same image: no new encoding
    assert gen.vae_encodings == 1
    gen.forget_images(["img-a"])
    gen.generate(reqs[:1])
    assert gen.vae_encodings == 2


def test_load_pretrained_passes_the_dtype_every_allowed_diffusers_honours(monkeypatch):
    """docs/method.md §8: diffusers before the `dtype` rename ignores `dtype=` and loads fp32; the floor pyproject
    allows (0.32) only knows `torch_dtype`. Half precision also asks for the fp16 weight variant first."""
    import diffusers
    import diffusers.utils.deprecation_utils as dep

    from ultraedit_dagster.models import editor as editor_mod

    calls: list[dict] = []

    def fake_from_pretrained(model, **kwargs):
        calls.append(kwargs)
        if kwargs.get("variant") == "fp16" and model == "no-variant":
            raise ValueError("no fp16 variant files")
        return "pipe"

    monkeypatch.setattr(diffusers.AutoPipelineForImage2Image, "from_pretrained", fake_from_pretrained)
    monkeypatch.delattr(dep, "_resolve_dtype")  # an older diffusers
    assert editor_mod.load_pretrained("some/model", dtype=torch.float16) == "pipe"
    assert calls[-1] == {"torch_dtype": torch.float16, "variant": "fp16"}
    assert editor_mod.load_pretrained("no-variant", dtype=torch.float16) == "pipe"
    assert calls[-1] == {"torch_dtype": torch.float16}  # falls back to the full weights, cast on load
    monkeypatch.undo()
    monkeypatch.setattr(diffusers.AutoPipelineForImage2Image, "from_pretrained", fake_from_pretrained)
    editor_mod.load_pretrained("some/model", dtype=torch.float32)
    assert calls[-1] == {"dtype": torch.float32}  # this diffusers: the new name, no deprecation warning


def test_p2p_controller_masks_live_on_the_device_once_per_step():
    """docs/method.md §8: no host-to-device copy inside the attention calls; the masks are built in begin_step."""
    from ultraedit_dagster.editing.p2p import P2PController

    ctrl = P2PController(2, 1, 4, [0.5, 1.0], None, device="cpu")
    ctrl.begin_step(1)
    first = ctrl.self_active("up.attn1", 16)
    assert first is ctrl.self_active("down.attn1", 16)  # the same tensor for every layer of the step
    assert first.tolist() == [True, True]
    ctrl.begin_step(3)
    assert ctrl.self_active("up.attn1", 16).tolist() == [False, True]


# -- released-code defaults (docs/method.md §12) ----------------------------------------------------------------------


def test_masked_step_order_end_by_default_released_selectable():
    from ultraedit_dagster.editing.generation import is_masked_step

    # ours: counted back from the last step, so a 3-step run is masked, plain, masked
    assert [is_masked_step(k, 3, "end") for k in range(3)] == [True, False, True]
    # the released code's i % 2 == 1: plain, masked, plain
    assert [is_masked_step(k, 3, "released") for k in range(3)] == [False, True, False]
    # 4 steps: the two orders agree
    assert [is_masked_step(k, 4, "end") for k in range(4)] == [is_masked_step(k, 4, "released") for k in range(4)]
    with pytest.raises(ValueError, match="region_masked_steps"):
        PairGenerator(load_editor("tiny"), region_masked_steps="odd")


def test_region_3_step_run_ends_on_the_real_image_only_with_the_end_order(pipe):
    size = 64
    mask = np.zeros((size, size), np.float32)
    mask[:, : size // 2] = 1.0
    params = CandidateParams(seed=5, steps=3, strength=1.0, guidance=0.0, p=0.3)  # 3 steps run
    req = _req("r3", _image(size), params, REGION, mask)
    default = PairGenerator(pipe)
    assert default.region_masked_steps == "end"
    default.run_batch([req])
    half = default.last_latents.shape[-1] // 2
    assert torch.equal(default.last_latents[..., half:], default.last_real_latents[..., half:])
    released = PairGenerator(pipe, region_masked_steps="released")
    released.run_batch([req])
    # the last step is plain: the outside is denoised once more and leaves the real latent
    assert not torch.equal(released.last_latents[..., half:], released.last_real_latents[..., half:])


def test_sdxl_added_conditioning_on_by_default_off_selectable(pipe):
    calls = []
    hook = pipe.unet.add_embedding.register_forward_hook(lambda *a: calls.append(1))
    try:
        params = CandidateParams(seed=9, steps=3, strength=0.6, guidance=0.5, p=0.5)
        req = _req("a", _image(), params)
        on = PairGenerator(pipe)
        assert on.sdxl_added_cond is True
        src_on, tgt_on = on.run_batch([req])
        assert len(calls) == 1  # one UNet call (int(3 * 0.6) = 1 step), the pooled text + time ids embedded
        calls.clear()
        off = PairGenerator(pipe, sdxl_added_cond=False)
        src_off, tgt_off = off.run_batch([req])
        assert calls == []  # the released pipeline's addition_embed_type = None: never embedded
        assert not torch.equal(tgt_on, tgt_off)
        assert pipe.unet.config.addition_embed_type == "text_time"  # restored after the batch
        again, _ = on.run_batch([req])
        assert torch.equal(again, src_on)
    finally:
        hook.remove()
