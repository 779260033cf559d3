"""Edit-pair metrics in pure torch (batched, any device): SSIM, L1, the CLIP / DINOv2 similarities of
docs/method.md §5, and pass flags from thresholds. No Dagster imports.

SSIM reproduces `skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1.0)` with its defaults:
7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), computed per channel, the SSIM map cropped
by (7 - 1) // 2 = 3 pixels on every side and averaged, then averaged over channels. Because that crop removes exactly
the pixels whose window reaches past the border, a "valid" box filter gives the same numbers as skimage's reflected
filter followed by the crop, so no padding convention has to be matched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported inside the functions: the column names here are read while the Dagster
    import torch  # definitions load, which must not import torch

METRIC_COLUMNS = ("clip_sim_source", "clip_sim_target", "clip_sim_dir", "clip_sim_image", "dinov2_sim", "ssim", "l1")
THRESHOLD_METRICS = ("clip_sim_image", "clip_sim_dir", "clip_sim_source", "clip_sim_target", "dinov2_sim")
# valid ranges (cosines in [-1, 1], SSIM in [-1, 1], L1 of [0, 1] images in [0, 1])
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "clip_sim_source": (-1.0, 1.0),
    "clip_sim_target": (-1.0, 1.0),
    "clip_sim_dir": (-1.0, 1.0),
    "clip_sim_image": (-1.0, 1.0),
    "dinov2_sim": (-1.0, 1.0),
    "ssim": (-1.0, 1.0),
    "l1": (0.0, 1.0),
}


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1]; uint8 input is divided by 255, BHWC input is permuted."""
    import torch

    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-image mean SSIM (shape (B,)) of two image batches (B, C, H, W), averaged over channels (computed in
    `dtype`, default float32)."""
    import torch
    import torch.nn.functional as F

    dtype = dtype or torch.float32
    a, b = as_float_images(a).to(dtype), as_float_images(b).to(dtype)
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} is larger than the image {tuple(a.shape[-2:])}")
    bsz, ch = a.shape[:2]
    # one channel at a time as separate images: (B*C, 1, H, W)
    a = a.reshape(bsz * ch, 1, *a.shape[-2:])
    b = b.reshape(bsz * ch, 1, *b.shape[-2:])

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=win_size, stride=1)

    n = win_size * win_size
    cov_norm = n / (n - 1.0)
    ux, uy = box(a), box(b)
    uxx, uyy, uxy = box(a * a), box(b * b), box(a * b)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    per_channel = s.mean(dim=(-1, -2)).reshape(bsz, ch)
    return per_channel.mean(dim=1).double()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image on the [0, 1] scale, shape (B,)."""
    a, b = as_float_images(a), as_float_images(b)
    return (a - b).abs().flatten(1).mean(dim=1).double()


def cosine(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise cosine; 0 where either vector is (numerically) zero."""
    import torch.nn.functional as F

    return F.cosine_similarity(x.float(), y.float(), dim=-1, eps=eps).double()


def clip_similarities(
    img_source: torch.Tensor, img_target: torch.Tensor, txt_source: torch.Tensor, txt_target: torch.Tensor
) -> dict[str, torch.Tensor]:
    """docs/method.md §5 from (N, D) L2-normalised CLIP embeddings of I_s, I_t, T_s, T_t.

    clip_sim_dir is 0 when the two captions (or the two images) have identical embeddings: no direction exists.
    """
    return {
        "clip_sim_source": cosine(img_source, txt_source),
        "clip_sim_target": cosine(img_target, txt_target),
        "clip_sim_dir": cosine(img_target - img_source, txt_target - txt_source),
        "clip_sim_image": cosine(img_source, img_target),
    }


def _threshold_items(thresholds: Any) -> dict[str, float]:
    if isinstance(thresholds, Mapping):
        items = dict(thresholds)
    else:
        items = {m: getattr(thresholds, m) for m in THRESHOLD_METRICS}
    return {m: float(items[m]) for m in THRESHOLD_METRICS if m in items and items[m] is not None}


def pass_flags(scores: Mapping[str, float | None], thresholds: Any) -> dict[str, bool]:
    """`pass_<metric>` (value >= threshold; NaN / missing fails) for each threshold, plus `pass_all`."""
    flags: dict[str, bool] = {}
    for metric, minimum in _threshold_items(thresholds).items():
        value = scores.get(metric)
        flags[f"pass_{metric}"] = value is not None and not math.isnan(value) and value >= minimum
    flags["pass_all"] = all(flags.values())
    return flags


def pass_columns(thresholds: Any) -> list[str]:
    return [f"pass_{m}" for m in _threshold_items(thresholds)] + ["pass_all"]
