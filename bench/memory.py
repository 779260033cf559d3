"""Bench 3: peak RSS of one shard run for shards of 8 and 256 samples.

Each run is a fresh process (`bench.shard_worker`, fresh ULTRAEDIT_HOME / DAGSTER_HOME) running the whole
shard_pipeline for one shard; the process reports its own peak RSS (VmHWM from /proc/self/status, equal to
getrusage(RUSAGE_SELF).ru_maxrss) at the end. When run_all has just run the end-to-end bench, its fresh-process runs
at 8 and 256 samples are reused (same worker, same cap; the model-call timers allocate nothing measurable), otherwise
this bench starts its own runs without timers. Target: peak(256) / peak(8) <= 1.5 (a shard is streamed in batches,
never held whole in memory with its images). The RSS before the run (imports, instance; models load lazily inside
the run) is reported too, and the ratio of the growth above that baseline.
"""

from __future__ import annotations

from .common import BenchResult, median, quick
from .e2e_throughput import _int_env, run_shard

TARGET = 1.5


def run(context: dict | None = None) -> BenchResult:
    q = quick()
    res = BenchResult("memory", "Peak RSS of a shard run, 8 vs 256 samples", quick=q)
    small, large = (4, 8) if q else (8, 256)
    triplets = _int_env("BENCH_E2E_TRIPLETS", 1)
    candidates = _int_env("BENCH_E2E_CANDIDATES", 1)
    runs_by_size: dict[int, list[dict]] = {}
    reused = []
    e2e = (context or {}).get("e2e_runs") or {}
    for size in (small, large):
        prior = e2e.get(size) or e2e.get(str(size))
        if prior:
            runs_by_size[size] = prior
            reused.append(size)
        else:
            runs_by_size[size] = [run_shard(size, triplets, candidates, timers=False)]
    if reused:
        res.notes.append(f"peak RSS of the end-to-end bench's fresh-process runs reused for size(s) {reused}")
    peaks = {s: median([r.get("peak_rss_mib") for r in runs]) for s, runs in runs_by_size.items()}
    bases = {s: median([r.get("rss_before_run_mib") for r in runs]) for s, runs in runs_by_size.items()}
    for s in (small, large):
        res.add(
            f"peak RSS, shard of {s}",
            peaks[s],
            "MiB",
            note=f"RSS before the run {bases[s]:.0f} MiB; {len(runs_by_size[s])} run(s)",
        )
    ratio = peaks[large] / peaks[small] if peaks[small] else None
    res.add(f"peak RSS ratio {large} / {small}", ratio, "x", f"<= {TARGET}", None if ratio is None else ratio <= TARGET)
    growth_small = peaks[small] - bases[small]
    growth_large = peaks[large] - bases[large]
    if growth_small > 0:
        res.add(
            f"growth above the pre-run RSS, {large} / {small}",
            growth_large / growth_small,
            "x",
            note=f"{growth_small:.0f} MiB vs {growth_large:.0f} MiB (models load inside the run)",
        )
    o = next(iter(runs_by_size.values()))[0].get("profile_overrides")
    if o:
        res.notes.append(
            f"profile capped as in the end-to-end bench: {o['triplets_per_caption']} triplet(s), "
            f"{o['free_form.candidates_per_triplet']}/{o['region.candidates_per_triplet']} candidate(s)"
        )
    res.details = {
        "runs": {
            str(s): [
                {
                    k: r.get(k)
                    for k in ("peak_rss_mib", "rss_before_run_mib", "ru_maxrss_mib", "wall_seconds", "rows", "success")
                }
                for r in runs
            ]
            for s, runs in runs_by_size.items()
        },
        "reused_from_e2e": reused,
    }
    return res


if __name__ == "__main__":
    from .common import print_result

    print_result(run())
