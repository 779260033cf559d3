"""One retry mechanism for every asset: transient errors are retried by TRANSIENT_RETRY_POLICY, deterministic ones
fail after a single attempt (issue 14, item 4 of the audit)."""

import os

import dagster as dg
import pytest

from ultraedit_dagster.core import retries
from ultraedit_dagster.core.partitions import materialize_each_shard

FAST = dg.RetryPolicy(max_retries=3, delay=0.01, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def _attempts(result, step_key):
    """How many times the step started (1 + retries)."""
    return sum(1 for e in result.all_events if e.step_key == step_key and e.event_type_value == "STEP_START") + sum(
        1 for e in result.all_events if e.step_key == step_key and e.event_type_value == "STEP_RESTARTED"
    )


def test_deterministic_error_fails_after_one_attempt():
    calls = []

    @dg.asset(retry_policy=FAST)
    @retries.retry_transient_only
    def guarded(context: dg.AssetExecutionContext) -> int:
        calls.append(1)
        raise ValueError("selected 54 candidates but 53 found")

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize([guarded], instance=inst, raise_on_error=False)
    assert not result.success and len(calls) == 1
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "guarded: ValueError: selected 54" in failure.step_failure_data.error.message


def test_transient_error_is_retried_until_it_succeeds():
    calls = []

    @dg.asset(retry_policy=FAST)
    @retries.retry_transient_only
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return 1

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize([flaky], instance=inst)
    assert result.success and len(calls) == 3
    assert sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY") == 2


def test_without_the_decorator_the_policy_retries_everything():
    """Why the decorator exists: Dagster's RetryPolicy alone retries a deterministic error."""
    calls = []

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0.01))
    def unguarded() -> int:
        calls.append(1)
        raise ValueError("bad data")

    with dg.DagsterInstance.ephemeral() as inst:
        assert not dg.materialize([unguarded], instance=inst, raise_on_error=False).success
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("cause", "retried"), [(ValueError("bad row"), False), (ConnectionResetError("reset"), True), (None, False)]
)
def test_a_failure_is_retried_only_for_a_transient_cause(cause, retried):
    """materialize_each_shard raises dg.Failure (allow_retries=True) `from` the first shard's error: the decorator
    keeps it retryable only when that error is transient; a guard's bare dg.Failure is never retried."""

    def body():
        failure = dg.Failure(description="1 of 2 shards failed", metadata={"failed_shards": ["a-00000"]})
        if cause is None:
            raise failure
        raise failure from cause

    with pytest.raises(dg.Failure) as info:
        retries.retry_transient_only(body)()
    assert info.value.allow_retries is retried
    assert info.value.description == "1 of 2 shards failed"
    assert info.value.metadata["failed_shards"].value == ["a-00000"]


def test_multi_shard_run_with_a_deterministic_shard_error_is_not_retried():
    calls = []
    parts = dg.StaticPartitionsDefinition(["s-00000", "s-00001"])

    @dg.asset(partitions_def=parts, retry_policy=FAST, backfill_policy=dg.BackfillPolicy.single_run())
    @retries.retry_transient_only
    def per_shard(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        def one(shard):
            calls.append(shard)
            if shard == "s-00001":
                raise KeyError("missing column")
            return {"rows": 1}

        return materialize_each_shard(context, one)

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [per_shard],
            instance=inst,
            partition_key=None,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": "s-00000", "dagster/asset_partition_range_end": "s-00001"},
        )
    assert not result.success
    assert calls == ["s-00000", "s-00001"]  # one attempt, both shards tried once


def test_generator_bodies_stay_generators():
    @retries.retry_transient_only
    def gen():
        yield 1
        raise TypeError("bad config")

    it = gen()
    assert next(it) == 1
    with pytest.raises(dg.Failure) as info:
        next(it)
    assert info.value.allow_retries is False and "gen: TypeError: bad config" in info.value.description


def test_every_stage_asset_with_a_retry_policy_classifies_its_errors():
    from ultraedit_dagster.editing import assets as editing
    from ultraedit_dagster.regions import assets as regions
    from ultraedit_dagster.release import assets as release
    from ultraedit_dagster.scoring import assets as scoring
    from ultraedit_dagster.sources import assets as sources
    from ultraedit_dagster.text import assets as text

    with_policy = [
        a for m in (sources, text, regions, editing, scoring, release) for a in m.assets if a.op.retry_policy
    ]
    names = {a.op.name for a in with_policy}
    wanted = {"source_images", "captions", "edit_instructions", "region_masks", "filtered_release", "release_card"}
    assert wanted <= names
    assert len(with_policy) >= 7  # the generate-and-score step too
    assert [a.op.name for a in with_policy if not retries.classifies_errors(a)] == []


# -- issue 15 item 7: each class of error gets the right treatment ------------------------------------------------


def _os_error(code: int, text: str) -> OSError:
    return OSError(code, text)


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def _lake_error_from(cause: BaseException):
    from ultraedit_dagster.lake.store import LakeError

    try:
        try:
            raise cause
        except BaseException as exc:
            raise LakeError(f"cannot read s3://b/k: {exc}") from exc
    except LakeError as wrapped:
        return wrapped


DETERMINISTIC = {
    "full disk": lambda: _os_error(28, "Error writing bytes to file. Detail: [errno 28] No space left on device"),
    "disk quota": lambda: _os_error(122, "Disk quota exceeded"),
    "read-only volume": lambda: _os_error(30, "Read-only file system"),
    "full disk whose text says try again": lambda: _os_error(28, "No space left on device, try again later"),
    "permission denied": lambda: PermissionError(13, "Permission denied"),
    "upstream shard missing (local)": lambda: __import__(
        "ultraedit_dagster.lake.store", fromlist=["LakeError"]
    ).LakeError("source_images has no data for shard 'a-00000' at /x: materialize it first"),
    "upstream shard missing (S3 NoSuchKey)": lambda: _lake_error_from(_client_error("NoSuchKey", 404)),
    "S3 access denied": lambda: _lake_error_from(_client_error("AccessDenied", 403)),
    "bad shard key": lambda: __import__(
        "ultraedit_dagster.core.partitions", fromlist=["InvalidShardKey"]
    ).InvalidShardKey("shard key 'A' must look like"),
    "bad data": lambda: ValueError("selected 54 candidates but 53 found"),
    "missing column": lambda: KeyError("caption_short"),
    "model weights missing": lambda: FileNotFoundError(2, "No such file", "/models/sdxl/unet.safetensors"),
}
TRANSIENT = {
    "connection reset": lambda: ConnectionResetError(104, "Connection reset by peer"),
    "timeout": lambda: TimeoutError("read timed out"),
    "S3 SlowDown": lambda: _lake_error_from(_client_error("SlowDown", 503)),
    "S3 500": lambda: _lake_error_from(_client_error("InternalError", 500)),
    "connection refused errno": lambda: _os_error(111, "Connection refused"),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_error_classes_are_never_retried(name):
    exc = DETERMINISTIC[name]()
    assert retries.classify(exc) == "fatal", name
    with pytest.raises(dg.Failure) as info:
        with retries.fail_fast_unless_transient("stage"):
            raise exc
    assert info.value.allow_retries is False
    assert info.value.description.startswith("stage: ") and "retrying will not help" in info.value.description


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_error_classes_are_retried(name):
    exc = TRANSIENT[name]()
    assert retries.classify(exc) == "retryable", name
    with pytest.raises(type(exc)):
        with retries.fail_fast_unless_transient("stage"):
            raise exc


def test_disk_errors_name_the_cause():
    message = retries.fatal_message(DETERMINISTIC["full disk"](), "captions")
    assert message.startswith("captions: OSError: [Errno 28]") and "No space left on device" in message
    assert "the disk is full or read-only (ENOSPC)" in message and "retrying will not help" in message


# A tmpfs of a few hundred KB is a real full disk (root can mount one, as in CI's container); elsewhere the Parquet
# writer is made to fail the way pyarrow does on ENOSPC, part-way through the temporary file.
def _mount_tiny_disk(path, size_kb: int) -> bool:
    import shutil
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """(lake root, fill): `fill()` takes every free byte of the lake's volume (or makes the next shard write hit
    ENOSPC where no tmpfs can be mounted)."""
    import subprocess

    root = tmp_path / "disk"
    mounted = _mount_tiny_disk(root, 512)

    def fill() -> None:
        if mounted:
            with open(root / "ballast", "wb", buffering=0) as fh:
                try:
                    while True:
                        fh.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == 28
            return
        import pyarrow.parquet as pq

        from ultraedit_dagster.lake import store

        class FullDiskWriter(pq.ParquetWriter):
            def write_table(self, table, *args, **kwargs):
                super().write_table(table, *args, **kwargs)  # some bytes reach the temporary file first
                raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")

        monkeypatch.setattr(store.pq, "ParquetWriter", FullDiskWriter)

    yield root, fill
    if mounted:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_full_disk_while_writing_a_shard_fails_once_clearly_and_leaves_nothing_half_written(full_disk):
    import pyarrow as pa

    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.resources import LakeResource
    from ultraedit_dagster.lake.store import Lake
    from ultraedit_dagster.text.assets import captions
    from ultraedit_dagster.text.resources import CaptionerResource

    root, fill = full_disk
    lake = Lake(str(root / "lake"))
    shard = "disk-00000"
    rows = [
        {"uid": f"u{i}", "image": b"png", "caption_gt": f"A red cup number {i}.", "status": "ok", "error": None}
        for i in range(40)
    ]
    lake.write_table("source_images", shard, pa.Table.from_pylist(rows))
    resources = {"lake": LakeResource(root=lake.root), "pipeline": PipelineResource(), "captioner": CaptionerResource()}
    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("shards", [shard])
        assert dg.materialize([captions], partition_key=shard, instance=inst, resources=resources).success
        before = (root / "lake" / "captions" / f"shard={shard}" / "data.parquet").read_bytes()
        fill()
        result = dg.materialize(
            [captions], partition_key=shard, instance=inst, resources=resources, raise_on_error=False
        )
    assert not result.success
    assert _attempts(result, "captions") == 1  # before issue 15 item 7: 1 + 4 retries with back-off
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "No space left on device" in message and "the disk is full" in message, message
    folder = root / "lake" / "captions" / f"shard={shard}"
    assert sorted(p.name for p in folder.iterdir()) == ["data.parquet"]  # no temporary left behind
    assert (folder / "data.parquet").read_bytes() == before  # the previous shard is intact


def test_upstream_shard_missing_fails_once_and_says_what_to_do(tmp_path):
    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.resources import LakeResource
    from ultraedit_dagster.text.assets import captions
    from ultraedit_dagster.text.resources import CaptionerResource

    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(),
        "captioner": CaptionerResource(),
    }
    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("shards", ["nosrc-00000"])
        result = dg.materialize(
            [captions], partition_key="nosrc-00000", instance=inst, resources=resources, raise_on_error=False
        )
    assert not result.success and _attempts(result, "captions") == 1
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "source_images has no data for shard 'nosrc-00000'" in failure.step_failure_data.error.message
    assert "materialize it first" in failure.step_failure_data.error.message


def test_s3_missing_upstream_is_fatal_and_an_unreachable_store_is_transient(moto_server):
    from ultraedit_dagster.lake.store import Lake

    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    lake = Lake("s3://lake/prefix", s3_client=client)
    with pytest.raises(Exception) as missing:
        lake.read_table("source_images", "gone-00000")
    assert retries.classify(missing.value) == "fatal" and "NoSuchKey" in str(missing.value)
    moto_server.stop()  # the store goes away: the same read is now worth retrying
    import boto3
    from botocore.config import Config

    down = boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    with pytest.raises(Exception) as unreachable:
        Lake("s3://lake/prefix", s3_client=down).read_table("source_images", "gone-00000")
    assert retries.classify(unreachable.value) == "retryable", repr(unreachable.value)
