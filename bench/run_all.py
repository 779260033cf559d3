"""Run every benchmark, write bench/results/<name>.json and summary.json, print a markdown table of the figures.

    python -m bench.run_all                 # everything (what `make bench` runs; < 20 minutes on 2 cores)
    python -m bench.run_all llm_concurrency warehouse_scale   # a subset
    BENCH_QUICK=1 python -m bench.run_all   # smoke run: small sizes, results in bench/results/quick/

Each bench runs in its own process (a crash, a leak or a hang stays inside it: the error is recorded in its JSON and
the others still run). bench/gpu.py is not run here (it needs a GPU and local weights).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

from .common import REPO_ROOT, RESULTS_DIR, BenchResult, fmt, machine, machine_line, print_result, quick, write_json

# (name, module, timeout seconds): the order matters (memory reuses the end-to-end runs)
BENCHES: list[tuple[str, str, int]] = [
    ("e2e_throughput", "bench.e2e_throughput", 900),
    ("memory", "bench.memory", 600),
    ("stage_batching", "bench.stage_batching", 600),
    ("llm_concurrency", "bench.llm_concurrency", 300),
    ("partition_scale", "bench.partition_scale", 600),
    ("warehouse_scale", "bench.warehouse_scale", 900),
]


def results_dir() -> Path:
    if os.environ.get("BENCH_RESULTS_DIR"):
        return Path(os.environ["BENCH_RESULTS_DIR"]).resolve()
    return RESULTS_DIR / "quick" if quick() else RESULTS_DIR


def run_one_in_process(name: str, module: str, context_path: Path, out_dir: Path) -> int:
    """Child side: run one bench, write its JSON (and the shared context), print its figures."""
    import importlib

    context = json.loads(context_path.read_text()) if context_path.exists() else {}
    t0 = time.perf_counter()
    try:
        res = importlib.import_module(module).run(context)
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal to the others
        res = BenchResult(name, name, quick=quick(), error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    res.seconds = time.perf_counter() - t0
    out = res.to_json()
    out["run_id"] = os.environ.get("BENCH_RUN_ID")
    write_json(out_dir / f"{name}.json", out)
    context_path.write_text(json.dumps(context, default=str))
    print_result(res)
    return 0


def run_child(name: str, module: str, timeout: int, context_path: Path, out_dir: Path) -> dict:
    """Parent side: run one bench in a fresh process; on a crash or a timeout, write a JSON that says so."""
    cmd = [sys.executable, "-m", "bench.run_all", "--one", name, "--context", str(context_path), "--out", str(out_dir)]
    t0 = time.perf_counter()
    err_path = out_dir / f"{name}.stderr.log"
    error = None
    try:
        with open(err_path, "w") as err:
            proc = subprocess.run(
                cmd, cwd=str(REPO_ROOT), stderr=err, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            )
        if proc.returncode != 0:
            error = f"bench process exited {proc.returncode}"
    except subprocess.TimeoutExpired:
        error = f"bench timed out after {timeout} s"
    seconds = time.perf_counter() - t0
    path = out_dir / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else None
    if data is None or data.get("run_id") != os.environ.get("BENCH_RUN_ID"):
        tail = err_path.read_text()[-3000:] if err_path.exists() else ""
        data = BenchResult(name, name, quick=quick(), error=f"{error or 'no result written'}\n{tail}").to_json()
        data["run_id"] = os.environ.get("BENCH_RUN_ID")
        write_json(path, data)
        print(f"\n## {name}\nERROR: {error or 'no result written'} (stderr in {err_path})", flush=True)
    data["process_seconds"] = seconds
    if not data.get("error"):
        err_path.unlink(missing_ok=True)
    return data


def markdown_table(results: list[dict], m: dict) -> str:
    lines = [f"Machine: {machine_line(m)}", "", "| bench | figure | value | target | met |", "|---|---|---|---|---|"]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['name']} | ERROR | {r['error'].splitlines()[0][:120]} | | |")
        for f in r.get("figures", []):
            met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
            lines.append(f"| {r['name']} | {f['name']} | {fmt(f['value'])} {f['unit']} | {f['target']} | {met} |")
    missed = [(r["name"], f) for r in results for f in r.get("figures", []) if f["met"] is False]
    if missed:
        lines += ["", "Missed targets:"]
        lines += [f"- {n}: {f['name']} = {fmt(f['value'])} {f['unit']} (target {f['target']})" for n, f in missed]
    notes = [
        (r["name"], n)
        for r in results
        for n in r.get("notes", []) + [f"not measured: {s}" for s in r.get("skipped", [])]
    ]
    if notes:
        lines += ["", "Notes:"]
        lines += [f"- {n}: {t}" for n, t in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benches to run (default: all): " + ", ".join(n for n, _, _ in BENCHES))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--context", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        module = dict((n, mod) for n, mod, _ in BENCHES)[args.one]
        return run_one_in_process(args.one, module, Path(args.context), Path(args.out))

    known = {n for n, _, _ in BENCHES}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"unknown bench(es) {unknown}; known: {sorted(known)}", file=sys.stderr)
        return 2
    selected = [b for b in BENCHES if not args.names or b[0] in args.names]
    out_dir = results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_RUN_ID"] = run_id = uuid.uuid4().hex[:12]
    m = machine()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    print(f"# ultraedit-dagster benchmarks{' (QUICK smoke run)' if quick() else ''}\n\n{machine_line(m)}", flush=True)
    context_path = out_dir / f".context-{run_id}.json"
    t0 = time.perf_counter()
    results = []
    try:
        for name, module, timeout in selected:
            print(f"\n... running {name} (limit {timeout} s)", flush=True)
            results.append(run_child(name, module, timeout, context_path, out_dir))
    finally:
        context_path.unlink(missing_ok=True)
    total = time.perf_counter() - t0
    summary = {
        "run_id": run_id,
        "started_utc": started,
        "total_seconds": total,
        "quick": quick(),
        "machine": m,
        "benches": {
            r["name"]: {
                "seconds": r.get("process_seconds"),
                "error": r.get("error"),
                "figures": r.get("figures", []),
                "notes": r.get("notes", []),
                "skipped": r.get("skipped", []),
            }
            for r in results
        },
    }
    if not args.names:
        write_json(out_dir / "summary.json", summary)
    else:
        write_json(out_dir / f"summary-{'-'.join(args.names)}.json", summary)
    table = markdown_table(results, m)
    (out_dir / ("summary.md" if not args.names else f"summary-{'-'.join(args.names)}.md")).write_text(
        f"# Benchmark figures ({started}{', quick smoke run' if quick() else ''})\n\n{table}\n\n"
        f"Total: {total / 60:.1f} min\n"
    )
    print("\n# Figures\n")
    print(table)
    print(f"\nTotal: {total / 60:.1f} min; JSON in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
