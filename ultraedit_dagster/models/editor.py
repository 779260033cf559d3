"""The diffusion editor's models: a real SDXL / SD 1.5 checkpoint, or a tiny seeded SDXL built from small configs.

Real checkpoints load with `AutoPipelineForImage2Image.from_pretrained(hub id or local folder)`: SDXL-Turbo's
`model_index.json` names the text-to-image class, the auto pipeline maps it to the img2img class with the same
components. The denoising loop (generation.py) only uses the components (tokenizers, text encoders, UNet, VAE,
scheduler) and `encode_prompt`.

The `tiny` editor is an SDXL-shaped pipeline (two CLIP text encoders, vocab 49408, UNet with
`addition_embed_type='text_time'`, AutoencoderKL, Euler-ancestral scheduler with SDXL-Turbo's settings) with seeded
random weights. Its tokenizer is the real CLIP BPE tokenizer built offline from the vocabulary file that open_clip
ships (`bpe_simple_vocab_16e6.txt.gz`), exactly as CLIP builds its vocabulary, so token ids and the P2P alignment
are the real ones.

Resolution choice for `tiny` (written down as asked): two levers keep a candidate pair well under a second on two
shared CPU cores while the data stays 512 px.
1. Its VAE downsamples by 16 (5 blocks) instead of SDXL's 8, so the UNet sees a small latent.
2. The editor resource has a `working_size`; the tiny profile sets TINY_WORKING_SIZE = 256: images and masks are
   resized to 256 px, the pair is generated there (16x16 latent; UNet attention at 16x16 and 8x8, so the default
   self-attention injection, query length <= 256 = 16x16 and smaller, covers both levels), and the outputs are resized
   back to the input size (512). At 512 px a random VAE decoder alone costs ~0.3 s per image on a shared core.
   Real checkpoints use working_size 0 (= the image size).
Tests use 32-128 px images.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

TINY_EDITOR = "tiny"
TINY_SD15 = "tiny-sd15"
CLIP_VOCAB_SIZE = 49408
TINY_VAE_CHANNELS = (4, 8, 8, 16, 16)
# The tiny editor's default working resolution: it generates at this size and the pair is resized (bicubic) to the
# input size; see the module docstring.
TINY_WORKING_SIZE = 256


# -- the real CLIP tokenizer, offline ----------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's / GPT-2's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def open_clip_bpe_path() -> Path:
    """The BPE file inside the installed open_clip package (located without importing open_clip: that is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed: its BPE vocabulary builds the CLIP tokenizer offline")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary is missing at {path}")
    return path


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab (49408 entries) and merges (48894) built like CLIP's SimpleTokenizer from open_clip's BPE file."""
    lines = gzip.open(open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"built a CLIP vocabulary of {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


def build_clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """transformers' CLIPTokenizer over the real CLIP vocabulary (SDXL's second tokenizer pads with '!')."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)


# -- tiny SDXL ------------------------------------------------------------------------------------------------------


def _seeded(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return gen


def _reinit(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Deterministic weights independent of torch's global RNG: every parameter from its own named seed."""
    for name, param in sorted(module.named_parameters()):
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        gen = _seeded(int.from_bytes(digest[:8], "big") & ((1 << 63) - 1))
        with torch.no_grad():
            if name.endswith("bias"):
                param.zero_()
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            elif param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


def build_tiny_sdxl(seed: int = 0):
    """A tiny StableDiffusionXLImg2ImgPipeline with seeded random weights (CPU, fp32)."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_cfg = dict(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled text_encoder_2 projection
        cross_attention_dim=64,  # 32 + 32: the two encoders' hidden states concatenated, as in SDXL
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=TINY_VAE_CHANNELS,  # 5 blocks: downsampling x16 (see module docstring)
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=512,
        force_upcast=False,
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="trailing",
        prediction_type="epsilon",
    )
    for i, module in enumerate((text_encoder, text_encoder_2, unet, vae)):
        _reinit(module, seed * 1000 + i)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )
    for m in (text_encoder, text_encoder_2, unet, vae):
        m.eval()
    return pipe


def build_tiny_sd15(seed: int = 0):
    """A tiny StableDiffusionImg2ImgPipeline (the SD 1.5 / InstructPix2Pix backend), seeded random weights."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=CLIP_VOCAB_SIZE,
            max_position_embeddings=77,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        cross_attention_dim=32,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=TINY_VAE_CHANNELS,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 5,
        up_block_types=("UpDecoderBlock2D",) * 5,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=512,
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    for i, module in enumerate((text_encoder, unet, vae)):
        _reinit(module, seed * 1000 + 10 + i)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for m in (text_encoder, unet, vae):
        m.eval()
    return pipe


# -- loading ---------------------------------------------------------------------------------------------------------


def dtype_kwarg() -> str:
    """The keyword this diffusers takes for the weights' dtype. Every version pyproject allows (>= 0.32) honours
    `torch_dtype`; newer ones renamed it `dtype` (and deprecate `torch_dtype`), while older ones silently ignore an
    unknown `dtype=` and load fp32, which is the bug this guards against (docs/method.md §8)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401 - present once `dtype` is honoured
    except ImportError:
        return "torch_dtype"
    return "dtype"


def load_pretrained(model: str, dtype: torch.dtype = torch.float32, **kwargs: Any):
    """Load an SDXL-family or SD 1.5 checkpoint (hub id or local folder) as an img2img pipeline.

    This is the one code path for real checkpoints; the tests load a saved tiny pipeline through it too. Half
    precision asks for the checkpoint's `fp16` weight variant first (half the download and load time), and falls back
    to the full weights, cast on load, when the checkpoint has none.
    """
    from diffusers import AutoPipelineForImage2Image

    extra: dict[str, Any] = {dtype_kwarg(): dtype}
    if Path(model).is_dir():
        index = Path(model) / "model_index.json"
        if index.is_file() and "safety_checker" in json.loads(index.read_text()):
            extra.update(safety_checker=None, requires_safety_checker=False)
    if dtype == torch.float16 and "variant" not in kwargs:
        try:
            return AutoPipelineForImage2Image.from_pretrained(model, variant="fp16", **extra, **kwargs)
        except (OSError, ValueError):
            pass  # no fp16 variant files: load the full weights in half precision
    return AutoPipelineForImage2Image.from_pretrained(model, **extra, **kwargs)


def backend_of(pipe) -> str:
    """'sdxl' (two text encoders, text_time added conditioning) or 'sd15'."""
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"


def load_editor(model: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """`tiny` / `tiny-sd15` build seeded models; anything else is a hub id or local path for `load_pretrained`."""
    if model == TINY_EDITOR:
        pipe = build_tiny_sdxl(seed)
    elif model == TINY_SD15:
        pipe = build_tiny_sd15(seed)
    else:
        pipe = load_pretrained(model, dtype=dtype)
    if backend_of(pipe) == "sd15" and not hasattr(pipe.scheduler, "sigmas"):
        # the loop's masked blend and per-pair ancestral noise use the Euler family; InstructPix2Pix used Euler
        # ancestral on SD 1.5 too
        from diffusers import EulerAncestralDiscreteScheduler

        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    if model in (TINY_EDITOR, TINY_SD15) and dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    vae = pipe.vae
    if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae.to(dtype=torch.float32)  # the SDXL VAE overflows in fp16 (diffusers' force_upcast)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def editor_id(model: str, seed: int = 0) -> str:
    """What every output row records as its editor."""
    if model in (TINY_EDITOR, TINY_SD15):
        return f"{model}-seed{seed}"
    return model
