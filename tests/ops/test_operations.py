"""Operations: the inbox sensor (folder and S3), the rebuild selection, the failed-shard backfill, retries and the
production instance configs."""

import datetime as dt
import importlib
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from tests.conftest import REPO
from ultraedit_dagster.core import deploy_tags, retries, settings
from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME, shards
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource, S3Connection
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.ops import automation, backfill
from ultraedit_dagster.sources.assets import source_images
from ultraedit_dagster.sources.manifests import shard_manifest_relpath

DEMO = REPO / "ultraedit_dagster" / "demo_data"


def demo_rows(n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        r["image"] = str((DEMO / r["image"]).resolve())
    return rows[:n] if n else rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- a tiny generic per-shard graph: the real source_images plus a downstream probe --------------------------------


@dg.asset(partitions_def=shards, deps=[source_images], group_name="ops_test")
def probe_stats(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Counts the shard's ok images; fails when the lake holds `probe_fail/<shard>` (an injected model error)."""
    shard = context.partition_key
    if lake.lake.has_bytes(f"probe_fail/{shard}"):
        raise RuntimeError(f"injected failure for {shard}")
    table = lake.lake.read_table("source_images", shard, columns=["uid", "status"])
    ok = sum(1 for s in table.column("status").to_pylist() if s == "ok")
    lake.lake.write_table("probe_stats", shard, pa.table({"shard": [shard], "ok": [ok]}))
    return dg.MaterializeResult(metadata={"ok": ok})


def make_defs(lake_root: str) -> dg.Definitions:
    job = dg.define_asset_job("shard_pipeline", selection=[source_images, probe_stats], partitions_def=shards)
    return dg.Definitions(
        assets=[source_images, probe_stats],
        jobs=[job],
        resources={"lake": LakeResource(root=lake_root), "pipeline": PipelineResource(profile_name="tiny")},
    )


# -- the inbox sensor ----------------------------------------------------------------------------------------------


def _tick(sensor, instance, lake_root, cursor=None, s3_endpoint=None):
    lake_res = LakeResource(
        root=lake_root, s3=S3Connection(endpoint_url=s3_endpoint, region_name="us-east-1") if s3_endpoint else None
    )
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake_res}) as context:
        result = sensor(context)
    return result, context


def _apply(instance, result):
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def test_inbox_sensor_local_folder(tmp_path, monkeypatch, instance, capfd):
    inbox = tmp_path / "inbox"
    monkeypatch.setenv("ULTRAEDIT_INBOX", str(inbox))
    monkeypatch.setenv("ULTRAEDIT_INBOX_SHARD_SIZE", "8")
    lake_root = str(tmp_path / "lake")
    sensor = automation.build_inbox_sensor(make_defs(lake_root).resolve_job_def("shard_pipeline"))
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    result, _ = _tick(sensor, instance, lake_root)  # the inbox does not exist yet: nothing to do, no crash
    assert isinstance(result, dg.SkipReason)

    write_jsonl(inbox / "batch-a.jsonl", demo_rows())
    write_jsonl(inbox / "broken.jsonl", [{"image": "x.png"}])  # no caption column
    (inbox / "notes.txt").write_text("not a manifest")
    capfd.readouterr()
    result, _ = _tick(sensor, instance, lake_root)
    log = capfd.readouterr().err
    assert isinstance(result, dg.SensorResult)
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == SHARDS_PARTITIONS_NAME
    assert list(add.partition_keys) == ["batch-a-00000", "batch-a-00001"]
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [
        ("batch-a-00000", "batch-a-00000"),
        ("batch-a-00001", "batch-a-00001"),
    ]
    assert "ERROR - inbox manifest 'broken.jsonl' skipped" in log and "missing required column(s) caption" in log
    assert Lake(lake_root).has_bytes(shard_manifest_relpath("batch-a-00001"))
    _apply(instance, result)

    # second tick: nothing new, cursor kept
    again, _ = _tick(sensor, instance, lake_root, cursor=result.cursor)
    assert isinstance(again, dg.SkipReason)

    # a later manifest is picked up alone; re-registering an old one (cursor reset) adds nothing and requests nothing
    write_jsonl(inbox / "zz-batch-b.jsonl", demo_rows(5))
    third, _ = _tick(sensor, instance, lake_root, cursor=result.cursor)
    assert list(third.dynamic_partitions_requests[0].partition_keys) == ["zz-batch-b-00000"]
    assert [r.run_key for r in third.run_requests] == ["zz-batch-b-00000"]
    _apply(instance, third)
    replay, _ = _tick(sensor, instance, lake_root, cursor=None)
    assert isinstance(replay, dg.SensorResult)
    assert replay.run_requests == [] and replay.dynamic_partitions_requests == []


def test_inbox_sensor_s3_prefix(tmp_path, monkeypatch, instance, moto_server, capfd):
    s3 = moto_server.client()
    s3.create_bucket(Bucket="inbox")
    monkeypatch.setenv("ULTRAEDIT_INBOX", "s3://inbox/new")
    monkeypatch.setenv("ULTRAEDIT_INBOX_SHARD_SIZE", "4")
    lake_root = str(tmp_path / "lake")
    rows = [{"id": f"img{i}", "image": f"s3://images/{i}.png", "caption": f"picture {i}"} for i in range(6)]
    s3.put_object(Bucket="inbox", Key="new/2025-01-01-alpha.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))
    s3.put_object(
        Bucket="inbox",
        Key="new/2025-01-02-relative.jsonl",
        Body=json.dumps({"image": "images/a.png", "caption": "relative"}) + "\n",
    )
    s3.put_object(Bucket="inbox", Key="new/processed/2025-01-00-old.jsonl", Body=b"ignored sub-folder")
    sensor = automation.build_inbox_sensor(make_defs(lake_root).resolve_job_def("shard_pipeline"))

    capfd.readouterr()
    result, _ = _tick(sensor, instance, lake_root, s3_endpoint=moto_server.endpoint)
    log = capfd.readouterr().err
    assert list(result.dynamic_partitions_requests[0].partition_keys) == [
        "2025-01-01-alpha-00000",
        "2025-01-01-alpha-00001",
    ]
    assert [r.run_key for r in result.run_requests] == ["2025-01-01-alpha-00000", "2025-01-01-alpha-00001"]
    assert "ERROR - inbox manifest '2025-01-02-relative.jsonl' skipped" in log and "relative image paths" in log
    assert json.loads(result.cursor) == {"after": "new/2025-01-02-relative.jsonl"}
    _apply(instance, result)

    # StartAfter=cursor: the next listing returns only objects after the cursor
    calls = []

    class Spy:
        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def get_paginator(self, op):
            pag = self.client.get_paginator(op)

            class P:
                def paginate(self_inner, **kw):
                    calls.append(kw)
                    return pag.paginate(**kw)

            return P()

    real_client = LakeResource.s3_client
    monkeypatch.setattr(LakeResource, "s3_client", lambda self: Spy(real_client(self)))
    empty, _ = _tick(sensor, instance, lake_root, cursor=result.cursor, s3_endpoint=moto_server.endpoint)
    assert isinstance(empty, dg.SkipReason)
    assert calls[-1]["StartAfter"] == "new/2025-01-02-relative.jsonl"
    s3.put_object(Bucket="inbox", Key="new/2025-01-03-beta.csv", Body="image,caption\ns3://images/b.png,a bee\n")
    later, _ = _tick(sensor, instance, lake_root, cursor=result.cursor, s3_endpoint=moto_server.endpoint)
    assert [r.run_key for r in later.run_requests] == ["2025-01-03-beta-00000"]


# -- rebuild selection, schedule and the failed backfill ------------------------------------------------------------


@pytest.fixture
def four_shards(tmp_path, monkeypatch):
    """Shards: 00000 healthy, 00001 probe failed, 00002 source_images failed (corrupt shard manifest),
    00003 never run."""
    from ultraedit_dagster.sources.manifests import register_manifest

    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path / "home"))
    lake_root = str(tmp_path / "lake")
    lake = Lake(lake_root)
    manifest = write_jsonl(tmp_path / "m.jsonl", demo_rows(8))
    reg = register_manifest(lake, str(manifest), name="ops", shard_size=2)
    keys = reg.shard_keys
    assert keys == ["ops-00000", "ops-00001", "ops-00002", "ops-00003"]
    defs = make_defs(lake_root)
    cm = dg.instance_for_test()  # a real (SQLite, temp dir) instance: schedules need an instance ref
    inst = cm.__enter__()
    inst.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, keys)
    lake.write_bytes("probe_fail/ops-00001", b"1")
    good = lake.read_bytes(shard_manifest_relpath("ops-00002"))
    lake.write_bytes(shard_manifest_relpath("ops-00002"), b"PAR1 this is not parquet")
    job = defs.resolve_job_def("shard_pipeline")
    outcome = {
        k: job.execute_in_process(partition_key=k, instance=inst, raise_on_error=False).success for k in keys[:3]
    }
    assert outcome == {"ops-00000": True, "ops-00001": False, "ops-00002": False}
    yield inst, defs, lake, keys, good
    cm.__exit__(None, None, None)


SI, PROBE = dg.AssetKey("source_images"), dg.AssetKey("probe_stats")


def test_rebuild_selection_and_schedule(four_shards):
    inst, defs, lake, keys, _ = four_shards
    graph = defs.resolve_asset_graph()
    assert backfill.shard_asset_keys(graph) == [SI, PROBE]
    todo = automation.assets_needing_rebuild(inst, [SI, PROBE], shards)
    assert todo == {"ops-00001": [PROBE], "ops-00002": [SI, PROBE], "ops-00003": [SI, PROBE]}
    assert automation.shards_needing_rebuild(inst, ["source_images", "probe_stats"], shards) == [
        "ops-00001",
        "ops-00002",
        "ops-00003",
    ]

    schedule = automation.build_rebuild_schedule(defs.resolve_job_def("shard_pipeline"), [SI, PROBE])
    assert schedule.cron_schedule == "0 2 * * *" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(
        instance=inst,
        scheduled_execution_time=dt.datetime(2025, 1, 2, 2, 0),
        resources={"lake": LakeResource(root=lake.root)},
    ) as ctx:
        run_requests = schedule(ctx)
    requested = {r.partition_key: list(r.asset_selection) for r in run_requests}
    assert requested == todo  # never the healthy shard, never a healthy asset of a broken shard
    assert all(r.run_key.endswith("20250102T0200") for r in run_requests)

    # --asset: shards where probe_stats is broken, with the upstream it needs
    assert backfill.failed_asset_partitions(inst, defs, "probe_stats") == todo
    assert backfill.failed_asset_partitions(inst, defs, "source_images") == {
        "ops-00002": [SI, PROBE],
        "ops-00003": [SI, PROBE],
    }
    with pytest.raises(ValueError, match="not a per-shard asset"):
        backfill.failed_asset_partitions(inst, defs, "nope")


def test_rebuild_and_backfill_redo_shards_with_rows_marked_retryable(four_shards):
    """The healthy shard ops-00000 materialized, but one of its images failed during an S3 outage (a row marked
    retryable): the nightly rebuild and `backfill --failed` redo it from source_images on; without a lake to look
    in (the previous behaviour) it was never retried."""
    from ultraedit_dagster.sources.rows import RETRYABLE_MARK

    inst, defs, lake, keys, _ = four_shards
    rows = lake.read_table("source_images", "ops-00000").to_pylist()
    rows[1].update(status="failed", image=None, error=f"{RETRYABLE_MARK}cannot fetch s3://b/k after 4 attempts")
    lake.write_table(
        "source_images",
        "ops-00000",
        pa.Table.from_pylist(rows, schema=lake.read_table("source_images", "ops-00000").schema),
    )
    failed_only = automation.assets_needing_rebuild(inst, [SI, PROBE], shards)
    assert "ops-00000" not in failed_only  # what the instance alone knows: the partition materialized
    plan = automation.rebuild_plan(inst, [SI, PROBE], shards, lake=lake)
    assert plan.todo == {"ops-00000": [SI, PROBE], **failed_only} and plan.retryable == ["ops-00000"]

    schedule = automation.build_rebuild_schedule(defs.resolve_job_def("shard_pipeline"), [SI, PROBE])
    with dg.build_schedule_context(
        instance=inst,
        scheduled_execution_time=dt.datetime(2025, 1, 3, 2, 0),
        resources={"lake": LakeResource(root=lake.root)},
    ) as ctx:
        requested = {r.partition_key: list(r.asset_selection) for r in schedule(ctx)}
    assert requested["ops-00000"] == [SI, PROBE]
    assert backfill.failed_asset_partitions(inst, defs, lake=lake)["ops-00000"] == [SI, PROBE]
    assert backfill.failed_asset_partitions(inst, defs, "probe_stats", lake=lake)["ops-00000"] == [SI, PROBE]
    assert "ops-00000" not in backfill.failed_asset_partitions(inst, defs, "probe_stats")

    # once the store is back the rebuild repairs the rows, and the shard is healthy again
    job = defs.resolve_job_def("shard_pipeline")
    assert job.execute_in_process(partition_key="ops-00000", instance=inst, asset_selection=[SI, PROBE]).success
    assert "ops-00000" not in automation.rebuild_plan(inst, [SI, PROBE], shards, lake=lake).todo


def test_launch_failed_backfill_targets_only_broken_pairs(four_shards):
    from dagster._core.definitions.events import AssetKeyPartitionKey

    inst, defs, lake, keys, good = four_shards
    backfill_id = backfill.launch_failed_backfill(inst, defs)
    stored = inst.get_backfill(backfill_id)
    assert stored is not None and stored.is_asset_backfill
    target = set(stored.asset_backfill_data.target_subset.iterate_asset_partitions())
    assert target == {
        AssetKeyPartitionKey(PROBE, "ops-00001"),
        AssetKeyPartitionKey(SI, "ops-00002"),
        AssetKeyPartitionKey(PROBE, "ops-00002"),
        AssetKeyPartitionKey(SI, "ops-00003"),
        AssetKeyPartitionKey(PROBE, "ops-00003"),
    }
    assert stored.tags[backfill.BACKFILL_TAG] == "all"

    # repair, rebuild what was selected, and nothing is left to backfill
    lake.write_bytes(shard_manifest_relpath("ops-00002"), good)
    lake.write_bytes("probe_fail/ops-00001", b"0")
    (Path(lake.root) / "probe_fail" / "ops-00001").unlink()
    job = defs.resolve_job_def("shard_pipeline")
    for shard, asset_keys in automation.assets_needing_rebuild(inst, [SI, PROBE], shards).items():
        assert job.execute_in_process(partition_key=shard, instance=inst, asset_selection=asset_keys).success
    assert automation.shards_needing_rebuild(inst, [SI, PROBE]) == []
    assert backfill.launch_failed_backfill(inst, defs) is None
    assert lake.list_shards("probe_stats") == keys


# -- retries --------------------------------------------------------------------------------------------------------


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


def test_retry_classification():
    from botocore.exceptions import EndpointConnectionError

    from ultraedit_dagster.lake.store import LakeError

    class RateLimitError(Exception):
        status_code = 429

    assert retries.TRANSIENT_RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL
    assert retries.TRANSIENT_RETRY_POLICY.jitter is not None and retries.TRANSIENT_RETRY_POLICY.max_retries >= 3
    retryable = [
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        EndpointConnectionError(endpoint_url="x"),
        ConnectionResetError(),
        TimeoutError(),
        RateLimitError("rate limited"),
    ]
    fatal = [
        _client_error("NoSuchKey", 404),
        _client_error("AccessDenied", 403),
        ValueError("bad config"),
        FileNotFoundError("model weights missing"),
        KeyError("x"),
    ]
    assert [retries.classify(e) for e in retryable] == ["retryable"] * len(retryable)
    assert [retries.classify(e) for e in fatal] == ["fatal"] * len(fatal)
    try:  # a lake error caused by throttling is retryable; one caused by a missing object is not
        try:
            raise _client_error("SlowDown", 503)
        except Exception as exc:
            raise LakeError("S3 upload failed") from exc
    except LakeError as wrapped:
        assert retries.is_retryable(wrapped)
    try:
        try:
            raise _client_error("NoSuchKey", 404)
        except Exception as exc:
            raise LakeError("cannot read") from exc
    except LakeError as wrapped:
        assert not retries.is_retryable(wrapped)

    sleeps = []
    attempts = iter([ConnectionResetError(), _client_error("SlowDown", 503), "done"])

    def flaky():
        a = next(attempts)
        if isinstance(a, Exception):
            raise a
        return a

    assert retries.call_with_retries(flaky, sleep=sleeps.append, base_delay=1.0) == "done"
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0
    with pytest.raises(ValueError):
        retries.call_with_retries(lambda: (_ for _ in ()).throw(ValueError("no")), sleep=sleeps.append)
    assert len(sleeps) == 2  # a fatal error is not retried


def test_retry_policy_in_a_run(instance):
    counts = {"net": 0, "model": 0}
    policy = dg.RetryPolicy(max_retries=3, delay=0.01, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

    @dg.asset(retry_policy=policy)
    def flaky_network():
        counts["net"] += 1
        with retries.fail_fast_unless_transient("flaky_network"):
            if counts["net"] < 3:
                raise ConnectionResetError("connection reset by peer")
        return 1

    @dg.asset(retry_policy=policy)
    def broken_model():
        counts["model"] += 1
        with retries.fail_fast_unless_transient("broken_model"):
            raise FileNotFoundError("tiny-clip/weights.safetensors")

    assert dg.materialize([flaky_network], instance=instance).success
    assert counts["net"] == 3
    result = dg.materialize([broken_model], instance=instance, raise_on_error=False)
    assert not result.success and counts["model"] == 1  # failed fast: no retries
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "broken_model: FileNotFoundError" in message and "retrying will not help" in message


# -- production instance configs ------------------------------------------------------------------------------------

DEPLOY_ENV = {
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_DB": "dagster",
    "ULTRAEDIT_IMAGE": "registry/ultraedit:1",
    "ULTRAEDIT_K8S_NAMESPACE": "ultraedit",
    "ULTRAEDIT_COMPUTE_LOG_BUCKET": "logs",
    "AWS_REGION": "eu-west-1",
    "ULTRAEDIT_RUN_TASK_DEFINITION": "ultraedit-run:3",
}


@pytest.mark.parametrize(
    "filename,launcher", [("dagster.yaml", "K8sRunLauncher"), ("dagster-ecs.yaml", "EcsRunLauncher")]
)
def test_deploy_instance_config_validates(monkeypatch, filename, launcher):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.instance.ref import InstanceRef

    for k, v in DEPLOY_ENV.items():
        monkeypatch.setenv(k, v)
    deploy = str(REPO / "deploy")
    config, _ = dagster_instance_config(deploy, filename)  # raises DagsterInvalidConfigError on any schema error
    for section in ("run_launcher", "run_coordinator", "compute_logs"):
        d = config[section]
        cls = getattr(importlib.import_module(d["module"]), d["class"])
        processed = process_config(cls.config_type(), d.get("config") or {})
        assert processed.success, (section, processed.errors)
    assert config["run_launcher"]["class"] == launcher
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_retries"]["enabled"] is True
    # issue 15 item 1: the daemon marks dead run workers failed and frees the pool slots of runs that ended
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True and 0 < monitoring["free_slots_after_run_end_seconds"] <= 300
    ref = InstanceRef.from_dir(deploy, config_filename=filename)
    assert (
        ref.run_storage_data.class_name,
        ref.event_storage_data.class_name,
        ref.schedule_storage_data.class_name,
    ) == ("PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage")
    import yaml

    raw = yaml.safe_load((REPO / "deploy" / filename).read_text())
    assert raw["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # never literal
    # the password is read from the environment at load time
    from dagster_postgres.storage import DagsterPostgresStorage as PostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    storage = process_config(PostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert pg_url_from_config(storage.value) == "postgresql+psycopg2://dagster:secret@db.internal:5432/dagster"


def test_deploy_files_and_gpu_tags():
    import yaml
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

    k8s = get_user_defined_k8s_config(deploy_tags.GPU_OP_TAGS)
    assert isinstance(k8s, UserDefinedDagsterK8sConfig)
    assert k8s.container_config["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert k8s.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    ecs = json.loads(deploy_tags.GPU_OP_TAGS["ecs/task_overrides"])
    assert ecs["containerOverrides"][0]["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert all(isinstance(v, str) for v in deploy_tags.GPU_OP_TAGS.values())

    values = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["dagsterDaemon"]["runRetries"]["enabled"] is True
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True and monitoring["freeSlotsAfterRunEndSeconds"] > 0
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "--require-hashes" in dockerfile
    assert "HF_HOME=/models" in dockerfile and "from_pretrained" not in dockerfile
    assert "Running on a cluster" in (REPO / "deploy" / "README.md").read_text()


def test_automation_sensor_covers_all_assets():
    assert automation.automation_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert isinstance(automation.automation_sensor, dg.AutomationConditionSensorDefinition)
    assert automation.automation_sensor.minimum_interval_seconds == settings.automation_interval_s()


def test_automation_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("ULTRAEDIT_AUTOMATION_INTERVAL_S", raising=False)
    assert settings.automation_interval_s() == 30
    monkeypatch.setenv("ULTRAEDIT_AUTOMATION_INTERVAL_S", "10")
    assert settings.automation_interval_s() == 10
    for bad in ("0", "-5", "ten", "2.5"):
        monkeypatch.setenv("ULTRAEDIT_AUTOMATION_INTERVAL_S", bad)
        with pytest.raises(ValueError, match="ULTRAEDIT_AUTOMATION_INTERVAL_S"):
            settings.automation_interval_s()


def test_inbox_manifest_names_keep_their_version_suffix(tmp_path, monkeypatch, instance):
    """`my_data.v2.parquet` is the manifest `my-data-v2` (not `my-data`), so a later v3 is a new manifest."""
    assert automation.inbox_manifest_name("my_data.v2.parquet") == "my-data-v2"
    assert automation.inbox_manifest_name("2025-06-01T12-00-coco.JSONL") == "2025-06-01t12-00-coco"
    assert automation.inbox_manifest_name("prefix/a b.v3.csv") == "a-b-v3"
    inbox = tmp_path / "inbox"
    monkeypatch.setenv("ULTRAEDIT_INBOX", str(inbox))
    lake_root = str(tmp_path / "lake")
    sensor = automation.build_inbox_sensor(make_defs(lake_root).resolve_job_def("shard_pipeline"))
    write_jsonl(inbox / "my_data.v2.jsonl", demo_rows(3))
    first, _ = _tick(sensor, instance, lake_root)
    assert [r.partition_key for r in first.run_requests] == ["my-data-v2-00000"]
    _apply(instance, first)
    write_jsonl(inbox / "my_data.v3.jsonl", demo_rows(4))
    second, _ = _tick(sensor, instance, lake_root, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["my-data-v3-00000"]
