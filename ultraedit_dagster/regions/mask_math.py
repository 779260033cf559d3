"""Region-mask arithmetic for UltraEdit stage III (docs/method.md §4). Pure numpy / OpenCV, no Dagster, no models.

Masks are 2-D arrays of shape (height, width). Binary masks are `bool`; the stored PNG form is uint8 0/255; the soft
mask is float in [0, 1] and stored as round(v * 255).

The steps, in order (`build_region_masks`):

1. box mask: the union of the detected boxes (xyxy pixels, half-open: a box (10, 20, 30, 60) covers columns 10..29
   and rows 20..59, i.e. 20 x 40 pixels; fractional edges are widened to whole pixels).
2. fine mask: SAM's masks merged by max (done by the segmenter; here it is an input).
3. QC on the fine mask: keep when min_area < area fraction < max_area (defaults 1 % and 90 %) and the number of
   external contours is at most max_contours (500). The released UltraEdit code also rejects masks with fewer than
   4 contours in one path; that contradicts the paper and drops every single-object mask, so it is NOT done here.
4. hull mask: the convex hull of each external contour, filled (holes are filled too).
5. inner / outer by contour count c: 0 < c < 150 -> inner = fine, outer = hull; 150 <= c <= max_contours ->
   inner = hull, outer = box. `outer` is then unioned with `inner` so that inner is always inside outer (a SAM mask
   may leak slightly outside its box).
6. soft mask: with probability p (0.5), decided deterministically from (global seed, uid), the band outer \\ inner
   gets a value s drawn (also deterministically) from a configured set ({0, 0.1, 0.3, 0.5, 0.7, 0.8} in the released
   code); inner = 1; outside = 0. Without a band value the soft mask is the binary inner mask and soft_value is None.

`NONE` (a whole-image edit) gives full-image masks for every kind, contour count 0, area 1.0 and QC 'ok' (the area
bounds do not apply: the full image is the intended mask, as in the released code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ultraedit_dagster.core.ids import rng_for

NONE_OBJECT = "NONE"
DEFAULT_SOFT_VALUES: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8)


@dataclass(frozen=True)
class MaskQC:
    """Thresholds of the mask quality check (docs/method.md §4)."""

    min_area: float = 0.01
    max_area: float = 0.90
    max_contours: int = 500
    fine_hull_max_contours: int = 150  # c below this: inner = fine, outer = hull; else inner = hull, outer = box


@dataclass
class RegionMasks:
    """Every mask of one region sample, plus the QC outcome. Binary masks are bool, `soft` is float32 in [0, 1]."""

    fine: np.ndarray
    hull: np.ndarray
    box: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    soft: np.ndarray
    soft_value: float | None
    contour_count: int
    area_fraction: float
    qc: str  # 'ok' or the reason the mask was rejected

    @property
    def ok(self) -> bool:
        return self.qc == "ok"


# -- primitives ---------------------------------------------------------------------------------------------------


def as_binary(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A bool mask from bool, 0/1, 0/255 or float input (values > threshold of the dtype's range are on)."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask > (255 * threshold if mask.max(initial=0) > 1 else threshold)
    return mask.astype(np.float32) > threshold


def boxes_to_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union of xyxy pixel boxes as a bool mask (clipped to the image; empty boxes add nothing)."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box must be [x0, y0, x1, y1], got {list(box)!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ValueError(f"box has non-finite coordinates: {list(box)!r}")
        c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        c1, r1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def area_fraction(mask: np.ndarray) -> float:
    mask = as_binary(mask)
    return float(np.count_nonzero(mask)) / float(mask.size) if mask.size else 0.0


def external_contours(mask: np.ndarray) -> list[np.ndarray]:
    """External contours (8-connected outer boundaries) of a binary mask."""
    contours, _ = cv2.findContours(as_binary(mask).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)


def count_external_contours(mask: np.ndarray) -> int:
    return len(external_contours(mask))


def hull_mask(mask: np.ndarray, contours: list[np.ndarray] | None = None) -> np.ndarray:
    """The filled convex hull of each external contour (holes inside a shape are filled)."""
    binary = as_binary(mask)
    contours = external_contours(binary) if contours is None else contours
    out = np.zeros(binary.shape, dtype=np.uint8)
    for contour in contours:
        cv2.drawContours(out, [cv2.convexHull(contour)], -1, 255, thickness=cv2.FILLED)
    return out > 0


def qc_reason(area: float, contour_count: int, qc: MaskQC = MaskQC()) -> str:
    """'ok', or why the mask is rejected."""
    if contour_count == 0 or area <= 0.0:
        return "empty mask"
    if area <= qc.min_area:
        return f"mask area {area:.4f} <= min {qc.min_area}"
    if area >= qc.max_area:
        return f"mask area {area:.4f} >= max {qc.max_area}"
    if contour_count > qc.max_contours:
        return f"{contour_count} external contours > max {qc.max_contours} (fragmented)"
    return "ok"


def inner_outer(
    fine: np.ndarray, hull: np.ndarray, box: np.ndarray, contour_count: int, qc: MaskQC = MaskQC()
) -> tuple[np.ndarray, np.ndarray]:
    """(inner, outer) by contour count: c < 150 -> (fine, hull); 150 <= c -> (hull, box). Outer contains inner."""
    if contour_count < qc.fine_hull_max_contours:
        inner, outer = fine, hull
    else:
        inner, outer = hull, box
    return inner, np.logical_or(outer, inner)


def choose_soft_value(
    global_seed: int, uid: str, probability: float = 0.5, values: Sequence[float] = DEFAULT_SOFT_VALUES
) -> float | None:
    """With `probability` (deterministic from the uid) a band value from `values`, else None."""
    if not values or probability <= 0:
        return None
    use = rng_for(global_seed, uid, "soft_mask_use").random() < probability
    if not use:
        return None
    return float(values[int(rng_for(global_seed, uid, "soft_mask_value").integers(len(values)))])


def soft_mask(inner: np.ndarray, outer: np.ndarray, value: float | None) -> np.ndarray:
    """float32 mask: inner = 1, band (outer minus inner) = value (0 when None), elsewhere 0."""
    inner_b, outer_b = as_binary(inner), as_binary(outer)
    out = np.zeros(inner_b.shape, dtype=np.float32)
    if value is not None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"soft mask value {value} outside [0, 1]")
        out[outer_b & ~inner_b] = value
    out[inner_b] = 1.0
    return out


# -- the whole step -------------------------------------------------------------------------------------------------


def full_image_masks(height: int, width: int) -> RegionMasks:
    """The NONE path: the whole image is the mask."""
    full = np.ones((height, width), dtype=bool)
    return RegionMasks(
        fine=full,
        hull=full.copy(),
        box=full.copy(),
        inner=full.copy(),
        outer=full.copy(),
        soft=np.ones((height, width), dtype=np.float32),
        soft_value=None,
        contour_count=0,
        area_fraction=1.0,
        qc="ok",
    )


def build_region_masks(
    fine: np.ndarray,
    boxes: Sequence[Sequence[float]],
    uid: str,
    global_seed: int = 0,
    qc: MaskQC = MaskQC(),
    soft_probability: float = 0.5,
    soft_values: Sequence[float] = DEFAULT_SOFT_VALUES,
) -> RegionMasks:
    """From the merged SAM mask and the boxes: QC, hull, box, inner / outer and the soft mask of one sample.

    Masks are computed even when QC fails (so failures can be inspected); `qc` says whether to keep the sample.
    """
    fine_b = as_binary(fine)
    height, width = fine_b.shape
    box = boxes_to_mask(boxes, height, width)
    contours = external_contours(fine_b)
    count = len(contours)
    area = area_fraction(fine_b)
    hull = hull_mask(fine_b, contours)
    inner, outer = inner_outer(fine_b, hull, box, count, qc)
    reason = qc_reason(area, count, qc)
    value = choose_soft_value(global_seed, uid, soft_probability, soft_values) if reason == "ok" else None
    return RegionMasks(
        fine=fine_b,
        hull=hull,
        box=box,
        inner=inner,
        outer=outer,
        soft=soft_mask(inner, outer, value),
        soft_value=value,
        contour_count=count,
        area_fraction=area,
        qc=reason,
    )


def to_uint8(mask: np.ndarray) -> np.ndarray:
    """bool -> 0/255; float in [0, 1] -> round(v * 255)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.astype(np.uint8) * 255
    return np.clip(np.rint(mask.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def overlay(image_rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40), alpha: float = 0.5):
    """The image with the mask tinted in `color` (soft masks tint proportionally), as uint8 RGB."""
    img = np.asarray(image_rgb, dtype=np.float32)
    m = np.asarray(mask)
    weight = m.astype(np.float32) if m.dtype != np.uint8 else m.astype(np.float32) / 255.0
    if m.dtype == bool:
        weight = m.astype(np.float32)
    if weight.shape != img.shape[:2]:
        weight = cv2.resize(weight, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    w = (alpha * weight)[..., None]
    out = img * (1 - w) + np.asarray(color, dtype=np.float32) * w
    return np.clip(out, 0, 255).astype(np.uint8)
