"""Bench 1: end-to-end shard throughput and orchestration overhead (tiny profile, this CPU).

For each shard size (8, 64, 256 samples: the demo images repeated under distinct ids and captions) and each run, a
fresh process (`bench.shard_worker`) with a fresh temporary ULTRAEDIT_HOME / DAGSTER_HOME registers the manifest,
materializes the seed pool (untimed), wraps every model / encoder call and lazy model load with a timer
(monkeypatched in that process; product code untouched), then times `shard_pipeline.execute_in_process` for the
shard: the whole shard graph as it exists in definitions.py (its asset list is recorded).

Figures, medians over the runs: samples/s = shard size / wall seconds of the run; orchestration overhead = wall
seconds / seconds inside model calls (loads included: they are model code, not orchestration; the ratio without
loads is reported too); linearity = per-sample cost at 256 / per-sample cost at 64 (1.0 = linear).

Budget: everything has to fit `make bench` in 20 minutes on 2 cores, so by default the profile is capped to
1 triplet per caption and 1 candidate per triplet (BENCH_E2E_TRIPLETS / BENCH_E2E_CANDIDATES; 0 = the profile's own
3 triplets, 2 free-form / 3 region candidates), the same cap for every size so the sizes compare; and the 256 runs
are as many (1..3) as fit the remaining budget (BENCH_E2E_BUDGET_S, default 600 s), projected from the 8 / 64 runs.
"""

from __future__ import annotations

import math
import os
import time

from .common import BenchResult, clean_env, median, quick, run_child, temp_home

SIZES = (8, 64, 256)
QUICK_SIZES = (4, 8)
OVERHEAD_TARGET = 1.2
LINEARITY_TARGET = 1.1


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def run_shard(size: int, triplets: int, candidates: int, timers: bool = True, timeout: float = 1800) -> dict:
    with temp_home() as home:
        args = ["--size", str(size), "--triplets", str(triplets), "--candidates", str(candidates)]
        if not timers:
            args.append("--no-timers")
        out = run_child("bench.shard_worker", args, clean_env(home), timeout=timeout)
    return out


def summarize_runs(runs: list[dict]) -> dict:
    walls = [r["wall_seconds"] for r in runs]
    model = [r["model_seconds_total"] for r in runs]
    loads = [sum(v for k, v in r["model_seconds"].items() if k.startswith("load:")) for r in runs]
    size = runs[0]["size"]
    overhead = [w / m if m else None for w, m in zip(walls, model, strict=True)]
    overhead_nl = [(w - ld) / (m - ld) if m - ld > 0 else None for w, m, ld in zip(walls, model, loads, strict=True)]
    by_label: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r["model_seconds"].items():
            by_label.setdefault(k, []).append(v)
    steps: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r.get("step_seconds", {}).items():
            steps.setdefault(k, []).append(v)
    return {
        "size": size,
        "runs": len(runs),
        "wall_seconds": walls,
        "wall_median": median(walls),
        "samples_per_s": size / median(walls),
        "model_seconds_median": median(model),
        "load_seconds_median": median(loads),
        "overhead_median": median([o for o in overhead if o]),
        "overhead_excl_loads_median": median([o for o in overhead_nl if o]),
        "model_seconds_by_call_median": {k: median(v) for k, v in by_label.items()},
        "step_seconds_median": {k: median(v) for k, v in steps.items()},
        "rows": runs[-1].get("rows", {}),
        "success": [r.get("success") for r in runs],
        "step_failures": sorted({f for r in runs for f in r.get("step_failures", [])}),
        "peak_rss_mib": [r.get("peak_rss_mib") for r in runs],
        "process_seconds": [r.get("process_seconds") for r in runs],
    }


def run(context: dict | None = None) -> BenchResult:
    q = quick()
    res = BenchResult(
        "e2e_throughput", "End-to-end shard throughput and orchestration overhead (tiny profile)", quick=q
    )
    triplets = _int_env("BENCH_E2E_TRIPLETS", 1)
    candidates = _int_env("BENCH_E2E_CANDIDATES", 1)
    budget = _int_env("BENCH_E2E_BUDGET_S", 120 if q else 600)
    sizes = QUICK_SIZES if q else SIZES
    want_runs = 1 if q else 3
    t_start = time.perf_counter()
    per_size: dict[int, dict] = {}
    raw: dict[int, list[dict]] = {}
    for size in sizes:
        runs_here = want_runs
        if size == sizes[-1] and len(per_size) >= 2 and not q:
            # project one run of the largest size from the two smaller ones (fixed cost + per-sample slope)
            a, b = per_size[sizes[0]], per_size[sizes[-2]]
            proc = median([p for s in per_size.values() for p in s["process_seconds"] if p]) or 0
            slope = max((b["wall_median"] - a["wall_median"]) / (b["size"] - a["size"]), 0.0)
            fixed_proc = max(proc - b["wall_median"], 0.0)  # import + registration per process
            projected = fixed_proc + b["wall_median"] + slope * (size - b["size"])
            left = budget - (time.perf_counter() - t_start)
            runs_here = max(1, min(want_runs, math.floor(left / projected))) if projected > 0 else want_runs
            res.details["projection_for_largest"] = {
                "projected_run_seconds": projected,
                "budget_left_s": left,
                "runs": runs_here,
            }
            if runs_here < want_runs:
                res.notes.append(
                    f"{runs_here} run(s) at {size} samples (not {want_runs}): one run was projected "
                    f"at {projected:.0f} s with {left:.0f} s of the {budget} s budget left"
                )
        runs = []
        for _ in range(runs_here):
            runs.append(run_shard(size, triplets, candidates))
        raw[size] = runs
        per_size[size] = summarize_runs(runs)
        s = per_size[size]
        print(
            f"  e2e {size} samples: wall {s['wall_median']:.1f} s (runs {[round(w, 1) for w in s['wall_seconds']]}), "
            f"overhead {s['overhead_median']:.2f}",
            flush=True,
        )
    first = raw[sizes[0]][0]
    res.details["graph_assets"] = first.get("assets")
    res.details["profile_overrides"] = first.get("profile_overrides")
    res.details["timers_installed"] = first.get("timers_installed")
    res.details["timers_missing"] = first.get("timers_missing")
    res.details["per_size"] = {str(k): v for k, v in per_size.items()}
    res.details["raw_runs"] = {str(k): v for k, v in raw.items()}
    if context is not None:
        context["e2e_runs"] = raw  # the memory bench reuses the peak RSS of these fresh processes
    largest = sizes[-1]
    for size in sizes:
        s = per_size[size]
        res.add(
            f"samples/s, shard of {size}",
            s["samples_per_s"],
            "samples/s",
            note=f"median of {s['runs']} run(s), wall {s['wall_median']:.1f} s",
        )
    for size in sizes:
        s = per_size[size]
        is_target = size == largest
        res.add(
            f"orchestration overhead, shard of {size}",
            s["overhead_median"],
            "x (wall / model time)",
            f"<= {OVERHEAD_TARGET} at {largest}" if is_target else "",
            (s["overhead_median"] <= OVERHEAD_TARGET) if is_target and s["overhead_median"] else None,
            note=f"excluding model loads: {s['overhead_excl_loads_median']:.2f}"
            if s["overhead_excl_loads_median"]
            else "",
        )
    if len(sizes) >= 2:
        a, b = per_size[sizes[-2]], per_size[sizes[-1]]
        lin = (b["wall_median"] / b["size"]) / (a["wall_median"] / a["size"])
        res.add(
            f"per-sample cost at {sizes[-1]} / at {sizes[-2]}",
            lin,
            "x",
            f"<= {LINEARITY_TARGET} (linear)",
            lin <= LINEARITY_TARGET,
        )
    ok = all(all(s["success"]) for s in per_size.values())
    if not ok:
        res.notes.append(
            "some shard runs did not succeed: "
            + "; ".join(f for s in per_size.values() for f in s["step_failures"])[:800]
        )
    for m in first.get("timers_missing") or []:
        res.skipped.append(f"timer not installed: {m}")
    assets = first.get("assets") or []
    res.notes.append(f"graph measured: {', '.join(assets)}")
    if first.get("profile_overrides"):
        o = first["profile_overrides"]
        res.notes.append(
            f"profile capped for the time budget: {o['triplets_per_caption']} triplet(s) per caption, "
            f"{o['free_form.candidates_per_triplet']} free-form / {o['region.candidates_per_triplet']} region "
            f"candidate(s) per triplet (profile: {o['profile_defaults']})"
        )
    missing = [a for a in ("edit_candidates", "metric_scores", "filtered_release") if a not in assets]
    if missing:
        res.notes.append(f"not in shard_pipeline yet, so not measured: {', '.join(missing)}")
    return res


if __name__ == "__main__":
    from .common import print_result

    print_result(run())
