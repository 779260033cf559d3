"""Long steps log progress to the Dagster run log every few batches (issue 13): `core.partitions.ShardProgress` in
source_images, captions and the generate-and-score step, and a line per shard of a backfill's range."""

import dagster as dg

from tests.ops.test_operations import demo_rows, write_jsonl
from ultraedit_dagster.core import partitions
from ultraedit_dagster.core.partitions import ShardProgress
from ultraedit_dagster.ops.progress import _PROGRESS, RunProgress


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_a_line_every_few_batches_and_one_at_the_end():
    log, now = _Log(), [0.0]
    progress = ShardProgress(log, "demo-00000", 10, every=2, clock=lambda: now[0])
    for _ in range(5):  # batches of 2 rows, one second each
        now[0] += 1.0
        progress.advance(2)
    assert log.lines == [
        "progress demo-00000: rows 4/10, 2.00 rows/s, ~3 s left",
        "progress demo-00000: rows 8/10, 2.00 rows/s, ~1 s left",
        "progress demo-00000: rows 10/10, 2.00 rows/s, ~0 s left",
    ]
    triplets = ShardProgress(log, "demo-00000", 3, unit="triplets", every=4, clock=lambda: now[0])
    triplets.advance(3)  # the shard is done before the 4th batch: still one line
    m = _PROGRESS.match(log.lines[-1])
    assert m and (m["unit"], m["done"], m["total"]) == ("triplets", "3", "3")


def _source_run(tmp_path, monkeypatch, keys_wanted: int):
    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.resources import LakeResource
    from ultraedit_dagster.lake.store import Lake
    from ultraedit_dagster.sources import assets as source_assets
    from ultraedit_dagster.sources.manifests import register_manifest

    monkeypatch.setattr(source_assets, "WRITE_BATCH", 1)  # one row per batch, so a 6-row shard has 6 batches
    monkeypatch.setattr(partitions, "PROGRESS_EVERY_BATCHES", 2)
    lake = Lake(str(tmp_path / "lake"))
    reg = register_manifest(lake, str(write_jsonl(tmp_path / "p.jsonl", demo_rows(12))), name="prg", shard_size=6)
    resources = {"lake": LakeResource(root=lake.root), "pipeline": PipelineResource()}
    return source_assets.source_images, reg.shard_keys[:keys_wanted], resources


def _run_log(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.dagster_event is None]


def test_the_run_log_has_progress_lines(tmp_path, monkeypatch):
    asset, [shard], resources = _source_run(tmp_path, monkeypatch, 1)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("shards", [shard])
        result = dg.materialize([asset], partition_key=shard, instance=inst, resources=resources)
        lines = [m for m in _run_log(inst, result.run_id) if m.startswith("progress ")]
        assert [m.split(",")[0] for m in lines] == [f"progress {shard}: rows {n}/6" for n in (2, 4, 6)]

        # what `ultraedit materialize` prints from them (ops.progress.RunProgress follows the same run log)
        import io

        out = io.StringIO()
        watcher = RunProgress(inst, result.run_id, shard, stages=1, out=out)
        watcher.poll()
        assert f"source_images {shard}: rows 6/6" in out.getvalue()


def test_a_range_run_logs_each_shard_done(tmp_path, monkeypatch):
    asset, keys, resources = _source_run(tmp_path, monkeypatch, 2)
    job = dg.Definitions(
        assets=[asset],
        jobs=[dg.define_asset_job("rng", selection=[asset], partitions_def=partitions.shards)],
        resources=resources,
    ).resolve_job_def("rng")
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("shards", keys)
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]}
        result = job.execute_in_process(instance=inst, tags=tags)
        log = _run_log(inst, result.run_id)
    assert [m.split(" done")[0] for m in log if m.startswith("range progress")] == [
        "range progress: shards 1/2",
        "range progress: shards 2/2",
    ]
    assert sum(m.startswith(f"progress {keys[1]}: rows ") for m in log) == 3
