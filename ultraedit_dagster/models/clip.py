"""CLIP through open_clip: loading (tiny random, named + pretrained tag, or a local checkpoint file) and encoding.

`load_clip(model_name, pretrained, device, dtype)` returns `(model, preprocess, tokenizer)`:

- `model_name="tiny"`: a small open_clip CLIP built from a custom config (registered with open_clip under the name
  `ultraedit-tiny`, text vocab 49408 so open_clip's real bundled BPE tokenizer works). `pretrained` empty / "random"
  gives seeded random weights; a file path loads that checkpoint through open_clip's own loader
  (`create_model_and_transforms(pretrained=<file>)`).
- any other name (e.g. `ViT-L-14`) with a pretrained tag (`openai`) or a checkpoint file path goes through
  `open_clip.create_model_and_transforms` unchanged; `hf-hub:` and `local-dir:` names work as open_clip documents.

`encode_images` / `encode_texts` return L2-normalised float32 embeddings. Images are resized bicubically (with
antialiasing) so the short side matches the model's input size, centre-cropped, and normalised with the model's own
mean/std (OpenAI CLIP normalisation for OpenAI weights); this runs batched in torch on the model's device. Text is
tokenized by open_clip's tokenizer, which truncates to the context length (77 tokens, end-of-text kept).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TINY_NAME = "tiny"
TINY_CONFIG_NAME = "ultraedit-tiny"
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
RANDOM_TAGS = ("", "random", "none")
CONTEXT_LENGTH = 77

_register_lock = threading.Lock()
_registered = False


def _register_tiny_config() -> None:
    """Make `ultraedit-tiny` known to open_clip (once per process) through its public add_model_config."""
    global _registered
    with _register_lock:
        if _registered:
            return
        import open_clip

        folder = tempfile.mkdtemp(prefix="ultraedit-open-clip-")
        path = os.path.join(folder, f"{TINY_CONFIG_NAME}.json")
        with open(path, "w") as fh:
            json.dump(TINY_CONFIG, fh)
        open_clip.add_model_config(path)
        _registered = True


def _precision(dtype: torch.dtype | str | None, device: str) -> str:
    if dtype is None or str(device).startswith("cpu"):
        return "fp32"
    if isinstance(dtype, str):
        dtype = {
            "fp16": torch.float16,
            "float16": torch.float16,
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp32": torch.float32,
            "float32": torch.float32,
        }[dtype]
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]


def resolve_name(model_name: str) -> str:
    return TINY_CONFIG_NAME if model_name == TINY_NAME else model_name


def clip_model_id(model_name: str, pretrained: str | None) -> str:
    """The id recorded in rows: `open_clip:<name>/<tag or checkpoint file name>`."""
    tag = (pretrained or "").strip()
    if tag.lower() in RANDOM_TAGS:
        tag = "random-seed0" if model_name == TINY_NAME else "random"
    elif os.path.sep in tag or os.path.isfile(tag):
        tag = "file:" + os.path.basename(tag)
    return f"open_clip:{model_name}/{tag}"


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
) -> tuple[torch.nn.Module, Any, Any]:
    """Load an open_clip model; returns (model in eval mode, preprocess transform, tokenizer)."""
    import open_clip

    device = str(device)
    name = resolve_name(model_name)
    if name == TINY_CONFIG_NAME:
        _register_tiny_config()
    tag = (pretrained or "").strip()
    random_weights = tag.lower() in RANDOM_TAGS
    if random_weights and name != TINY_CONFIG_NAME:
        raise ValueError(
            f"CLIP model {model_name!r} needs a pretrained tag or a checkpoint file (only 'tiny' is built random)"
        )
    if (
        not random_weights
        and not os.path.isfile(tag)
        and (os.path.sep in tag or tag.endswith((".pt", ".bin", ".safetensors")))
    ):
        raise FileNotFoundError(f"CLIP checkpoint file {tag!r} does not exist")
    precision = _precision(dtype, device)
    if random_weights:
        # seeded, and without disturbing the caller's global RNG state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None, precision=precision, device=device
            )
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=tag, precision=precision, device=device
        )
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess, tokenizer


def model_input_size(model: torch.nn.Module) -> tuple[int, int]:
    import open_clip

    size = open_clip.get_model_preprocess_cfg(model).get("size", getattr(model.visual, "image_size", 224))
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _mean_std(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = open_clip.get_model_preprocess_cfg(model)
    return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))


def to_float_batch(images: Sequence[Image.Image | np.ndarray] | torch.Tensor) -> torch.Tensor:
    """Images as a float32 (B, 3, H, W) tensor in [0, 1]. Accepts PIL images, HWC uint8 arrays, or a tensor
    (uint8 of any layout BHWC/BCHW, or float in [0, 1] BCHW). All images in a list must share one size."""
    if isinstance(images, torch.Tensor):
        t = images
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.shape[-1] == 3 and t.shape[1] != 3:
            t = t.permute(0, 3, 1, 2)
        return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    arrays = [np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else np.asarray(im) for im in images]
    batch = np.stack(arrays)
    if batch.ndim == 3:  # grayscale
        batch = np.repeat(batch[..., None], 3, axis=-1)
    t = torch.from_numpy(batch).permute(0, 3, 1, 2)
    return t.float() / 255.0 if batch.dtype == np.uint8 else t.float()


def resize_normalize(
    batch: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Bicubic (antialiased) resize of the short side to `size`, centre crop, then (x - mean) / std."""
    _, _, h, w = batch.shape
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        batch = F.interpolate(batch, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - th) // 2, (nw - tw) // 2
    batch = batch[:, :, top : top + th, left : left + tw].clamp(0.0, 1.0)
    m = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - m) / s


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


@torch.inference_mode()
def encode_images(
    model: torch.nn.Module, images: Sequence[Image.Image | np.ndarray] | torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """L2-normalised image embeddings (float32, on CPU), shape (N, embed_dim)."""
    device, dtype = _model_device_dtype(model)
    size = model_input_size(model)
    mean, std = _mean_std(model)
    n = len(images)
    out = []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        x = to_float_batch(chunk).to(device)
        x = resize_normalize(x, size, mean, std).to(dtype)
        emb = model.encode_image(x).float()
        out.append(F.normalize(emb, dim=-1).cpu())
    if not out:
        return torch.zeros((0, int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else 0))
    return torch.cat(out)


@torch.inference_mode()
def encode_texts(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings (float32, on CPU), texts truncated to the tokenizer's 77-token context."""
    device, _ = _model_device_dtype(model)
    out = []
    texts = [t if isinstance(t, str) else "" for t in texts]
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size])).to(device)
        emb = model.encode_text(tokens).float()
        out.append(F.normalize(emb, dim=-1).cpu())
    if not out:
        return torch.zeros((0, 0))
    return torch.cat(out)
