"""`materialize_each_shard_multi`: the fused step over a backfill's range of shards records every shard of both
assets, and a failing shard fails the step after the others are recorded."""

from __future__ import annotations

import dagster as dg
import pytest

from ultraedit_dagster.core.partitions import materialize_each_shard_multi


class FakeContext:
    def __init__(self, keys):
        self.partition_keys = keys
        self.metadata: list[tuple] = []
        self.events: list[dg.AssetMaterialization] = []
        self.log = self

    def info(self, *_):
        pass

    error = info

    def add_asset_metadata(self, metadata, asset_key, partition_key):
        self.metadata.append((asset_key.path[-1], partition_key, metadata["n"]))

    def log_event(self, event):
        self.events.append(event)


def build(shard):
    if shard == "s-00002":
        raise RuntimeError("boom")
    return {"edit_candidates": {"n": f"c-{shard}"}, "metric_scores": {"n": f"m-{shard}"}}


def test_one_shard_yields_one_result_per_asset():
    out = list(materialize_each_shard_multi(FakeContext(["s-00000"]), ["edit_candidates", "metric_scores"], build))
    assert [(r.asset_key.path[-1], r.metadata["n"]) for r in out] == [
        ("edit_candidates", "c-s-00000"),
        ("metric_scores", "m-s-00000"),
    ]


def test_a_range_records_each_shard_of_each_asset():
    ctx = FakeContext(["s-00000", "s-00001"])
    out = list(materialize_each_shard_multi(ctx, ["edit_candidates", "metric_scores"], build))
    assert {r.asset_key.path[-1] for r in out} == {"edit_candidates", "metric_scores"}
    assert sorted(ctx.metadata) == [
        ("edit_candidates", "s-00000", "c-s-00000"),
        ("edit_candidates", "s-00001", "c-s-00001"),
        ("metric_scores", "s-00000", "m-s-00000"),
        ("metric_scores", "s-00001", "m-s-00001"),
    ]


def test_a_failing_shard_fails_the_step_after_recording_the_others():
    ctx = FakeContext(["s-00000", "s-00002"])
    with pytest.raises(dg.Failure, match="1 of 2 shards failed: s-00002"):
        list(materialize_each_shard_multi(ctx, ["edit_candidates", "metric_scores"], build))
    assert sorted((e.asset_key.path[-1], e.partition) for e in ctx.events) == [
        ("edit_candidates", "s-00000"),
        ("metric_scores", "s-00000"),
    ]


def test_a_real_multi_asset_run_over_a_range_materializes_every_shard_of_both():
    from ultraedit_dagster.core.partitions import shards

    @dg.multi_asset(
        specs=[dg.AssetSpec("edit_candidates"), dg.AssetSpec("metric_scores", deps=["edit_candidates"])],
        partitions_def=shards,
        can_subset=False,
    )
    def fused(context):
        yield from materialize_each_shard_multi(context, ["edit_candidates", "metric_scores"], build)

    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("shards", ["s-00000", "s-00001"])
        job = dg.Definitions(assets=[fused], jobs=[dg.define_asset_job("j", partitions_def=shards)]).resolve_job_def(
            "j"
        )
        result = job.execute_in_process(
            instance=inst,
            tags={
                "dagster/asset_partition_range_start": "s-00000",
                "dagster/asset_partition_range_end": "s-00001",
            },
        )
        assert result.success
        mats = {
            (e.asset_key.path[-1], e.partition, e.materialization.metadata["n"].value)
            for e in result.get_asset_materialization_events()
        }
    assert mats == {
        ("edit_candidates", "s-00000", "c-s-00000"),
        ("edit_candidates", "s-00001", "c-s-00001"),
        ("metric_scores", "s-00000", "m-s-00000"),
        ("metric_scores", "s-00001", "m-s-00001"),
    }
