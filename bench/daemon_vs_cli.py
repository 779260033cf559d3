"""Bench: one shard's whole per-shard cascade launched through the Dagster daemon vs `ultraedit materialize`.

    .venv/bin/python -m bench.daemon_vs_cli

A fresh ULTRAEDIT_HOME / DAGSTER_HOME (the local SQLite instance `ultraedit init` makes, queued run coordinator).
The demo manifest is registered as two shards of 8 images and the seed pool is materialized (untimed). Then:

- CLI: `ultraedit materialize --shard bench-00000` in a fresh process, wall time (imports, model loads, every step).
- daemon: `dagster-daemon run` over a code location holding the project's definitions as they are (assets, checks,
  jobs, resources and executor; only the sensors and the schedule are left out so nothing else launches runs), started
  and given time to come up (untimed); then `ultraedit backfill --failed`'s backfill of the one missing shard
  (bench-00001) is added and timed until every run it launched has finished. This is what a UI "Materialize", a
  sensor or a backfill costs: the daemon launches each run as a process that loads the code location and executes
  the steps with the definitions' executor.

Figure: daemon seconds / CLI seconds (target <= 1.5; issue 13 measured 950 s vs ~90 s with the multiprocess
executor, one process per step). Every figure is a wall time on a possibly busy machine: run it when idle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .common import REPO_ROOT, BenchResult, clean_env, print_result, quick, temp_home

TARGET = 1.5
LOCATION = """
import dagster as dg
import ultraedit_dagster.definitions as p

defs = dg.Definitions(
    assets=list(p.defs.assets or []),
    asset_checks=list(p.defs.asset_checks or []),
    jobs=list(p.defs.jobs or []),
    resources=dict(p.defs.resources or {}),
    executor=p.defs.executor,
)
"""
SETUP = """
from importlib import resources
from ultraedit_dagster import cli
from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
from ultraedit_dagster.sources.manifests import register_manifest
from ultraedit_dagster.definitions import defs
instance = cli.ensure_instance()
manifest = resources.files("ultraedit_dagster") / "demo_data" / "manifest.jsonl"
reg = register_manifest(cli._lake(), str(manifest), name="bench", shard_size={size})
instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, reg.new_shard_keys)
assert defs.resolve_job_def("seed_pool").execute_in_process(instance=instance, run_config=cli.QUIET).success
print(",".join(reg.shard_keys))
"""


def _python(code: str, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait_for_backfill(env: dict[str, str], backfill_id: str, daemon: subprocess.Popen, timeout: float) -> dict:
    code = f"""
import json, time
import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus
instance = dg.DagsterInstance.get()
done = {{BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED,
        BulkActionStatus.FAILED, BulkActionStatus.CANCELED}}
finished = {{dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}}
deadline = time.time() + {timeout}
while time.time() < deadline:
    b = instance.get_backfill({backfill_id!r})
    runs = instance.get_runs(filters=dg.RunsFilter(tags={{"dagster/backfill": {backfill_id!r}}}))
    if b.status in done and all(r.status in finished for r in runs):
        print(json.dumps({{"status": str(b.status), "runs": [str(r.status) for r in runs],
                          "seconds": [(r.end_time or 0) - (r.start_time or 0) for r in
                                      [instance.get_run_record_by_id(x.run_id) for x in runs]]}}))
        break
    time.sleep(1)
else:
    print("{{}}")
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while proc.poll() is None:
        if daemon.poll() is not None:
            proc.kill()
            raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}")
        time.sleep(1)
    import json

    out = proc.stdout.read().strip().splitlines()
    return json.loads(out[-1]) if out else {}


def run(context: dict | None = None) -> BenchResult:
    title = "One-shard cascade: through the daemon vs `ultraedit materialize`"
    res = BenchResult("daemon_vs_cli", title, quick=quick())
    size = 4 if quick() else 8
    with temp_home("ultraedit-bench-daemon-") as home:
        env = clean_env(home)
        setup = _python(SETUP.replace("{size}", str(size)), env)
        if setup.returncode != 0:
            res.error = f"setup failed:\n{setup.stderr[-3000:]}"
            return res
        shards = setup.stdout.strip().splitlines()[-1].split(",")
        cli_shard, daemon_shard = shards[0], shards[1]

        t0 = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "ultraedit_dagster.cli", "materialize", "--shard", cli_shard],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        cli_s = time.perf_counter() - t0
        if cli.returncode != 0:
            res.error = f"ultraedit materialize failed:\n{cli.stdout[-2000:]}\n{cli.stderr[-2000:]}"
            return res
        res.add(f"`ultraedit materialize`, one shard of {size}", cli_s, "s", note="fresh process, wall time")

        (home / "bench_location.py").write_text(LOCATION)
        (home / "workspace.yaml").write_text(
            f"load_from:\n  - python_file:\n      relative_path: {home / 'bench_location.py'}\n"
            f"      working_directory: {REPO_ROOT}\n      location_name: bench\n"
        )
        log = open(home / "daemon.log", "wb")
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            time.sleep(20 if quick() else 45)  # untimed: the daemon loads the code location once
            t0 = time.perf_counter()
            launch = subprocess.run(
                [sys.executable, "-m", "ultraedit_dagster.cli", "backfill", "--failed"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if launch.returncode != 0 or "backfill " not in launch.stdout:
                res.error = f"backfill launch failed:\n{launch.stdout[-2000:]}\n{launch.stderr[-2000:]}"
                return res
            backfill_id = launch.stdout.split("backfill ", 1)[1].split()[0]
            outcome = _wait_for_backfill(env, backfill_id, daemon, timeout=1800)
            daemon_s = time.perf_counter() - t0
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
            log.close()
        runs = outcome.get("runs", [])
        res.details.update(backfill=outcome, cli_shard=cli_shard, daemon_shard=daemon_shard, launched=launch.stdout)
        ok = bool(runs) and all(s.endswith("SUCCESS") for s in runs)
        res.add(
            f"through the daemon (`ultraedit backfill --failed`), one shard of {size}",
            daemon_s,
            "s",
            note=f"{len(runs)} run(s): {', '.join(runs) or 'none'}; from adding the backfill to its last run's end",
        )
        ratio = daemon_s / cli_s if cli_s else None
        res.add("daemon / CLI", ratio, "x", f"<= {TARGET}", None if ratio is None or not ok else ratio <= TARGET)
        if not ok:
            res.notes.append("the daemon's runs did not all succeed: see the daemon log in details")
            res.details["daemon_log_tail"] = (home / "daemon.log").read_text(errors="replace")[-4000:]
        res.notes.append(f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    return res


if __name__ == "__main__":
    print_result(run())
