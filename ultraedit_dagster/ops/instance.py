"""The local Dagster instance: DAGSTER_HOME, its dagster.yaml, and the concurrency pools `gpu` and `duckdb_writer`."""

import glob
import os
import shutil
from importlib import resources as importlib_resources

from ultraedit_dagster.core import settings

# Concurrency pools: one GPU-bound step per GPU, one writer of the DuckDB file.
DEFAULT_POOL_LIMITS = {"duckdb_writer": 1}


def gpu_pool_limit() -> int:
    """The number of GPUs, counted without importing torch (every CLI command calls this): the devices that
    CUDA_VISIBLE_DEVICES names, else the /dev/nvidiaN device files; at least 1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return max(1, len(glob.glob("/dev/nvidia[0-9]*")))


def pool_limits() -> dict[str, int]:
    return {**DEFAULT_POOL_LIMITS, "gpu": gpu_pool_limit()}


def ensure_instance():
    """The local Dagster instance under DAGSTER_HOME (default .ultraedit/dagster), with the pools configured."""
    import dagster as dg

    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists():
        template = importlib_resources.files("ultraedit_dagster") / "data" / "dagster.local.yaml"
        shutil.copyfile(str(template), config)
    instance = dg.DagsterInstance.get()
    for pool, limit in pool_limits().items():
        if instance.event_log_storage.get_concurrency_info(pool).slot_count != limit:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    return instance
