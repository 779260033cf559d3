"""What a user of `make ui` does (issue 13 "Done when"): with the daemon running over the project's real definitions
(sensors, automation, the local SQLite instance that `ultraedit init` makes), drop a manifest into the inbox and wait:
every shard reaches `filtered_release`, the warehouse views, the dbt models and `release_card` follow, by automation
alone, and no run fails. Then a planted failure in a GPU stage of one shard (its source_images file corrupted, a
backfill of `captions` and downstream through the daemon fails there) is repaired by `ultraedit backfill --failed`,
which re-runs only that shard, and the release follows again. Tiny profile, two shards of one image each."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

DEMO = REPO / "ultraedit_dagster" / "demo_data"
TIMEOUT_S = 1200
SHARDS = ["inbox-demo-v2-00000", "inbox-demo-v2-00001"]
SUMMARY_ASSETS = ["warehouse_views", "shard_quality", "release_card"]


def _wait(daemon, deadline, condition, what: str):
    while time.time() < deadline:
        assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
        if condition():
            return
        time.sleep(5)
    raise AssertionError(f"timed out waiting for {what}")


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


def _latest(instance, asset: str, partition: str | None = None):
    import dagster as dg

    key = dg.AssetKey(asset)
    if partition is None:
        event = instance.get_latest_materialization_event(key)
        return event.timestamp if event else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0].timestamp if records else None


def test_inbox_manifest_reaches_the_release_by_automation_alone(tmp_path, monkeypatch):
    import dagster as dg

    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ULTRAEDIT_", "DAGSTER_"))},
        "ULTRAEDIT_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ULTRAEDIT_INBOX": str(tmp_path / "inbox"),
        "ULTRAEDIT_INBOX_SHARD_SIZE": "1",
        "ULTRAEDIT_PROFILE": "tiny",
    }
    for k, v in env.items():
        if k.startswith(("ULTRAEDIT_", "DAGSTER_")):
            monkeypatch.setenv(k, v)
    bin_dir = Path(sys.executable).parent
    init = subprocess.run(
        [str(bin_dir / "ultraedit"), "init"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert init.returncode == 0, init.stderr
    assert "seed pool: materialized" in init.stdout
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: ultraedit_dagster.definitions\n"
        f"      working_directory: {REPO}\n      location_name: ultraedit_dagster\n"
    )
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()[:2]]
    for r in rows:
        r["image"] = str((DEMO / r["image"]).resolve())
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "inbox_demo.v2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")],
        cwd=str(REPO),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    instance = dg.DagsterInstance.get()
    try:
        deadline = time.time() + TIMEOUT_S
        done = False
        while time.time() < deadline and not done:
            assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
            time.sleep(5)
            failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            assert not failed, [(r.run_id, r.job_name, r.tags) for r in failed]
            shard_done = [_latest(instance, "filtered_release", s) for s in SHARDS]
            if None in shard_done:
                continue
            summaries = [_latest(instance, a) for a in SUMMARY_ASSETS]
            busy = instance.get_runs(filters=dg.RunsFilter(statuses=_busy_statuses()))
            done = not busy and all(t is not None and t > max(shard_done) for t in summaries)
        assert done, "the inbox manifest did not reach the release in time"
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # the shards came from the inbox sensor under the versioned manifest name, nothing was launched by hand
        assert set(instance.get_dynamic_partitions("shards")) == set(SHARDS)
        assert any(r.tags.get("dagster/sensor_name") == "manifest_inbox_sensor" for r in runs)
        assert any(
            r.tags.get("dagster/from_automation_condition")
            or r.tags.get("dagster/sensor_name") == "ultraedit_automation_sensor"
            for r in runs
        )

        # -- a GPU stage fails for one shard; `ultraedit backfill --failed` repairs only that shard
        from dagster._core.execution.backfill import PartitionBackfill
        from dagster._core.utils import make_new_backfill_id

        from ultraedit_dagster.definitions import defs
        from ultraedit_dagster.lake.store import Lake, shard_relpath
        from ultraedit_dagster.ops import backfill as ops_backfill

        broken, healthy = SHARDS[1], SHARDS[0]
        lake = Lake(str(home / "lake"))
        good = lake.read_bytes(shard_relpath("source_images", broken))
        lake.write_bytes(shard_relpath("source_images", broken), b"PAR1 not parquet")
        graph = defs.resolve_asset_graph()
        downstream = [k for k in ops_backfill.shard_asset_keys(graph) if k.to_user_string() != "source_images"]
        planted = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=graph,
            partition_names=[broken],
            asset_selection=downstream,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="planted failure",
            description=None,
            run_config=None,
        )
        instance.add_backfill(planted)

        def planted_runs():
            return instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": planted.backfill_id}))

        _wait(daemon, time.time() + TIMEOUT_S, lambda: planted_runs() and _idle(instance), "the planted failure")
        assert [r.status for r in planted_runs()] == [dg.DagsterRunStatus.FAILURE]
        assert set(ops_backfill.failed_asset_partitions(instance, defs)) == {broken}

        lake.write_bytes(shard_relpath("source_images", broken), good)
        before = {r.run_id for r in instance.get_runs()}
        fixed_at = time.time()
        healthy_before = _latest(instance, "filtered_release", healthy)
        fix = subprocess.run(
            [str(bin_dir / "ultraedit"), "backfill", "--failed"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert fix.returncode == 0 and f"{broken}: captions" in fix.stdout and healthy not in fix.stdout, fix.stdout

        def repaired():
            if not _idle(instance) or ops_backfill.failed_asset_partitions(instance, defs):
                return False
            shard_time = _latest(instance, "filtered_release", broken) or 0
            return shard_time > fixed_at and (_latest(instance, "release_card") or 0) > shard_time

        _wait(daemon, time.time() + TIMEOUT_S, repaired, "`ultraedit backfill --failed` and the release to follow")
        new_runs = [r for r in instance.get_runs() if r.run_id not in before]
        assert new_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in new_runs)
        assert _latest(instance, "filtered_release", healthy) == healthy_before  # the healthy shard never re-ran
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        print((tmp_path / "daemon.log").read_text(errors="replace")[-4000:])
