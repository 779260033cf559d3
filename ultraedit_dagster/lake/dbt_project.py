"""Paths and environment of the dbt_quality project, and its preparation
(`python -m ultraedit_dagster.lake.dbt_project`).

`make setup` runs this module: it runs `dbt parse` so `dbt_quality/target/manifest.json` exists and the Dagster
definitions load on a fresh machine (no warehouse or lake data needed to parse). No Dagster imports here.

Environment the dbt project reads (set absolutely here when not given):
- ULTRAEDIT_LAKE: the lake root (local folder); default `$ULTRAEDIT_HOME/lake`
- ULTRAEDIT_WAREHOUSE: the DuckDB file; default `$ULTRAEDIT_HOME/warehouse.duckdb`
- ULTRAEDIT_HOME: default `./.ultraedit`
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ultraedit_dagster.core import settings

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_quality"
MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


def dbt_env(lake_root: str | None = None, warehouse_path: str | None = None) -> dict[str, str]:
    """ULTRAEDIT_LAKE / ULTRAEDIT_WAREHOUSE as absolute paths (explicit args win, then the environment)."""
    lake = lake_root or os.environ.get("ULTRAEDIT_LAKE") or str(settings.home() / "lake")
    warehouse = warehouse_path or os.environ.get("ULTRAEDIT_WAREHOUSE") or str(settings.home() / "warehouse.duckdb")
    if not lake.startswith("s3://"):
        lake = str(Path(lake).expanduser().resolve())
    return {"ULTRAEDIT_LAKE": lake.rstrip("/"), "ULTRAEDIT_WAREHOUSE": str(Path(warehouse).expanduser().resolve())}


def dbt_executable() -> str:
    """The dbt installed next to this interpreter (the venv), whatever PATH says: `dagster dev` code servers may
    start with a PATH that lacks the venv's bin folder."""
    for candidate in (Path(sys.prefix) / "bin" / "dbt", Path(sys.executable).parent / "dbt"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("dbt") or "dbt"


def parse(quiet: bool = True) -> Path:
    """Run `dbt parse` in dbt_quality (writes target/manifest.json); returns the manifest path."""
    env = {**os.environ, **dbt_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    Path(env["ULTRAEDIT_WAREHOUSE"]).parent.mkdir(parents=True, exist_ok=True)
    cmd = [dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    if quiet:
        cmd.insert(1, "--quiet")
    proc = subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not MANIFEST.exists():
        raise RuntimeError(f"dbt parse failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return MANIFEST


def selection_vars(selection: Any, profile: Any = None) -> dict[str, Any]:
    """dbt vars for the models that reproduce the release's selection rule (threshold_sweep): the active profile's
    top k per mode and the region minimum of passing candidates (docs/method.md §5), its thresholds and L1 band per
    mode, and the sweep grid (`sweep_vars`).

    `selection`: the profile's SelectionRule (or the Profile itself); `profile`: the Profile whose thresholds apply
    (default: the registered profile owning this SelectionRule, else the active profile)."""
    if profile is None and hasattr(selection, "selection"):
        profile, selection = selection, selection.selection
    if profile is None:
        profile = _profile_owning(selection)
    return {
        "free_form_top_k": int(selection.free_form_top_k),
        "region_top_k": int(selection.region_top_k),
        "region_min_passing": int(selection.region_min_passing),
        **sweep_vars(profile),
    }


def _profile_owning(selection: Any) -> Any:
    from ultraedit_dagster.core.profiles import PROFILES, get_profile

    for candidate in PROFILES.values():
        if candidate.selection is selection:
            return candidate
    return get_profile()


# Grid shape per swept metric: (steps below, steps above) the profile's threshold. Looser values come first because
# the usual question is "what would loosening X buy"; the caption and DINOv2 axes are shorter to keep the grid (and
# the sweep's join) near the published 6 x 6 x 3 x 3 size (docs/method.md §5).
SWEEP_SHAPE = {"clip_sim_image": (3, 1), "clip_sim_dir": (3, 2), "clip_sim_caption": (1, 1), "dinov2_sim": (1, 1)}
SWEEP_GRID_ENV = "ULTRAEDIT_SWEEP_GRID"


def sweep_step(threshold: float) -> float:
    """Grid spacing around a threshold: 0.05 (a cosine), finer near the ceiling so that a threshold like the tiny
    profile's 0.999 gets neighbours below 1.0 instead of a grid that every candidate passes."""
    return 0.05 if 1.0 - threshold >= 0.1 else round(max(1.0 - threshold, 0.0002) / 2, 4)


def profile_sweep_thresholds(profile: Any) -> dict[str, dict[str, float]]:
    """Per mode, the thresholds as threshold_sweep's axes name them (one caption minimum for source and target, the
    larger of the two when a profile sets them apart) and the L1 band."""
    out = {}
    for mode, t in (("free_form", profile.free_form_thresholds), ("region", profile.region_thresholds)):
        out[mode] = {
            "clip_sim_image": float(t.clip_sim_image),
            "clip_sim_dir": float(t.clip_sim_dir),
            "clip_sim_caption": float(max(t.clip_sim_source, t.clip_sim_target)),
            "dinov2_sim": float(t.dinov2_sim),
            "min_l1": float(t.min_l1),
            "max_l1": float(t.max_l1),
        }
    return out


def default_sweep_grid(profile: Any) -> dict[str, list[float]]:
    """Grid values around each mode's threshold (`SWEEP_SHAPE` steps of `sweep_step`), kept within [-1, 1]."""
    grid: dict[str, list[float]] = {}
    for metric, (below, above) in SWEEP_SHAPE.items():
        values: set[float] = set()
        for thresholds in profile_sweep_thresholds(profile).values():
            t = thresholds[metric]
            step = sweep_step(t)
            values.update(round(t + k * step, 4) for k in range(-below, above + 1))
        grid[metric] = sorted(v for v in values if -1.0 <= v <= 1.0)
    return grid


def sweep_vars(profile: Any, overrides: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """`sweep_grid` (per metric, the values to sweep: the profile's default grid, replaced metric by metric by
    `overrides` or the JSON in ULTRAEDIT_SWEEP_GRID) and `sweep_thresholds` (per mode, the profile's thresholds and
    L1 band). threshold_sweep.sql adds the profile's thresholds to every axis itself, so they are on the grid
    whatever the overrides say (docs/method.md §5)."""
    grid = default_sweep_grid(profile)
    if overrides is None and os.environ.get(SWEEP_GRID_ENV):
        overrides = json.loads(os.environ[SWEEP_GRID_ENV])
    for metric, values in (overrides or {}).items():
        if metric not in grid:
            raise ValueError(f"{SWEEP_GRID_ENV}: unknown sweep axis {metric!r}; known: {', '.join(grid)}")
        grid[metric] = sorted({round(float(v), 4) for v in values})
    return {"sweep_grid": grid, "sweep_thresholds": profile_sweep_thresholds(profile)}


if __name__ == "__main__":
    print(f"dbt manifest: {parse()}")
