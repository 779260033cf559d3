"""Bench 5: partition scale: 4,000 and 40,000 shards in a fresh SQLite DAGSTER_HOME.

Per count, in a fresh temporary ULTRAEDIT_HOME / DAGSTER_HOME (the CLI's instance: `ensure_instance`, SQLite):
1. register: `instance.add_dynamic_partitions("shards", keys)` for all the keys in one call (a separate process);
2. in a fresh process with those partitions present: load the definitions (import `ultraedit_dagster.definitions`,
   resolve the repository and the asset graph), list the job's partition keys through the instance, and compute the
   nightly rebuild selection (missing / failed (asset, shard) pairs over every per-shard asset, as the schedule and
   `ultraedit backfill --failed` do);
3. one inbox-sensor tick (automation.py's inbox sensor, through `dg.build_sensor_context`) with a 16-row manifest in
   the inbox (2 new shards of 8): list the inbox, register the manifest, read the existing partitions, emit the run
   requests. The sensor is built from `automation.build_inbox_sensor(shard_pipeline)` when definitions.py does not
   define one yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from .common import BenchResult, clean_env, quick, run_child, temp_home, write_bench_manifest

COUNTS = (4000, 40000)
QUICK_COUNTS = (400, 4000)
MANIFEST = "scale"


def _keys(n: int) -> list[str]:
    from ultraedit_dagster.core.partitions import shard_key

    return [shard_key(MANIFEST, i) for i in range(n)]


def child_register(n: int) -> dict:
    t0 = time.perf_counter()
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.ops.instance import ensure_instance

    instance = ensure_instance()
    import_s = time.perf_counter() - t0
    keys = _keys(n)
    t0 = time.perf_counter()
    instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, keys)
    register_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = len(instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    list_s = time.perf_counter() - t0
    return {"register_s": register_s, "list_partitions_s": list_s, "partitions": count, "import_s": import_s}


def child_load(n: int) -> dict:
    out: dict = {}
    t0 = time.perf_counter()
    import dagster as dg

    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.ops.instance import ensure_instance

    instance = ensure_instance()
    out["import_dagster_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from ultraedit_dagster.definitions import defs

    out["import_definitions_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def("shard_pipeline")
    out["resolve_repository_s"] = time.perf_counter() - t0
    out["load_definitions_s"] = out["import_definitions_s"] + out["resolve_repository_s"]
    t0 = time.perf_counter()
    keys = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    out["job_partition_keys_s"] = time.perf_counter() - t0
    out["partitions"] = len(keys)
    try:
        from ultraedit_dagster.ops.automation import assets_needing_rebuild
        from ultraedit_dagster.ops.backfill import shard_asset_keys

        t0 = time.perf_counter()
        todo = assets_needing_rebuild(instance, shard_asset_keys(graph))
        out["rebuild_selection_s"] = time.perf_counter() - t0
        out["rebuild_selection_shards"] = len(todo)
    except Exception as exc:  # noqa: BLE001
        out["rebuild_selection_error"] = f"{type(exc).__name__}: {exc}"[:300]

    # one inbox-sensor tick
    try:
        from ultraedit_dagster.ops import automation

        sensor = next((s for s in (defs.sensors or []) if s.name == automation.INBOX_SENSOR_NAME), None)
        out["inbox_sensor_source"] = "definitions.py" if sensor is not None else "automation.build_inbox_sensor"
        if sensor is None:
            sensor = automation.build_inbox_sensor(job)
        inbox = Path(os.environ["ULTRAEDIT_HOME"]) / "inbox"
        write_bench_manifest(inbox / "bench-inbox.jsonl", 16)
        os.environ["ULTRAEDIT_INBOX"] = str(inbox)
        os.environ["ULTRAEDIT_INBOX_SHARD_SIZE"] = "8"
        lake_res = defs.resources["lake"]
        with dg.build_sensor_context(instance=instance, resources={"lake": lake_res}, cursor=None) as ctx:
            t0 = time.perf_counter()
            result = sensor(ctx)
            out["inbox_tick_s"] = time.perf_counter() - t0
        reqs = getattr(result, "run_requests", None) or []
        out["inbox_tick_run_requests"] = len(reqs)
        out["inbox_tick_new_partitions"] = sum(
            len(r.partition_keys) for r in (getattr(result, "dynamic_partitions_requests", None) or [])
        )
        # an idle tick: nothing new in the inbox (the cursor from the first tick)
        with dg.build_sensor_context(
            instance=instance, resources={"lake": lake_res}, cursor=getattr(result, "cursor", None)
        ) as ctx2:
            t0 = time.perf_counter()
            sensor(ctx2)
            out["inbox_idle_tick_s"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        out["inbox_tick_error"] = f"{type(exc).__name__}: {exc}"[:500]
        out["inbox_tick_traceback"] = traceback.format_exc()[-1500:]
    _ = SHARDS_PARTITIONS_NAME
    return out


def measure(n: int) -> dict:
    with temp_home("ultraedit-bench-partitions-") as home:
        env = clean_env(home)
        reg = run_child("bench.partition_scale", ["--child", "register", "--n", str(n)], env, timeout=1200)
        load = run_child("bench.partition_scale", ["--child", "load", "--n", str(n)], env, timeout=1200)
    return {**reg, **load}


def run(context: dict | None = None) -> BenchResult:
    q = quick()
    res = BenchResult(
        "partition_scale", "Partition scale: registering shards, loading definitions, a sensor tick", quick=q
    )
    per = {}
    for n in QUICK_COUNTS if q else COUNTS:
        m = measure(n)
        per[n] = m
        res.add(
            f"register {n:,} shards (add_dynamic_partitions)",
            m["register_s"],
            "s",
            note=f"{n / m['register_s']:,.0f} partitions/s" if m["register_s"] else "",
        )
        res.add(
            f"load the definitions with {n:,} shards",
            m["load_definitions_s"],
            "s",
            note=f"import {m['import_definitions_s']:.1f} s + resolve {m['resolve_repository_s']:.2f} s; "
            f"listing the job's {m['partitions']:,} partition keys {m['job_partition_keys_s']:.3f} s",
        )
        if "rebuild_selection_s" in m:
            res.add(
                f"rebuild selection over {n:,} shards (nightly schedule / backfill --failed)",
                m["rebuild_selection_s"],
                "s",
            )
        if "inbox_tick_s" in m:
            res.add(
                f"inbox sensor tick with {n:,} shards (1 new manifest, 2 new shards)",
                m["inbox_tick_s"],
                "s",
                note=f"{m['inbox_tick_run_requests']} run requests; idle tick {m['inbox_idle_tick_s']:.3f} s; "
                f"sensor from {m['inbox_sensor_source']}",
            )
        else:
            res.notes.append(f"inbox tick at {n}: {m.get('inbox_tick_error')}")
    res.details = {str(k): v for k, v in per.items()}
    res.notes.append("no targets in the issue for these; Dagster recommends <= 100k partitions per asset")
    return res


def _child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["register", "load"], required=True)
    ap.add_argument("--n", type=int, required=True)
    args = ap.parse_args(argv)
    home = Path(os.environ["ULTRAEDIT_HOME"])
    os.chdir(home)
    out = child_register(args.n) if args.child == "register" else child_load(args.n)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(_child_main(sys.argv[1:]))
    from .common import print_result

    print_result(run())
