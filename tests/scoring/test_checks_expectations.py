"""The great-expectations suite on metric_scores is meaningful (issue 14): green on a healthy demo-like
distribution and on an UltraEdit-like one, red on a collapsed scorer, an all-below-threshold table and a flood of
no-op pairs, each failure named (and shown in the check's metadata)."""

import numpy as np
import pyarrow as pa
import pytest

from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.scoring.checks import run_metric_expectations

N = 60


def _table(mode_rows: dict[str, dict[str, np.ndarray]], failed: int = 0) -> pa.Table:
    cols: dict[str, list] = {"status": [], "mode": []}
    for mode, metrics in mode_rows.items():
        n = len(next(iter(metrics.values())))
        cols["status"] += ["ok"] * n
        cols["mode"] += [mode] * n
        for m, v in metrics.items():
            cols.setdefault(m, []).extend(float(x) for x in v)
    for m in list(cols):
        if m not in ("status", "mode"):
            cols[m] += [None] * failed
    cols["status"] += ["failed"] * failed
    cols["mode"] += ["free_form"] * failed
    return pa.table(cols)


def demo_like(rng, n=N):
    """The shape of `make demo`'s tiny-model scores: image / DINOv2 similarity just under 1 but distinct,
    directional spread around 0, small L1."""
    return {
        "clip_sim_source": rng.uniform(-0.2, 0.49, n),
        "clip_sim_target": rng.uniform(-0.2, 0.49, n),
        "clip_sim_dir": rng.uniform(-0.45, 0.36, n),
        "clip_sim_image": 1 - rng.uniform(1e-6, 8e-4, n),
        "dinov2_sim": 1 - rng.uniform(1e-6, 5e-4, n),
        "ssim": rng.uniform(0.94, 0.999, n),
        "l1": rng.uniform(0.004, 0.037, n),
    }


def ultraedit_like(rng, n=N):
    """Around UltraEdit's published release means (docs/method.md §5)."""
    return {
        "clip_sim_source": rng.normal(0.28, 0.03, n),
        "clip_sim_target": rng.normal(0.30, 0.03, n),
        "clip_sim_dir": rng.normal(0.29, 0.06, n),
        "clip_sim_image": np.clip(rng.normal(0.84, 0.06, n), -1, 1),
        "dinov2_sim": np.clip(rng.normal(0.72, 0.1, n), -1, 1),
        "ssim": np.clip(rng.normal(0.64, 0.1, n), -1, 1),
        "l1": np.clip(rng.normal(0.08, 0.03, n), 0.01, 1),
    }


@pytest.mark.parametrize(("profile", "make"), [("tiny", demo_like), ("ultraedit", ultraedit_like)])
def test_green_on_healthy_distributions(profile, make):
    rng = np.random.default_rng(0)
    table = _table({"free_form": make(rng), "region": make(rng)}, failed=10)
    ok, failures, count = run_metric_expectations(table, get_profile(profile))
    assert ok, failures
    assert count >= 1 + 2 * (7 + 4 + 5 + 1)


def _failed(failures):
    return {(f["rows"], f["expectation"], f["kwargs"]["column"]) for f in failures}


def test_red_on_a_collapsed_scorer():
    rng = np.random.default_rng(1)
    metrics = demo_like(rng)
    metrics.update(clip_sim_image=np.ones(N), dinov2_sim=np.ones(N), clip_sim_dir=np.zeros(N))
    ok, failures, _ = run_metric_expectations(_table({"free_form": metrics}), get_profile("tiny"))
    assert not ok
    spread = "expect_column_proportion_of_unique_values_to_be_between"
    assert {("free_form", spread, c) for c in ("clip_sim_image", "dinov2_sim", "clip_sim_dir")} <= _failed(failures)


def test_red_when_nothing_meets_the_thresholds():
    rng = np.random.default_rng(2)
    metrics = ultraedit_like(rng)
    metrics.update(clip_sim_image=rng.uniform(0.1, 0.5, N), clip_sim_dir=rng.uniform(-0.2, 0.1, N))
    ok, failures, _ = run_metric_expectations(_table({"region": metrics}), get_profile("ultraedit"))
    assert not ok
    got = _failed(failures)
    assert ("region", "expect_column_values_to_be_between", "clip_sim_image") in got
    assert ("region", "expect_column_values_to_be_between", "clip_sim_dir") in got


def test_red_on_a_flood_of_noop_pairs():
    rng = np.random.default_rng(3)
    metrics = demo_like(rng)
    metrics["l1"][: N // 2] = 0.0
    ok, failures, _ = run_metric_expectations(_table({"free_form": metrics}), get_profile("tiny"))
    assert not ok
    assert _failed(failures) == {("free_form", "expect_column_values_to_be_between", "l1")}


def test_red_on_out_of_range_values():
    rng = np.random.default_rng(4)
    metrics = demo_like(rng)
    metrics["ssim"][0] = 1.5
    ok, failures, _ = run_metric_expectations(_table({"free_form": metrics}), get_profile("tiny"))
    assert _failed(failures) == {("free_form", "expect_column_values_to_be_between", "ssim")}
