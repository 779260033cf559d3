"""DINOv2 through transformers: loading (tiny random, hub id or local `save_pretrained` folder) and CLS embeddings.

- `model_name="tiny"`: a 1-layer `Dinov2Model` from a small config with seeded random weights;
  `"tiny-registers"`: the same as `Dinov2WithRegistersModel` (4 register tokens).
- anything else: `AutoModel.from_pretrained(name_or_folder)`, which picks `Dinov2Model` or
  `Dinov2WithRegistersModel` from the config's `model_type` (the `ultraedit` profile uses
  `facebook/dinov2-with-registers-large`).

Images are resized bicubically (antialiased) to `size` x `size` (518 in the `ultraedit` profile, as UltraEdit scores
at 518 px) and normalised with the ImageNet mean/std, which the released UltraEdit scorer forgot (docs/method.md §5).
The embedding is the CLS token after the final layer norm (`pooler_output`), L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ultraedit_dagster.models.clip import resize_normalize, to_float_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_NAMES = ("tiny", "tiny-registers")


def tiny_config(registers: bool = False, image_size: int = 56):
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    kwargs = dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=image_size, patch_size=14
    )
    if registers:
        return Dinov2WithRegistersConfig(num_register_tokens=4, **kwargs)
    return Dinov2Config(**kwargs)


def dinov2_model_id(model_name: str) -> str:
    return f"transformers:{model_name}" + ("/random-seed0" if model_name in TINY_NAMES else "")


def load_dinov2(
    model_name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    image_size: int = 56,
) -> torch.nn.Module:
    """The DINOv2 backbone in eval mode on `device` (fp16/bf16 only off CPU)."""
    device = str(device)
    if device.startswith("cpu") or dtype is None:
        dtype = torch.float32
    if model_name in TINY_NAMES:
        from transformers import Dinov2Model, Dinov2WithRegistersModel

        registers = model_name == "tiny-registers"
        config = tiny_config(registers, image_size=image_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = (Dinov2WithRegistersModel if registers else Dinov2Model)(config)
    else:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_name)
        if model.config.model_type not in ("dinov2", "dinov2_with_registers"):
            raise ValueError(f"{model_name!r} is a {model.config.model_type!r} model, not DINOv2")
    return model.to(device=device, dtype=dtype).eval()


@torch.inference_mode()
def encode_images(
    model: torch.nn.Module,
    images: Sequence[Image.Image | np.ndarray] | torch.Tensor,
    size: int,
    batch_size: int = 32,
) -> torch.Tensor:
    """L2-normalised CLS embeddings (float32, CPU), shape (N, hidden_size); inputs resized to size x size."""
    p = next(model.parameters())
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float_batch(images[start : start + batch_size]).to(p.device)
        x = resize_normalize(x, (size, size), IMAGENET_MEAN, IMAGENET_STD).to(p.dtype)
        cls = model(pixel_values=x).pooler_output.float()
        out.append(F.normalize(cls, dim=-1).cpu())
    if not out:
        return torch.zeros((0, int(model.config.hidden_size)))
    return torch.cat(out)
