"""`ultraedit backfill --failed [--asset A]`: backfill only what is missing or failed, through Dagster's backfills.

The backfill targets exactly the (asset, shard) pairs whose latest materialization attempt failed or that were never
materialized (shards with a run in progress are left alone), so healthy work is never recomputed. It is an ordinary
Dagster asset backfill (`instance.add_backfill`): the daemon (`dagster dev`, or `dagster-daemon run` in production)
executes it, honouring each asset's BackfillPolicy (GPU stages batch several shards per run so models load once),
and the UI shows it under Runs → Backfills.

Shards whose partitions materialized but hold failure rows marked retryable (`sources.rows.RETRYABLE_MARK`: an image
fetch or an LLM request that failed for a transport reason) are chosen too, from the stage that marked them on, so an
outage of the image store or the LLM endpoint is repaired once it is over.

With `--asset A`, only shards where A is missing or failed (or must be redone for rows marked retryable) are
chosen; for those shards the backfill covers A plus whichever of A's upstream and downstream per-shard assets are
missing or failed (so A can succeed, and the repaired shard flows on to the release).
"""

from __future__ import annotations

import argparse
import sys
import time

import dagster as dg

from ultraedit_dagster.core.partitions import shards
from ultraedit_dagster.ops.automation import assets_needing_rebuild, rebuild_plan, retryable_rebuilds

BACKFILL_TAG = "ultraedit/failed_backfill"


def _asset_graph(defs_or_graph):
    if isinstance(defs_or_graph, dg.Definitions):
        return defs_or_graph.resolve_asset_graph()
    return defs_or_graph


def shard_asset_keys(asset_graph) -> list[dg.AssetKey]:
    """Every asset in the graph partitioned by `shards`, in topological order."""
    ordered = [k for level in asset_graph.toposorted_asset_keys_by_level for k in sorted(level)]
    return [
        k
        for k in ordered
        if asset_graph.has(k)
        and asset_graph.get(k).is_materializable
        and asset_graph.get(k).partitions_def is not None
        and getattr(asset_graph.get(k).partitions_def, "name", None) == shards.name
    ]


def failed_asset_partitions(
    instance: dg.DagsterInstance, defs_or_graph, asset: str | None = None, lake=None
) -> dict[str, list[dg.AssetKey]]:
    """{shard: [asset keys to rebuild]} as the backfill would target them. With a `lake`, shards whose partitions
    materialized but hold failure rows marked retryable (an outage of the image store or the LLM) are included too,
    from the stage that marked them on (`automation.retryable_rebuilds`)."""
    graph = _asset_graph(defs_or_graph)
    keys = shard_asset_keys(graph)
    if asset is None:
        return assets_needing_rebuild(instance, keys, shards, lake=lake)
    target = dg.AssetKey.from_user_string(asset)
    if target not in keys:
        names = ", ".join(k.to_user_string() for k in keys)
        raise ValueError(f"--asset {asset!r} is not a per-shard asset; choose one of: {names}")
    todo_for_target = assets_needing_rebuild(instance, [target], shards)
    # shards where A itself has to be redone for rows marked retryable (by A or by a stage before it)
    retry: dict[str, list[dg.AssetKey]] = {}
    if lake is not None:
        plan = rebuild_plan(instance, keys, shards, lake=lake)
        retry = {s: plan.todo[s] for s in plan.retryable if target in plan.todo[s]}
    shard_list = [s for s in instance.get_dynamic_partitions(shards.name) if s in todo_for_target or s in retry]
    if not shard_list:
        return {}
    # A itself, whatever upstream of A is broken for those shards (else A would fail again), and A's downstream
    upstream = graph.get_ancestor_asset_keys(target)
    related = [k for k in keys if k == target or k in upstream or target in graph.get_ancestor_asset_keys(k)]
    everything = assets_needing_rebuild(instance, related, shards, partition_keys=shard_list)
    return {
        shard: [k for k in related if k in everything.get(shard, [target]) or k in retry.get(shard, [])]
        for shard in shard_list
    }


def launch_failed_backfill(
    instance: dg.DagsterInstance, defs_or_graph, asset: str | None = None, title: str | None = None, lake=None
) -> str | None:
    """Add an asset backfill of exactly the missing/failed (asset, shard) pairs (and, with a `lake`, the shards
    holding rows marked retryable); returns its id, or None if all is healthy."""
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    graph = _asset_graph(defs_or_graph)
    todo = failed_asset_partitions(instance, graph, asset, lake=lake)
    if not todo:
        return None
    pairs = {AssetKeyPartitionKey(key, shard) for shard, keys in todo.items() for key in keys}
    subset = AssetGraphSubset.from_asset_partition_set(pairs, graph)
    backfill_id = make_new_backfill_id()
    shard_list = sorted(todo)
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id,
        backfill_timestamp=time.time(),
        tags={BACKFILL_TAG: asset or "all"},
        dynamic_partitions_store=instance,
        asset_graph_subset=subset,
        title=title or f"rebuild failed/missing shards ({len(shard_list)})",
        description="Missing or failed shards: " + ", ".join(shard_list)[:900],
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill_id


def retryable_shards(lake, defs_or_graph, partition_keys: list[str]) -> list[str]:
    """Of `partition_keys`, the shards holding failure rows marked retryable."""
    return list(retryable_rebuilds(lake, shard_asset_keys(_asset_graph(defs_or_graph)), partition_keys))


def busy_shards(instance: dg.DagsterInstance, defs_or_graph) -> list[str]:
    """Shards left out of a backfill because a run of theirs is queued or in progress."""
    return rebuild_plan(instance, shard_asset_keys(_asset_graph(defs_or_graph)), shards).busy


def run(args: argparse.Namespace) -> int:
    """Entry point for `ultraedit backfill --failed [--asset A] [--dry-run]`."""
    from ultraedit_dagster.definitions import defs
    from ultraedit_dagster.lake.resources import lake_resource_from_env
    from ultraedit_dagster.ops.instance import ensure_instance

    instance = ensure_instance()
    lake = lake_resource_from_env(for_definitions=False).lake  # where rows marked retryable are looked for
    try:
        todo = failed_asset_partitions(instance, defs, getattr(args, "asset", None), lake=lake)
        busy = busy_shards(instance, defs)
        busy_note = (
            f"{len(busy)} shard(s) skipped because a run of theirs is queued or in progress: {', '.join(busy)}"
            if busy
            else ""
        )
        if not todo:
            if busy:
                print(f"nothing to backfill now: {busy_note}; run this again when they finish")
            else:
                print("nothing to backfill: every shard is materialized for every per-shard asset")
            return 0
        retryable = set(retryable_shards(lake, defs, list(todo)))
        for shard, keys in todo.items():
            note = " (rows marked retryable)" if shard in retryable else ""
            print(f"  {shard}: {', '.join(k.to_user_string() for k in keys)}{note}")
        if busy:
            print(busy_note)
        if getattr(args, "dry_run", False):
            print(f"{len(todo)} shard(s) would be backfilled (dry run)")
            return 0
        backfill_id = launch_failed_backfill(instance, defs, getattr(args, "asset", None), lake=lake)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"backfill {backfill_id} added for {len(todo)} shard(s); the Dagster daemon runs it "
        "(see Runs → Backfills in the UI)"
    )
    return 0
