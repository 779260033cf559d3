"""The real multi-run setup: PostgreSQL as instance storage, moto's S3 server as the lake, the Dagster daemon with the
queued run coordinator (3 runs at a time, local run processes), and asset backfills of 6 demo shards.

Case 1: every shard succeeds with >= 3 runs in flight, no DuckDB lock error, exactly one lake file per asset and shard,
and the lake equals the one a sequential in-process run produces.
Case 2: a corrupt shard manifest makes one shard fail; after fixing it, `ultraedit backfill --failed` re-runs only it.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, require_system_package

pytestmark = pytest.mark.slow

DEMO_MANIFEST = REPO / "ultraedit_dagster" / "demo_data" / "manifest.jsonl"
MANIFEST_NAMES = ["multi-a", "multi-b", "multi-c"]  # 16 demo images each, shard size 8: 6 shards
SHARD_SIZE = 8
MAX_CONCURRENT_RUNS = 3
TIMEOUT_S = 240  # per backfill
MULTIRUN_DEFS = Path(__file__).with_name("multirun_defs.py")  # the code location the daemon loads


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
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
    dequeue_interval_seconds: 1
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
run_retries:
  enabled: false
telemetry:
  enabled: false
""")


def _wait_backfill(instance, backfill_id, daemon, deadline, on_poll=None):
    from dagster._core.execution.backfill import BulkActionStatus

    done = {
        BulkActionStatus.COMPLETED,
        BulkActionStatus.COMPLETED_SUCCESS,
        BulkActionStatus.COMPLETED_FAILED,
        BulkActionStatus.FAILED,
        BulkActionStatus.CANCELED,
    }
    while time.time() < deadline:
        if daemon.poll() is not None:
            raise AssertionError(f"dagster-daemon exited with {daemon.returncode}")
        if on_poll:
            on_poll()
        backfill = instance.get_backfill(backfill_id)
        if backfill.status in done:
            # the backfill is marked done when its last run is launched-and-finished; give runs a moment to settle
            return backfill
        time.sleep(0.5)
    raise AssertionError(f"backfill {backfill_id} did not finish in time")


def _backfill_runs(instance, backfill_id):
    import dagster as dg

    return instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))


def _lake_tables(lake, assets, keys):
    out = {}
    for asset in assets:
        for key in keys:
            table = lake.read_table(asset, key)
            out[(asset, key)] = sorted(table.to_pylist(), key=lambda r: str(r.get("uid") or r))
    return out


def test_backfill_many_shards_in_parallel(tmp_path, monkeypatch, postgres, moto_server):
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus

    s3 = moto_server.client()
    s3.create_bucket(Bucket="lake")
    env = {
        "ULTRAEDIT_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "home" / "dagster"),
        "ULTRAEDIT_LAKE": "s3://lake/parallel",
        "ULTRAEDIT_WAREHOUSE": str(tmp_path / "home" / "warehouse.duckdb"),
        "ULTRAEDIT_INBOX": str(tmp_path / "inbox"),
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_REGION": "us-east-1",
        "ULTRAEDIT_PROFILE": "tiny",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _write_instance(Path(env["DAGSTER_HOME"]), postgres.url)
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - python_file:\n      relative_path: {MULTIRUN_DEFS}\n"
        f"      working_directory: {REPO}\n      location_name: ultraedit_multirun\n"
    )

    for mod in [m for m in sys.modules if m.startswith("ultraedit_dagster.definitions")]:
        del sys.modules[mod]  # definitions read the environment at import
    from ultraedit_dagster.ops import backfill as ops_backfill
    from ultraedit_dagster.ops.instance import ensure_instance

    sys.modules.pop("tests.ops.multirun_defs", None)  # re-import: it reads the environment set above
    from tests.ops.multirun_defs import defs  # the same file (MULTIRUN_DEFS) the daemon loads
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.lake.resources import LakeResource, S3Connection
    from ultraedit_dagster.sources.manifests import register_manifest, shard_manifest_relpath

    instance = ensure_instance()  # the Postgres instance, with the gpu / duckdb_writer pools set
    from ultraedit_dagster.lake.store import Lake

    lake = Lake(env["ULTRAEDIT_LAKE"], s3_client=moto_server.client())
    keys: list[str] = []
    for name in MANIFEST_NAMES:
        keys += register_manifest(lake, str(DEMO_MANIFEST), name=name, shard_size=SHARD_SIZE).shard_keys
    assert len(keys) == 6
    instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, keys)
    graph = defs.resolve_asset_graph()
    shard_assets = [k.path[-1] for k in ops_backfill.shard_asset_keys(graph)]

    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")],
        cwd=str(REPO),
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its code server and run workers share the group: stopped together
    )
    try:
        deadline = time.time() + TIMEOUT_S
        # -- case 1: backfill every shard (all are missing) through `launch_failed_backfill`
        backfill_id = ops_backfill.launch_failed_backfill(instance, defs)
        assert backfill_id is not None
        in_flight = []

        def sample():
            in_flight.append(
                len(
                    instance.get_run_ids(
                        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
                    )
                )
            )

        result = _wait_backfill(instance, backfill_id, daemon, deadline, on_poll=sample)
        runs = _backfill_runs(instance, backfill_id)
        assert result.status in (BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED), result.status
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
        assert max(in_flight) >= MAX_CONCURRENT_RUNS, in_flight
        assert max(in_flight) <= MAX_CONCURRENT_RUNS
        assert {r.tags.get("dagster/partition") for r in runs} >= set(keys) or any(
            "dagster/asset_partition_range_start" in r.tags for r in runs
        )
        for key in shard_assets:
            status = instance.get_status_by_partition(
                dg.AssetKey(key), keys, graph.get(dg.AssetKey(key)).partitions_def
            )
            assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}, (key, status)
        # no DuckDB (or any) lock error in any run
        for run in runs:
            for record in instance.all_logs(run.run_id):
                text = (record.user_message or "") + str(
                    record.dagster_event.event_specific_data if record.dagster_event else ""
                )
                assert "Could not set lock" not in text and "database is locked" not in text
        # exactly one file per asset and shard
        for asset in shard_assets:
            assert lake.list_files(asset) == [f"shard={k}/data.parquet" for k in sorted(keys)], asset

        # the same lake as a sequential, in-process run
        seq_lake_res = LakeResource(
            root="s3://lake/sequential", s3=S3Connection(endpoint_url=moto_server.endpoint, region_name="us-east-1")
        )
        seq_assets = [a for a in defs.assets if getattr(a, "partitions_def", None) is not None]
        with dg.instance_for_test() as seq_instance:
            seq_instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, keys)
            for name in MANIFEST_NAMES:
                register_manifest(seq_lake_res.lake, str(DEMO_MANIFEST), name=name, shard_size=SHARD_SIZE)
            for key in keys:
                assert dg.materialize(
                    seq_assets,
                    partition_key=key,
                    instance=seq_instance,
                    resources={**defs.resources, "lake": seq_lake_res},
                ).success
        parallel = _lake_tables(lake, shard_assets, keys)
        sequential = _lake_tables(seq_lake_res.lake, shard_assets, keys)
        assert parallel == sequential

        # -- case 2: a corrupt upstream file fails one shard; fix it; `backfill --failed` re-runs only that shard
        broken = keys[-1]
        good = lake.read_bytes(shard_manifest_relpath(broken))
        lake.write_bytes(shard_manifest_relpath(broken), b"PAR1 corrupt")
        from dagster._core.execution.backfill import PartitionBackfill
        from dagster._core.utils import make_new_backfill_id

        rebuild = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=graph,
            partition_names=[broken],
            asset_selection=ops_backfill.shard_asset_keys(graph),
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="re-run one shard",
            description=None,
            run_config=None,
        )
        instance.add_backfill(rebuild)
        _wait_backfill(instance, rebuild.backfill_id, daemon, time.time() + TIMEOUT_S)
        failed_runs = _backfill_runs(instance, rebuild.backfill_id)
        assert failed_runs and all(r.status == dg.DagsterRunStatus.FAILURE for r in failed_runs)
        first = dg.AssetKey(shard_assets[0])
        assert (
            instance.get_status_by_partition(first, [broken], graph.get(first).partitions_def)[broken]
            == dg.AssetPartitionStatus.FAILED
        )
        assert ops_backfill.failed_asset_partitions(instance, defs).keys() == {broken}

        lake.write_bytes(shard_manifest_relpath(broken), good)
        before = {r.run_id for r in instance.get_runs()}
        fix_id = ops_backfill.launch_failed_backfill(instance, defs)  # what `ultraedit backfill --failed` calls
        _wait_backfill(instance, fix_id, daemon, time.time() + TIMEOUT_S)
        new_runs = [r for r in instance.get_runs() if r.run_id not in before]
        assert new_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in new_runs)
        assert {r.tags.get("dagster/partition") for r in new_runs} == {broken}  # only that shard re-ran
        assert ops_backfill.failed_asset_partitions(instance, defs) == {}
        assert _lake_tables(lake, shard_assets, keys) == sequential
    finally:
        import signal

        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(daemon.pid, signal.SIGKILL)  # the group: code server and any run worker still alive
        except ProcessLookupError:
            pass
        log.close()
        print((tmp_path / "daemon.log").read_text()[-3000:])
