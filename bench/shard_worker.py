"""One shard through the whole `shard_pipeline` job, in a fresh process and a fresh ULTRAEDIT_HOME / DAGSTER_HOME.

    python -m bench.shard_worker --size 64 [--no-timers]

The caller sets ULTRAEDIT_HOME / DAGSTER_HOME to an empty temporary folder (bench.common.clean_env). Prints one JSON
line: wall seconds of the shard run, seconds inside each model / encoder call (wrapped with timers in this process,
product code untouched), rows per lake asset, the job's assets, and the process's peak RSS before and after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from .common import CallTimer, install_model_timers, write_bench_manifest

MANIFEST_NAME = "bench"
# dagster's console logger at WARNING: the DEBUG event stream of a 256-sample run is large and not what we measure
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def vm_hwm_mib() -> float | None:
    """Peak resident set size of this process so far (VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cap_profile(triplets: int, candidates: int) -> dict:
    """Replace the active profile (in this process only) by a copy with fewer triplets / candidates."""
    import dataclasses

    from ultraedit_dagster.core import profiles

    if not triplets and not candidates:
        return {}
    p = profiles.get_profile()
    changes: dict = {}
    if triplets:
        changes["triplets_per_caption"] = min(triplets, p.triplets_per_caption)
    if candidates:
        changes["free_form"] = dataclasses.replace(
            p.free_form, candidates_per_triplet=min(candidates, p.free_form.candidates_per_triplet)
        )
        changes["region"] = dataclasses.replace(
            p.region, candidates_per_triplet=min(candidates, p.region.candidates_per_triplet)
        )
    capped = dataclasses.replace(p, **changes)
    profiles.PROFILES[p.name] = capped
    if getattr(profiles, p.name.upper(), None) is p:
        setattr(profiles, p.name.upper(), capped)
    return {
        "triplets_per_caption": capped.triplets_per_caption,
        "free_form.candidates_per_triplet": capped.free_form.candidates_per_triplet,
        "region.candidates_per_triplet": capped.region.candidates_per_triplet,
        "profile_defaults": {
            "triplets_per_caption": p.triplets_per_caption,
            "free_form.candidates_per_triplet": p.free_form.candidates_per_triplet,
            "region.candidates_per_triplet": p.region.candidates_per_triplet,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--no-timers", action="store_true", help="do not wrap model calls (memory runs)")
    ap.add_argument("--triplets", type=int, default=0, help="cap triplets per caption (0: the profile's)")
    ap.add_argument(
        "--candidates", type=int, default=0, help="cap candidates per triplet, both modes (0: the profile's)"
    )
    args = ap.parse_args(argv)
    home = Path(os.environ["ULTRAEDIT_HOME"])
    os.chdir(home)  # anything relative (e.g. an LLM cache dir) lands in the temporary home
    out: dict = {"size": args.size}
    t_import = time.perf_counter()
    overrides = cap_profile(args.triplets, args.candidates)  # before the definitions read the profile
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.definitions import defs
    from ultraedit_dagster.lake.store import SHARD_ASSETS
    from ultraedit_dagster.ops.instance import ensure_instance
    from ultraedit_dagster.sources.manifests import register_manifest

    out["import_seconds"] = time.perf_counter() - t_import
    out["profile_overrides"] = overrides
    instance = ensure_instance()
    lake = defs.resources["lake"].lake
    manifest = write_bench_manifest(home / "manifests" / "bench.jsonl", args.size)
    reg = register_manifest(lake, str(manifest), name=MANIFEST_NAME, shard_size=args.size)
    instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, reg.new_shard_keys)
    shard = reg.shard_keys[0]

    try:  # untimed: the unpartitioned seed pool the text stage reads
        defs.resolve_job_def("seed_pool").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG
        )
    except Exception as exc:  # noqa: BLE001 - no seed pool job in this graph
        out["seed_pool_error"] = f"{type(exc).__name__}: {exc}"[:300]

    job = defs.resolve_job_def("shard_pipeline")
    out["assets"] = (
        sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys) if hasattr(job, "asset_layer") else []
    )
    timer = CallTimer() if args.no_timers else install_model_timers()
    out["timers_installed"] = timer.installed
    out["timers_missing"] = timer.missing
    out["rss_before_run_mib"] = rss_mib()
    out["peak_rss_before_run_mib"] = vm_hwm_mib()
    t0 = time.perf_counter()
    result = job.execute_in_process(
        partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG
    )
    out["wall_seconds"] = time.perf_counter() - t0
    out["success"] = bool(result.success)
    failures = []
    for event in result.all_events:
        if event.is_step_failure:
            failures.append(f"{event.step_key}: {event.step_failure_data.error.message.strip()[:300]}")
    out["step_failures"] = failures
    out["model_seconds"] = dict(timer.seconds)
    out["model_calls"] = dict(timer.calls)
    out["model_seconds_total"] = timer.total()
    out["peak_rss_mib"] = vm_hwm_mib()
    out["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = {}
    for asset in SHARD_ASSETS:
        try:
            if lake.exists(asset, shard):
                pf = lake._parquet_file(asset, shard)
                rows[asset] = pf.metadata.num_rows
        except Exception:  # noqa: BLE001
            pass
    out["rows"] = rows
    out["shard"] = shard
    # per-step durations from the run's events
    steps: dict[str, float] = {}
    starts: dict[str, float] = {}
    try:
        for rec in instance.all_logs(result.run_id):
            ev = rec.dagster_event
            if ev is None:
                continue
            if ev.event_type_value == "STEP_START":
                starts[ev.step_key] = rec.timestamp
            elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in starts:
                steps[ev.step_key] = rec.timestamp - starts[ev.step_key]
    except Exception as exc:  # noqa: BLE001 - informative only
        out["step_seconds_error"] = str(exc)[:200]
    out["step_seconds"] = steps
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - the parent records it
        traceback.print_exc()
        sys.exit(1)
