"""Mask math on drawn shapes with known areas, holes and many fragments."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ultraedit_dagster.regions import mask_math as mm

H = W = 200


def rect(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def ring(cx=100, cy=100, r_out=60, r_in=30):
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (cx, cy), r_out, 255, -1)
    cv2.circle(m, (cx, cy), r_in, 0, -1)
    return m > 0


def fragments(n_side: int, size: int = 2, step: int = 4, h: int = H, w: int = W):
    m = np.zeros((h, w), dtype=bool)
    for i in range(n_side):
        for j in range(n_side):
            m[i * step : i * step + size, j * step : j * step + size] = True
    return m


def test_boxes_to_mask_known_areas_union_and_clipping():
    m = mm.boxes_to_mask([[10, 20, 30, 60]], H, W)
    assert m.dtype == bool and m.shape == (H, W)
    assert m.sum() == 20 * 40 and m[20, 10] and m[59, 29] and not m[60, 29] and not m[59, 30]
    # overlapping boxes: union, not sum
    u = mm.boxes_to_mask([[0, 0, 10, 10], [5, 5, 15, 15]], H, W)
    assert u.sum() == 100 + 100 - 25
    # out-of-image and fractional boxes are clipped / widened to whole pixels
    c = mm.boxes_to_mask([[-50, -50, 10.2, 9.5]], H, W)
    assert c.sum() == 11 * 10
    assert mm.boxes_to_mask([], H, W).sum() == 0
    assert mm.boxes_to_mask([[30, 30, 20, 40]], H, W).sum() == 0  # inverted box covers nothing
    with pytest.raises(ValueError):
        mm.boxes_to_mask([[0, 0, float("nan"), 3]], H, W)


def test_area_and_contours_of_drawn_shapes():
    m = rect(0, 0, 100, 40)
    assert mm.area_fraction(m) == pytest.approx(4000 / 40000)
    assert mm.count_external_contours(m) == 1
    two = rect(0, 0, 10, 10) | rect(50, 50, 70, 70)
    assert mm.count_external_contours(two) == 2
    # a ring is one external contour (the hole is not counted)
    assert mm.count_external_contours(ring()) == 1
    # 0/255 uint8 and float inputs are read the same way as bool
    assert mm.count_external_contours(two.astype(np.uint8) * 255) == 2
    assert mm.area_fraction(two.astype(np.float32)) == pytest.approx(mm.area_fraction(two))


def test_hull_fills_holes_and_concavities():
    r = ring()
    h = mm.hull_mask(r)
    assert h[100, 100] and not r[100, 100]  # the hole is filled
    assert h.sum() == pytest.approx(np.pi * 60**2, rel=0.03)
    # an L shape: its hull is the triangle-completed shape, bigger than the L but within its bounding box
    ell = rect(20, 20, 40, 120) | rect(20, 100, 120, 120)
    hl = mm.hull_mask(ell)
    assert ell.sum() < hl.sum() < rect(20, 20, 120, 120).sum()
    assert np.all(hl[ell])
    # per-contour hulls: two separate squares stay two squares (no hull bridging them)
    two = rect(0, 0, 10, 10) | rect(50, 50, 70, 70)
    assert np.array_equal(mm.hull_mask(two), two)


def test_qc_area_bounds_and_fragmentation():
    qc = mm.MaskQC()
    assert mm.qc_reason(0.0, 0) == "empty mask"
    assert mm.qc_reason(0.01, 1).startswith("mask area")  # bounds are exclusive
    assert mm.qc_reason(0.0101, 1) == "ok"
    assert mm.qc_reason(0.9, 1).startswith("mask area")
    assert mm.qc_reason(0.5, 500, qc) == "ok"
    assert "fragmented" in mm.qc_reason(0.5, 501, qc)
    # a single-contour mask passes: the released code's "< 4 contours" rejection is not copied
    single = mm.build_region_masks(rect(50, 50, 100, 100), [[50, 50, 100, 100]], "u1")
    assert single.contour_count == 1 and single.qc == "ok"


def test_build_region_masks_few_contours_inner_fine_outer_hull():
    fine = ring()
    res = mm.build_region_masks(fine, [[40, 40, 161, 161]], "uid-a", global_seed=1)
    assert res.qc == "ok" and res.contour_count == 1
    assert np.array_equal(res.inner, fine)
    assert np.array_equal(res.outer, mm.hull_mask(fine))
    assert res.area_fraction == pytest.approx(fine.sum() / fine.size)
    assert res.box.sum() == 121 * 121


def test_build_region_masks_many_fragments_inner_hull_outer_box():
    frag = fragments(15, size=3, step=6)  # 225 separate 3x3 squares: 150 <= c < 500
    assert mm.count_external_contours(frag) == 225
    box = [[0, 0, 90, 90]]
    res = mm.build_region_masks(frag, box, "uid-b")
    assert res.contour_count == 225 and res.qc == "ok"
    assert np.array_equal(res.inner, res.hull)
    assert np.array_equal(res.outer, mm.boxes_to_mask(box, H, W))
    # too fragmented: 26 * 26 = 676 contours > 500 (area still within bounds)
    many = fragments(26, size=2, step=4, h=120, w=120)
    bad = mm.build_region_masks(many, [[0, 0, 120, 120]], "uid-c")
    assert bad.contour_count == 676 and "fragmented" in bad.qc and bad.soft_value is None


def test_build_region_masks_area_failures():
    tiny = mm.build_region_masks(rect(0, 0, 10, 10), [[0, 0, 10, 10]], "u")  # 0.25 %
    assert tiny.qc.startswith("mask area") and not tiny.ok
    huge = mm.build_region_masks(rect(0, 0, 200, 195), [[0, 0, 200, 200]], "u")  # 97.5 %
    assert huge.qc.startswith("mask area")
    empty = mm.build_region_masks(np.zeros((H, W), bool), [[0, 0, 5, 5]], "u")
    assert empty.qc == "empty mask" and empty.contour_count == 0


def test_soft_mask_values_band_and_determinism():
    values = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8)
    chosen = [mm.choose_soft_value(0, f"uid-{i}", 0.5, values) for i in range(400)]
    used = [c for c in chosen if c is not None]
    assert 150 < len(used) < 250  # probability 0.5
    assert set(used) <= set(values) and len(set(used)) == len(values)
    assert chosen == [mm.choose_soft_value(0, f"uid-{i}", 0.5, values) for i in range(400)]  # deterministic
    assert chosen != [mm.choose_soft_value(1, f"uid-{i}", 0.5, values) for i in range(400)]  # seed matters
    assert all(mm.choose_soft_value(0, f"u{i}", 0.0, values) is None for i in range(20))
    assert all(mm.choose_soft_value(0, f"u{i}", 1.0, (0.3,)) == 0.3 for i in range(20))

    inner, outer = rect(50, 50, 100, 100), rect(40, 40, 110, 110)
    s = mm.soft_mask(inner, outer, 0.3)
    assert s.dtype == np.float32
    assert np.all(s[inner] == 1.0) and np.all(s[outer & ~inner] == pytest.approx(0.3)) and np.all(s[~outer] == 0)
    assert np.array_equal(mm.soft_mask(inner, outer, None), inner.astype(np.float32))
    u8 = mm.to_uint8(s)
    levels = sorted(np.unique(u8).tolist())
    assert len(levels) == 3 and levels[0] == 0 and levels[2] == 255
    assert abs(levels[1] / 255 - 0.3) <= 0.5 / 255  # stored as round(v * 255)

    # a sample whose uid draws a value gets the band; its soft_value is recorded
    uid = next(f"uid-{i}" for i, c in enumerate(chosen) if c == 0.5)
    res = mm.build_region_masks(ring(), [[40, 40, 161, 161]], uid, global_seed=0, soft_values=values)
    band = res.outer & ~res.inner
    assert res.soft_value == 0.5 and band.any() and np.all(res.soft[band] == 0.5) and np.all(res.soft[res.inner] == 1)


def test_outer_contains_inner_even_when_mask_leaks_out_of_box():
    frag = fragments(15, size=3, step=6)
    res = mm.build_region_masks(frag, [[0, 0, 30, 30]], "uid")  # fragments outside the box
    assert np.all(res.outer[res.inner])


def test_full_image_masks_for_none():
    res = mm.full_image_masks(64, 48)
    for m in (res.fine, res.hull, res.box, res.inner, res.outer):
        assert m.shape == (64, 48) and m.all()
    assert res.soft.shape == (64, 48) and np.all(res.soft == 1.0)
    assert res.qc == "ok" and res.contour_count == 0 and res.area_fraction == 1.0 and res.soft_value is None


def test_overlay_tints_only_masked_pixels():
    img = np.full((20, 20, 3), 100, np.uint8)
    m = rect(0, 0, 10, 20, h=20, w=20)
    out = mm.overlay(img, m)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out[:, 10:], img[:, 10:]) and not np.array_equal(out[:, :10], img[:, :10])
