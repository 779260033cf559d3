"""Evidence for the release gate (release/gate.py) from the Dagster instance and the lake: the latest
materialization of each asset per shard, the blocking checks evaluated in that materialization's run, and the run id
in the filtered_release file's footer (docs/method.md §6)."""

from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.gate import (
    BLOCKING_CHECKS,
    RELEASE_ASSET,
    UPSTREAM_ASSETS,
    CheckOutcome,
    Materialization,
    ShardEvidence,
)

RUN_ID_KEY = b"ultraedit.run_id"


def latest_materialization(instance: dg.DagsterInstance, asset: str, shard: str) -> Materialization | None:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[shard]), limit=1
    )
    if not result.records:
        return None
    record = result.records[0]
    return Materialization(run_id=record.run_id, timestamp=record.timestamp)


def _failing_shards(metadata: Any) -> frozenset[str] | None:
    value = metadata.get("failing_shards") if metadata else None
    if value is None:
        return None
    text = getattr(value, "value", value)
    return frozenset(s.strip() for s in str(text).split(",") if s.strip() and s.strip() != "none")


def check_outcomes(instance: dg.DagsterInstance, run_id: str) -> dict[tuple[str, str], CheckOutcome]:
    """(asset, check) -> the last evaluation of that check in the run."""
    out: dict[tuple[str, str], CheckOutcome] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        key = (evaluation.asset_key.to_user_string(), evaluation.check_name)
        out[key] = CheckOutcome(
            passed=bool(evaluation.passed),
            timestamp=entry.timestamp,
            failing_shards=_failing_shards(evaluation.metadata),
        )
    return out


def file_run_id(lake: Lake, shard: str) -> tuple[bool, str | None]:
    """(the filtered_release file exists, the run id in its footer)."""
    if not lake.exists(RELEASE_ASSET, shard):
        return False, None
    metadata = lake.read_table(RELEASE_ASSET, shard, columns=[]).schema.metadata or {}
    value = metadata.get(RUN_ID_KEY)
    return True, value.decode() if value else None


def gather(instance: dg.DagsterInstance, lake: Lake, shards: list[str]) -> list[ShardEvidence]:
    by_run: dict[str, dict[tuple[str, str], CheckOutcome]] = {}
    out = []
    for shard in shards:
        e = ShardEvidence(shard=shard)
        for asset in {RELEASE_ASSET, *UPSTREAM_ASSETS, *BLOCKING_CHECKS}:
            e.materializations[asset] = latest_materialization(instance, asset, shard)
        for asset, checks in BLOCKING_CHECKS.items():
            mat = e.materializations.get(asset)
            if mat is None:
                continue
            if mat.run_id not in by_run:
                by_run[mat.run_id] = check_outcomes(instance, mat.run_id)
            for check in checks:
                e.checks[(asset, check)] = by_run[mat.run_id].get((asset, check))
        e.file_exists, e.file_run_id = file_run_id(lake, shard)
        out.append(e)
    return out


# stage -> (asset whose materialization metadata records it, metadata key); docs/method.md §8
MEASURED_SECONDS = {
    "generation": ("edit_candidates", "generation_seconds"),
    "scoring": ("metric_scores", "scoring_seconds"),
}


def measured_model_seconds(instance: dg.DagsterInstance, shards: list[str]) -> dict[str, float]:
    """stage -> model seconds summed over the shards' latest materializations (stages that measure them)."""
    out: dict[str, float] = {}
    for stage, (asset, key) in MEASURED_SECONDS.items():
        for shard in shards:
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[shard]), limit=1
            )
            if not result.records:
                continue
            metadata = result.records[0].asset_materialization.metadata or {}
            value = metadata.get(key)
            if value is not None:
                out[stage] = out.get(stage, 0.0) + float(getattr(value, "value", value))
    return out
