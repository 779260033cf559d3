"""Bench: how long the Dagster definitions take to load (what a code server pays on every start) and how fast the
`ultraedit` command answers --help and an argument error.

    .venv/bin/python -m bench.defs_load

Each figure is the median wall time of fresh processes (`python -c "import ultraedit_dagster.definitions"`, then
`python -m ultraedit_dagster.cli --help` / `materialize` without --shard), after one untimed warm-up run that fills
the page cache (and the .pyc files, where Python may write them). Also printed: the modules the load imports that a
code server should not need (torch and the other model libraries: none expected) and the five slowest imports of the
definitions module (`-X importtime`), and the CPU seconds (user + system) of the load, which other jobs on the machine
disturb far less than the wall time: on an idle machine the wall time is about the CPU time.
Also: how long a fresh process takes to import the model libraries (what each run worker pays once, before its
first model loads), and whether the installed packages carry compiled bytecode (`make setup` compiles it: where
PYTHONDONTWRITEBYTECODE is set Python never writes it, so without it every process compiles them from source).
Targets (issue 13): definitions under 5 s on the idle 2-core development machine; --help and argument errors under
1 s. Every figure is a wall time: run it when the machine is otherwise idle.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from .common import REPO_ROOT, BenchResult, clean_env, median, print_result, quick, temp_home

HEAVY = (
    *("torch", "torchvision", "diffusers", "transformers", "open_clip", "segment_anything"),
    *("dagster_aws", "boto3", "dagster_dbt", "dbt"),  # integrations imported only by the steps that use them
)
DEFS_TARGET_S = 5.0
CLI_TARGET_S = 1.0


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t0, proc


def _timed_cpu(args: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child, process)."""
    cpu0 = _children_cpu_s()
    seconds, proc = _timed(args, env)
    return seconds, _children_cpu_s() - cpu0, proc


def _slowest_imports(stderr: str, n: int = 5) -> list[tuple[str, float]]:
    top: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) == 3:  # what ultraedit_dagster.definitions imports directly
            top.append((m.group(3), int(m.group(1)) / 1e6))
    return sorted(top, key=lambda t: -t[1])[:n]


def run(context: dict | None = None) -> BenchResult:
    repeats = 2 if quick() else 5
    res = BenchResult("defs_load", "Definitions load time and CLI response", quick=quick())
    py = sys.executable
    with temp_home("ultraedit-bench-defs-") as home:
        env = clean_env(home)
        load = [py, "-c", "import ultraedit_dagster.definitions"]
        probe = (
            "import sys, json; import ultraedit_dagster.definitions; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
        )
        _, warm = _timed([py, "-c", probe], env)  # warm-up (untimed): page cache, .pyc files
        if warm.returncode != 0:
            res.error = f"the definitions do not load:\n{warm.stderr[-3000:]}"
            return res
        heavy = json.loads(warm.stdout.strip().splitlines()[-1])
        defs_times, defs_cpu = [], []
        for _ in range(repeats):
            seconds, cpu, proc = _timed_cpu(load, env)
            if proc.returncode == 0:
                defs_times.append(seconds)
                defs_cpu.append(cpu)
        defs_s = median(defs_times)
        res.add(
            "definitions load (fresh process)",
            defs_s,
            "s",
            f"< {DEFS_TARGET_S:.0f} s",
            None if defs_s is None else defs_s < DEFS_TARGET_S,
            note=f"median of {len(defs_times)}; includes the interpreter start",
        )
        res.add("definitions load, CPU (user + system)", median(defs_cpu), "s", note="median; load-insensitive")
        _, dagster_cpu, _ = _timed_cpu([py, "-c", "import dagster"], env)
        res.details["import_dagster_alone_cpu_s"] = dagster_cpu
        res.notes.append(f"`import dagster` alone: {dagster_cpu:.2f} CPU s (the floor of any Dagster code location)")
        res.add(
            "heavy modules imported by the load",
            ", ".join(heavy) or "none",
            target="none",
            met=not heavy,
        )
        _, imp = _timed([py, "-X", "importtime", "-c", "import ultraedit_dagster.definitions"], env)
        res.details["slowest_definitions_imports_s"] = _slowest_imports(imp.stderr)
        res.notes.append(
            "slowest imports of the definitions module: "
            + ", ".join(f"{m} {s:.2f} s" for m, s in res.details["slowest_definitions_imports_s"])
        )
        for label, argv, code in (
            ("ultraedit --help", ["--help"], 0),
            ("argument error (materialize without --shard)", ["materialize"], 2),
        ):
            times = []
            for _ in range(repeats):
                seconds, proc = _timed([py, "-m", "ultraedit_dagster.cli", *argv], env)
                if proc.returncode == code:
                    times.append(seconds)
            value = median(times)
            res.add(label, value, "s", f"< {CLI_TARGET_S:.0f} s", None if value is None else value < CLI_TARGET_S)
        models = [py, "-c", "import torch, transformers, diffusers, open_clip, transformers.models.grounding_dino"]
        _timed(models, env)  # warm-up: page cache
        model_times = [_timed(models, env)[0] for _ in range(repeats)]
        res.add("model libraries import (fresh process)", median(model_times), "s", note="torch, transformers, ...")
        torch_init = importlib.util.find_spec("torch").origin  # found, not imported
        compiled = (Path(torch_init).parent / "__pycache__").is_dir()
        res.details["site_packages_bytecode_compiled"] = compiled
        res.notes.append(
            f"installed packages compiled to bytecode: {'yes' if compiled else 'no'}; "
            f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"
        )
        base_s, _ = _timed([py, "-c", "pass"], env)
        res.details["interpreter_start_s"] = base_s
        res.details["load_avg_1min"] = os.getloadavg()[0]
        res.notes.append(f"1-minute load average during the bench: {os.getloadavg()[0]:.1f} (figures are wall times)")
    return res


if __name__ == "__main__":
    print_result(run())
