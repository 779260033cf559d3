"""A multi-run backfill hands a step a range of shards: every per-shard asset and check handles each shard of the
range (one output per shard, per-shard metadata), and one shard's failure does not lose the others' results."""

import json
from pathlib import Path

import dagster as dg
import pytest

from tests.ops.test_operations import demo_rows, write_jsonl
from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import SHARD_ASSETS, Lake
from ultraedit_dagster.sources.manifests import register_manifest

pytestmark = pytest.mark.slow

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@pytest.fixture
def three_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path / "home"))
    lake = Lake(str(tmp_path / "lake"))
    reg = register_manifest(lake, str(write_jsonl(tmp_path / "r.jsonl", demo_rows(6))), name="rng", shard_size=2)
    assert reg.shard_keys == ["rng-00000", "rng-00001", "rng-00002"]
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, reg.shard_keys)
        yield inst, lake, reg.shard_keys


def _materializations(inst, asset: str, run_id: str) -> dict[str, dict]:
    records = inst.fetch_materializations(dg.AssetKey(asset), limit=100).records
    return {r.partition_key: r.asset_materialization.metadata for r in records if r.run_id == run_id}


def test_a_range_run_materializes_every_shard_with_its_own_metadata(three_shards):
    from ultraedit_dagster import definitions

    inst, lake, keys = three_shards
    resources = {**definitions.resources, "lake": LakeResource(root=lake.root)}
    job = dg.Definitions(
        assets=definitions.shard_assets,
        asset_checks=[c for stage in definitions.STAGE_CHECKS for c in stage.asset_checks],
        jobs=[dg.define_asset_job("range_job", selection=definitions.shard_assets, partitions_def=definitions.shards)],
        resources=resources,
    ).resolve_job_def("range_job")
    tags = {RANGE_START: keys[0], RANGE_END: keys[-1]}
    result = job.execute_in_process(instance=inst, tags=tags, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    for asset in SHARD_ASSETS:
        by_shard = _materializations(inst, asset, result.run_id)
        assert sorted(by_shard) == keys, asset
        for shard in keys:
            assert lake.exists(asset, shard), (asset, shard)
        # metadata is the shard's own, not the range's: every shard names its own file
        uris = {s: str(md["lake_uri"].value) for s, md in by_shard.items()}
        assert all(f"shard={s}" in uri for s, uri in uris.items()), (asset, uris)
    rows = {s: _materializations(inst, "source_images", result.run_id)[s]["rows"].value for s in keys}
    assert rows == {k: 2 for k in keys}
    # every check ran over the whole range and passed
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR)


def test_one_failing_shard_does_not_lose_the_others(three_shards):
    from ultraedit_dagster import definitions

    inst, lake, keys = three_shards
    resources = {**definitions.resources, "lake": LakeResource(root=lake.root)}
    upstream = [a for a in definitions.shard_assets if a.keys & {dg.AssetKey("source_images"), dg.AssetKey("captions")}]
    defs = dg.Definitions(
        assets=upstream,
        jobs=[
            dg.define_asset_job("up", selection=upstream, partitions_def=definitions.shards),
            dg.define_asset_job("captions_only", selection=["captions"], partitions_def=definitions.shards),
        ],
        resources=resources,
    )
    tags = {RANGE_START: keys[0], RANGE_END: keys[-1]}
    assert defs.resolve_job_def("up").execute_in_process(instance=inst, tags=tags).success
    # a deterministic failure in the middle shard: its source_images file is gone
    Path(lake.shard_uri("source_images", keys[1])).unlink()
    result = defs.resolve_job_def("captions_only").execute_in_process(instance=inst, tags=tags, raise_on_error=False)
    assert not result.success
    done = _materializations(inst, "captions", result.run_id)
    assert sorted(done) == [keys[0], keys[2]]  # the healthy shards are recorded as materialized ...
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert keys[1] in failure.message or keys[1] in json.dumps(str(failure.event_specific_data))
    # ... so what is left to backfill is exactly the failed shard
    status = inst.get_status_by_partition(dg.AssetKey("captions"), keys, definitions.shards)
    assert status is not None and status[keys[1]] != status[keys[0]] == dg.AssetPartitionStatus.MATERIALIZED
