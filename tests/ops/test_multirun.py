"""The whole graph operated the way users do (issue 13), on the production setup: PostgreSQL as instance storage,
moto's S3 server as the lake, `dagster-daemon` with the queued run coordinator (3 runs at a time, each its own
process) over the project's real definitions (sensors, automation, pools), the tiny profile, shards of one image.

1. A 3-shard manifest dropped into the inbox reaches `filtered_release`, the warehouse views, the dbt models and
   `release_card` by automation alone, and no run fails (`make ui`'s path; `ultraedit init` made the instance).
2. One asset backfill of the GPU step (`edit_candidates` + `metric_scores`) and `filtered_release` over all three
   shards, with one shard's upstream file corrupted: the GPU step runs shard ranges (several shards in one run), the
   broken shard fails, the healthy shard of its range is still materialized, and only the broken shard is left
   failed.
3. The file restored, `ultraedit backfill --failed` re-runs only that shard; it comes back identical to what it was
   before the failure, and the release follows again by automation.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, require_system_package

# Several run processes on 2 shared cores: about 7 minutes on an idle development machine, more under load.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

DEMO = REPO / "ultraedit_dagster" / "demo_data"
SHARDS = ["inbox-demo-v2-00000", "inbox-demo-v2-00001", "inbox-demo-v2-00002"]
BROKEN = SHARDS[1]  # editing's BackfillPolicy.multi_run(2): the range [00000, 00001] holds it with a healthy shard
SUMMARY_ASSETS = ["warehouse_views", "shard_quality", "release_card"]
GPU_STEP = ["edit_candidates", "metric_scores"]
MAX_CONCURRENT_RUNS = 3
TIMEOUT_S = 1200  # per phase


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's package; run as `postgres` when we are root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ultraedit-pg-")
        self.data = os.path.join(self.dir, "data")
        self.as_root = os.geteuid() == 0

    def _run(self, *cmd: str) -> None:
        full = [str(self.bin / cmd[0]), *cmd[1:]]
        if self.as_root:
            full = ["runuser", "-u", "postgres", "--", *full]
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-U", "dagster", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "log"), "-w", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "dagster", "dagster")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://dagster@127.0.0.1:{self.port}/dagster"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    require_system_package(str(_pg_bin() or "/usr/lib/postgresql/<version>/bin/postgres"), "postgresql")
    pg = Postgres()
    pg.start()
    yield pg
    pg.stop()


def _write_instance(home: Path, pg_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(f"""
storage:
  postgres:
    postgres_url: "{pg_url}"  # psycopg2 driver (SQLAlchemy 2.1 defaults to psycopg 3)
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
  pools:
    granularity: op
    default_limit: 1
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
run_retries:
  enabled: false  # a planted failure must stay failed until `backfill --failed` repairs it
telemetry:
  enabled: false
""")


# -- waiting on the daemon ------------------------------------------------------------------------------------------


def _busy_statuses():
    import dagster as dg

    # NOT_STARTED too: the daemon creates a backfill's run before it launches it
    return [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]


def _idle(instance) -> bool:
    import dagster as dg

    return not instance.get_runs(filters=dg.RunsFilter(statuses=_busy_statuses()))


def _wait(daemon, deadline: float, condition, what: str, poll_s: float = 3.0) -> None:
    while time.time() < deadline:
        assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def _latest(instance, asset: str, partition: str | None = None) -> float | None:
    import dagster as dg

    key = dg.AssetKey(asset)
    if partition is None:
        event = instance.get_latest_materialization_event(key)
        return event.timestamp if event else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0].timestamp if records else None


def _released(instance, shards: list[str], after: float = 0.0) -> bool:
    """Every shard's filtered_release materialized after `after`, and the summaries followed the latest of them."""
    if not _idle(instance):
        return False
    shard_times = [_latest(instance, "filtered_release", s) or 0.0 for s in shards]
    if min(shard_times) <= after:
        return False
    return all((_latest(instance, a) or 0.0) > max(shard_times) for a in SUMMARY_ASSETS)


def _rows(lake, asset: str, shard: str) -> list[dict]:
    return sorted(lake.read_table(asset, shard).to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _stop(processes, log, tmp_path: Path) -> None:
    for proc in processes:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: any run worker still alive
        except ProcessLookupError:
            pass
    log.close()
    text = (tmp_path / "daemon.log").read_text(errors="replace")
    errors = [line for line in text.splitlines() if "Error" in line or "error" in line][:60]
    print("daemon log, lines naming an error:\n" + "\n".join(errors) + "\n...\n" + text[-4000:])


def test_inbox_backfill_and_repair_through_the_daemon(tmp_path, monkeypatch, postgres, moto_server):
    import dagster as dg
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    started = time.time()
    moto_server.client().create_bucket(Bucket="lake")
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ULTRAEDIT_", "DAGSTER_"))},
        "ULTRAEDIT_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ULTRAEDIT_LAKE": "s3://lake/e2e",
        "ULTRAEDIT_WAREHOUSE": str(home / "warehouse.duckdb"),
        "ULTRAEDIT_INBOX": str(tmp_path / "inbox"),
        "ULTRAEDIT_INBOX_SHARD_SIZE": "1",
        "ULTRAEDIT_PROFILE": "tiny",
        "ULTRAEDIT_AUTOMATION_INTERVAL_S": "10",  # a small deployment: downstream follows within seconds
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_REGION": "us-east-1",
        # a loaded CI box can take over Dagster's default 60 s to answer a gRPC call (the daemon's StartRun seen at
        # load ~12 on 2 cores), and a timed-out dequeue interrupted the run it had started
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "300",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _write_instance(home / "dagster", postgres.url)
    bin_dir = Path(sys.executable).parent
    init = subprocess.run(
        [str(bin_dir / "ultraedit"), "init"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert init.returncode == 0, init.stderr
    assert "seed pool: materialized" in init.stdout
    # The code location runs as its own server, as in production (deploy/): a code server the daemon spawns shuts
    # down whenever the daemon misses a heartbeat for 20 s (every 2 minutes on a loaded 2-core machine), and each
    # restart reloads the definitions.
    port = free_port()
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {port}\n      location_name: ultraedit_dagster\n"
    )
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()[: len(SHARDS)]]
    for r in rows:
        r["image"] = str((DEMO / r["image"]).resolve())
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "inbox_demo.v2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    for mod in [m for m in sys.modules if m.startswith("ultraedit_dagster.definitions")]:
        del sys.modules[mod]  # the definitions read the environment at import
    from ultraedit_dagster.definitions import defs
    from ultraedit_dagster.lake.store import Lake, shard_relpath
    from ultraedit_dagster.ops import backfill as ops_backfill

    instance = dg.DagsterInstance.get()  # the Postgres instance `ultraedit init` set the pools on
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    lake = Lake(env["ULTRAEDIT_LAKE"], s3_client=moto_server.client())
    log = open(tmp_path / "daemon.log", "wb")
    code_server = subprocess.Popen(
        [str(bin_dir / "dagster"), "code-server", "start", "-m", "ultraedit_dagster.definitions"]
        + ["-h", "127.0.0.1", "-p", str(port), "--location-name", "ultraedit_dagster"],
        cwd=str(REPO),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its run workers share its group: stopped together
    )
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")],
        cwd=str(REPO),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its code server and run workers share the group: stopped together
    )
    try:
        # -- 1. the inbox manifest reaches the release by automation alone, no run fails
        in_flight: list[int] = []

        def inbox_done() -> bool:
            failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            assert not failed, [(r.run_id, r.job_name, r.tags) for r in failed]
            in_flight.append(len(instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))))
            return set(instance.get_dynamic_partitions("shards")) == set(SHARDS) and _released(instance, SHARDS)

        _wait(daemon, time.time() + TIMEOUT_S, inbox_done, "the inbox manifest to reach the release")
        assert code_server.poll() is None, "the code server exited"
        phase1_s = time.time() - started
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        inbox_runs = [r for r in runs if r.tags.get("dagster/sensor_name") == "manifest_inbox_sensor"]
        assert {r.tags.get("dagster/partition") for r in inbox_runs} == set(SHARDS)  # one run per new shard
        assert any(
            r.tags.get("dagster/from_automation_condition")
            or r.tags.get("dagster/sensor_name") == "ultraedit_automation_sensor"
            for r in runs
        )
        assert max(in_flight) >= 2, in_flight  # the shards ran side by side
        for asset in ("source_images", *GPU_STEP, "filtered_release"):
            assert lake.list_files(asset) == [f"shard={s}/data.parquet" for s in SHARDS], asset
        for shard in SHARDS:  # each shard's preview is a small file in the lake, not a blob in Postgres
            assert lake.read_bytes(f"previews/source_images/shard={shard}.png")[:4] == b"\x89PNG"
        before = {a: _rows(lake, a, BROKEN) for a in (*GPU_STEP, "filtered_release")}

        # -- 2. one backfill of the GPU step over all shards; one shard's upstream file is corrupt
        good = lake.read_bytes(shard_relpath("edit_instructions", BROKEN))
        lake.write_bytes(shard_relpath("edit_instructions", BROKEN), b"PAR1 not parquet")
        graph = defs.resolve_asset_graph()
        planted_at = time.time()
        planted = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=graph,
            partition_names=SHARDS,
            asset_selection=[dg.AssetKey(a) for a in (*GPU_STEP, "filtered_release")],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="GPU step over every shard",
            description=None,
            run_config=None,
        )
        instance.add_backfill(planted)

        def planted_runs():
            return instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": planted.backfill_id}))

        def backfill_settled() -> bool:
            status = instance.get_backfill(planted.backfill_id).status
            return bool(planted_runs()) and _idle(instance) and status in BULK_ACTION_TERMINAL_STATUSES

        _wait(daemon, time.time() + TIMEOUT_S, backfill_settled, "the backfill with a planted failure")
        gpu_runs = [r for r in planted_runs() if "dagster/asset_partition_range_start" in r.tags]
        ranges = {
            (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
            for r in gpu_runs
        }
        assert (SHARDS[0], BROKEN) in ranges, ranges  # several shards in one run
        assert [r.status for r in gpu_runs if r.tags["dagster/asset_partition_range_end"] == BROKEN] == [
            dg.DagsterRunStatus.FAILURE
        ]
        # the healthy shard of the failed range run was still materialized (failure isolation within a range)
        assert (_latest(instance, "metric_scores", SHARDS[0]) or 0) > planted_at
        assert (_latest(instance, "metric_scores", SHARDS[2]) or 0) > planted_at
        assert set(ops_backfill.failed_asset_partitions(instance, defs)) == {BROKEN}

        # -- 3. fix the file; `ultraedit backfill --failed` re-runs only that shard, and the release follows
        lake.write_bytes(shard_relpath("edit_instructions", BROKEN), good)
        healthy_before = {s: _latest(instance, "metric_scores", s) for s in SHARDS if s != BROKEN}
        known = {r.run_id for r in instance.get_runs()}
        fixed_at = time.time()
        fix = subprocess.run(
            [str(bin_dir / "ultraedit"), "backfill", "--failed"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert fix.returncode == 0, fix.stderr
        assert BROKEN in fix.stdout and not any(s in fix.stdout for s in SHARDS if s != BROKEN), fix.stdout

        def repaired() -> bool:
            return not ops_backfill.failed_asset_partitions(instance, defs) and _released(
                instance, [BROKEN], after=fixed_at
            )

        _wait(daemon, time.time() + TIMEOUT_S, repaired, "`ultraedit backfill --failed` and the release to follow")
        new_runs = [r for r in instance.get_runs() if r.run_id not in known]
        assert new_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in new_runs)
        assert {r.tags.get("dagster/partition") for r in new_runs if r.tags.get("dagster/partition")} <= {BROKEN}
        assert {s: _latest(instance, "metric_scores", s) for s in healthy_before} == healthy_before
        # re-materializing a shard reproduces it
        assert {a: _rows(lake, a, BROKEN) for a in before} == before
        print(f"phase 1 (inbox to release) {phase1_s:.0f} s; whole test {time.time() - started:.0f} s")
    finally:
        _stop([daemon, code_server], log, tmp_path)
