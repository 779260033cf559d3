"""Automation: the inbox sensor, the declarative-automation sensor, and the nightly incremental rebuild.

- `build_inbox_sensor(job)`: drop a manifest (.jsonl / .csv / .parquet) into the inbox (a local folder or an
  `s3://bucket/prefix`, env ULTRAEDIT_INBOX, default $ULTRAEDIT_HOME/inbox); the next tick registers it (manifest name
  = file name), adds its shards as partitions and requests one run per new shard (`run_key` = shard key, so a tick
  that is retried never launches a shard twice). A manifest that fails validation is logged with its error and
  skipped. The cursor is a high-water mark: on S3 the last key seen (the listing uses `StartAfter`, so a tick lists
  only new objects; name inbox files so they sort in arrival order, e.g. `2025-06-01T12-00-coco.jsonl`), locally the
  (mtime, name) of the newest file processed.
- `automation_sensor`: evaluates every asset's `automation_condition` (per-shard assets are `eager()`, so a
  re-materialized upstream shard flows down to the release; `release_card` follows its release shards).
- `dead_run_sensor`: every minute, marks failed the runs whose processes on this machine died (a killed run worker)
  and frees the pool slots they held (`ops.instance.reap_orphaned_runs`), so a killed run never blocks a later one
  while only the UI and the daemon run.
- `build_rebuild_schedule(job, shard_asset_keys)`: nightly, requests exactly the (asset, shard) pairs that are missing
  or whose latest materialization attempt failed, and the shards holding failure rows marked retryable (from the
  stage that marked them on); healthy shards and shards with a run in progress are left alone.
- `shards_needing_rebuild(...)` / `assets_needing_rebuild(...)`: the selection shared by the schedule and
  `ultraedit backfill --failed`.
"""

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ultraedit_dagster.core import settings
from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME, shards
from ultraedit_dagster.lake.resources import LakeResource

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
INBOX_SENSOR_NAME = "manifest_inbox_sensor"
AUTOMATION_SENSOR_NAME = "ultraedit_automation_sensor"
DEAD_RUN_SENSOR_NAME = "dead_run_sensor"
REBUILD_SCHEDULE_NAME = "nightly_incremental_rebuild"
REBUILD_CRON = "0 2 * * *"
MAX_MANIFESTS_PER_TICK = 20
INBOX_TAG = "ultraedit/inbox_manifest"
REBUILD_TAG = "ultraedit/rebuild"


def inbox_root() -> str:
    return os.environ.get("ULTRAEDIT_INBOX") or str(settings.home() / "inbox")


def inbox_shard_size() -> int:
    from ultraedit_dagster.sources.manifests import DEFAULT_SHARD_SIZE

    return int(os.environ.get("ULTRAEDIT_INBOX_SHARD_SIZE") or DEFAULT_SHARD_SIZE)


def _asset_key(key: dg.AssetKey | str | Sequence[str]) -> dg.AssetKey:
    return key if isinstance(key, dg.AssetKey) else dg.AssetKey.from_coercible(key)


# -- the inbox ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxEntry:
    name: str  # file name (used for the manifest name)
    location: str  # local path or s3 key
    sort_key: tuple  # cursor order


def inbox_manifest_name(file_name: str) -> str:
    """The manifest name of an inbox file: the file name without its manifest suffix, lowercased, every run of
    characters outside [a-z0-9] made one '-' (`my_data.v2.parquet` -> `my-data-v2`, so v3 is a new manifest, not a
    clash with v2)."""
    base = file_name.rsplit("/", 1)[-1]
    for suffix in MANIFEST_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    cleaned = "".join(c if c.isascii() and c.isalnum() else "-" for c in base.lower())
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned[:58].strip("-") or "manifest"


def _is_manifest(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(MANIFEST_SUFFIXES)


def list_new_local(folder: str, cursor: dict | None, limit: int) -> list[InboxEntry]:
    base = Path(folder)
    if not base.is_dir():
        return []
    after = tuple(cursor["after"]) if cursor and "after" in cursor else None
    entries = []
    for p in base.iterdir():
        if p.is_file() and _is_manifest(p.name):
            entry = InboxEntry(p.name, str(p), (p.stat().st_mtime_ns, p.name))
            if after is None or entry.sort_key > after:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.sort_key)[:limit]


def list_new_s3(client, uri: str, cursor: dict | None, limit: int) -> list[InboxEntry]:
    from ultraedit_dagster.lake.store import split_s3_uri

    bucket, prefix = split_s3_uri(uri.rstrip("/"))
    prefix = f"{prefix}/" if prefix else ""
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if cursor and cursor.get("after"):
        kwargs["StartAfter"] = cursor["after"]
    entries: list[InboxEntry] = []
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            name = key[len(prefix) :]
            if "/" in name:  # only the inbox's top level (sub-folders such as processed/ are ignored)
                continue
            entries.append(InboxEntry(name, key, (key,)))  # non-manifests are skipped but advance the cursor
        if len(entries) >= limit:
            break
    return entries[:limit]


def _register_local(lake, path: str, name: str, shard_size: int, existing: set[str]):
    from ultraedit_dagster.sources.manifests import register_manifest

    return register_manifest(lake, path, name=name, shard_size=shard_size, existing_keys=existing)


def _register_s3(lake, client, uri: str, key: str, name: str, shard_size: int, existing: set[str]):
    from ultraedit_dagster.lake.store import split_s3_uri
    from ultraedit_dagster.sources.manifests import ManifestError, read_manifest, register_manifest

    bucket, _ = split_s3_uri(uri.rstrip("/"))
    with tempfile.TemporaryDirectory(prefix="ultraedit-inbox-") as tmp:
        local = os.path.join(tmp, key.rsplit("/", 1)[-1])
        client.download_file(bucket, key, local)
        rows = read_manifest(local)
        relative = [r["image"] for r in rows if r["image"].startswith(str(Path(tmp).resolve()))]
        if relative:
            raise ManifestError(
                f"manifest s3://{bucket}/{key} uses relative image paths (e.g. {relative[0].rsplit('/', 1)[-1]!r}); "
                "manifests in an S3 inbox must use absolute s3:// (or file://) image URIs"
            )
        return register_manifest(lake, local, name=name, shard_size=shard_size, existing_keys=existing)


def evaluate_inbox(
    context: dg.SensorEvaluationContext,
    lake_resource: LakeResource,
    job_name: str | None = None,
    inbox: str | None = None,
    shard_size: int | None = None,
) -> dg.SensorResult | dg.SkipReason:
    """One tick of the inbox sensor (separate from the decorator so it is easy to test and to reuse)."""
    inbox = inbox or inbox_root()
    shard_size = shard_size or inbox_shard_size()
    cursor = json.loads(context.cursor) if context.cursor else None
    is_s3 = inbox.startswith("s3://")
    client = lake_resource.s3_client() if is_s3 else None
    entries = (
        list_new_s3(client, inbox, cursor, MAX_MANIFESTS_PER_TICK)
        if is_s3
        else list_new_local(inbox, cursor, MAX_MANIFESTS_PER_TICK)
    )
    if not entries:
        return dg.SkipReason(f"no new manifests in {inbox}")

    lake = lake_resource.lake
    existing = set(context.instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    new_keys: list[str] = []
    run_requests: list[dg.RunRequest] = []
    skipped: list[str] = []
    for entry in entries:
        if not _is_manifest(entry.name):
            continue
        try:
            name = inbox_manifest_name(entry.name)
            if is_s3:
                reg = _register_s3(lake, client, inbox, entry.location, name, shard_size, existing)
            else:
                reg = _register_local(lake, entry.location, name, shard_size, existing)
        except Exception as exc:  # a bad manifest never stops the inbox: log it, skip it, move on
            skipped.append(entry.name)
            context.log.error(f"inbox manifest {entry.name!r} skipped: {type(exc).__name__}: {exc}")
            continue
        fresh = [k for k in reg.new_shard_keys if k not in existing]
        existing.update(fresh)
        new_keys += fresh
        context.log.info(
            f"inbox manifest {entry.name!r} registered as {reg.name!r}: {reg.rows} rows, "
            f"{len(reg.shard_keys)} shard(s), {len(fresh)} new"
        )
        run_requests += [
            dg.RunRequest(run_key=key, partition_key=key, job_name=job_name, tags={INBOX_TAG: entry.name})
            for key in fresh
        ]
    new_cursor = json.dumps({"after": list(entries[-1].sort_key)} if not is_s3 else {"after": entries[-1].sort_key[0]})
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[shards.build_add_request(new_keys)] if new_keys else [],
        cursor=new_cursor,
        skip_reason=None
        if run_requests
        else dg.SkipReason(
            f"{len(entries)} inbox file(s) seen, no new shards"
            + (f"; skipped: {', '.join(skipped)}" if skipped else "")
        ),
    )


def build_inbox_sensor(
    job,
    name: str = INBOX_SENSOR_NAME,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The inbox sensor targeting `job` (the partitioned `shard_pipeline` job)."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Registers manifests dropped into the inbox (ULTRAEDIT_INBOX: a folder or s3://bucket/prefix), adds their "
            "shards as partitions and requests one run per new shard (run_key = shard key). Invalid manifests are "
            "logged and skipped."
        ),
    )
    def _inbox_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        return evaluate_inbox(context, lake)

    return _inbox_sensor


# -- declarative automation ---------------------------------------------------------------------------------------

automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR_NAME,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.automation_interval_s(),
    description="Evaluates every asset's automation condition: downstream shards follow their upstream shards, "
    "and the release card follows the release shards.",
)


# -- runs whose processes died -------------------------------------------------------------------------------------


@dg.sensor(
    name=DEAD_RUN_SENSOR_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose processes on this machine died (a killed run worker or CLI) and frees "
    "the gpu / duckdb_writer slots they held, so a later run of the same step starts.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    from ultraedit_dagster.ops.instance import reap_orphaned_runs

    reaped = reap_orphaned_runs(context.instance)
    for run_id in reaped:
        context.log.warning(f"run {run_id}: its processes died; marked failed and its pool slots freed")
    return dg.SkipReason(f"reaped {len(reaped)} dead run(s)" if reaped else "no dead runs")


# -- incremental rebuild ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebuildPlan:
    """What an incremental rebuild would do: `todo` = {shard: [asset keys missing or failed]}, and `busy` = the
    shards left out because a run of theirs is queued or in progress; `retryable` = the shards of `todo` chosen (also)
    because they hold failure rows marked retryable."""

    todo: dict[str, list[dg.AssetKey]]
    busy: list[str]
    retryable: list[str] = field(default_factory=list)


# The stages whose failure rows can be marked retryable (sources.rows.RETRYABLE_MARK: an image fetch or an LLM request
# that failed for a transport reason), in graph order; later stages carry such an error down behind their prefix.
RETRYABLE_ROW_ASSETS = ("source_images", "captions", "edit_instructions")


def retryable_rebuilds(
    lake, asset_keys: Iterable[dg.AssetKey | str], partition_keys: Sequence[str] | None = None
) -> dict[str, list[dg.AssetKey]]:
    """{shard: [asset keys to redo]} for the shards whose partitions materialized but hold rows marked retryable:
    the first stage (in `asset_keys`' order, which is the graph's: the per-shard assets form a chain) whose rows are
    marked, and every asset after it, so the repaired rows flow on to the release. Only `partition_keys` are
    considered when given (the registered shards)."""
    from ultraedit_dagster.sources.rows import shards_with_retryable_rows

    keys = [_asset_key(k) for k in asset_keys]
    names = [k.path[-1] for k in keys]
    wanted = None if partition_keys is None else set(partition_keys)
    out: dict[str, list[dg.AssetKey]] = {}
    for origin in RETRYABLE_ROW_ASSETS:
        if origin not in names:
            continue
        for shard in shards_with_retryable_rows(lake, origin):
            if shard not in out and (wanted is None or shard in wanted):
                out[shard] = keys[names.index(origin) :]
    return out


def rebuild_plan(
    instance: dg.DagsterInstance,
    asset_keys: Iterable[dg.AssetKey | str],
    partitions_def: dg.PartitionsDefinition = shards,
    partition_keys: Sequence[str] | None = None,
    lake=None,
) -> RebuildPlan:
    """The missing or failed (asset, shard) pairs of every registered shard, and the shards skipped as busy. With a
    `lake`, shards holding rows marked retryable are added (`retryable_rebuilds`), busy ones still left alone."""
    keys = [_asset_key(k) for k in asset_keys]
    if partition_keys is None:
        partition_keys = (
            instance.get_dynamic_partitions(partitions_def.name)
            if isinstance(partitions_def, dg.DynamicPartitionsDefinition)
            else partitions_def.get_partition_keys(dynamic_partitions_store=instance)
        )
    partition_keys = list(partition_keys)
    if not partition_keys or not keys:
        return RebuildPlan({}, [])
    needs: dict[str, list[dg.AssetKey]] = {}
    busy: set[str] = set()
    for key in keys:
        status = instance.get_status_by_partition(key, partition_keys, partitions_def) or {}
        for pk in partition_keys:
            s = status.get(pk)
            if s == dg.AssetPartitionStatus.IN_PROGRESS:
                busy.add(pk)
            elif s != dg.AssetPartitionStatus.MATERIALIZED:  # None (missing) or FAILED
                needs.setdefault(pk, []).append(key)
    retryable = retryable_rebuilds(lake, keys, partition_keys) if lake is not None else {}
    for pk, redo in retryable.items():
        needs[pk] = [k for k in keys if k in redo or k in needs.get(pk, [])]  # graph order, each key once
    return RebuildPlan(
        todo={pk: needs[pk] for pk in partition_keys if pk in needs and pk not in busy},
        busy=[pk for pk in partition_keys if pk in busy],
        retryable=[pk for pk in partition_keys if pk in retryable and pk not in busy],
    )


def assets_needing_rebuild(
    instance: dg.DagsterInstance,
    asset_keys: Iterable[dg.AssetKey | str],
    partitions_def: dg.PartitionsDefinition = shards,
    partition_keys: Sequence[str] | None = None,
    lake=None,
) -> dict[str, list[dg.AssetKey]]:
    """{shard: [asset keys that are missing or whose latest attempt failed]} for every registered shard (plus, with a
    `lake`, the assets to redo for rows marked retryable).

    A shard with any of the assets in progress (a queued or running run) is left out: it is being rebuilt already.
    """
    return rebuild_plan(instance, asset_keys, partitions_def, partition_keys, lake=lake).todo


def shards_needing_rebuild(
    instance: dg.DagsterInstance,
    asset_keys: Iterable[dg.AssetKey | str],
    partitions_def: dg.PartitionsDefinition = shards,
) -> list[str]:
    """Shards that are missing or failed for any of `asset_keys` (in registration order), never healthy ones."""
    return list(assets_needing_rebuild(instance, asset_keys, partitions_def))


def build_rebuild_schedule(
    job,
    shard_asset_keys: Iterable[dg.AssetKey | str],
    cron_schedule: str = REBUILD_CRON,
    name: str = REBUILD_SCHEDULE_NAME,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.RUNNING,
) -> dg.ScheduleDefinition:
    """Nightly: one run per unhealthy shard, selecting only that shard's missing/failed assets."""
    keys = [_asset_key(k) for k in shard_asset_keys]

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        job=job,
        default_status=default_status,
        description="Incremental rebuild: requests the (asset, shard) pairs that are missing or whose latest attempt "
        "failed, and redoes shards holding rows marked retryable (an outage of the image store or the LLM) from the "
        "stage that marked them. Healthy shards are never re-run.",
    )
    def _rebuild(context: dg.ScheduleEvaluationContext, lake: LakeResource):
        todo = assets_needing_rebuild(context.instance, keys, shards, lake=lake.lake)
        if not todo:
            return dg.SkipReason("every shard is materialized for every per-shard asset")
        tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M") if context.scheduled_execution_time else "now"
        return [
            dg.RunRequest(
                run_key=f"rebuild-{shard}-{tick}",
                partition_key=shard,
                asset_selection=asset_keys,
                tags={REBUILD_TAG: tick},
            )
            for shard, asset_keys in todo.items()
        ]

    return _rebuild
