"""Paths and environment of the dbt_quality project, and its preparation
(`python -m ultraedit_dagster.lake.dbt_project`).

`make setup` runs this module: it runs `dbt parse` so `dbt_quality/target/manifest.json` exists and the Dagster
definitions load on a fresh machine (no warehouse or lake data needed to parse). No Dagster imports here.

Environment the dbt project reads (set absolutely here when not given):
- ULTRAEDIT_LAKE: the lake root (local folder); default `$ULTRAEDIT_HOME/lake`
- ULTRAEDIT_WAREHOUSE: the DuckDB file; default `$ULTRAEDIT_HOME/warehouse.duckdb`
- ULTRAEDIT_HOME: default `./.ultraedit`
"""

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


def selection_vars(selection: Any) -> dict[str, int]:
    """dbt vars for the models that reproduce the release's selection rule (threshold_sweep): the active profile's
    top k per mode and the region minimum of passing candidates (docs/method.md §5)."""
    return {
        "free_form_top_k": int(selection.free_form_top_k),
        "region_top_k": int(selection.region_top_k),
        "region_min_passing": int(selection.region_min_passing),
    }


if __name__ == "__main__":
    print(f"dbt manifest: {parse()}")
