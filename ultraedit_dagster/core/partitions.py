"""The `shards` partitions and the rules for shard keys.

A shard key is `<manifest-name>-<nnnnn>`: lowercase `[a-z0-9-]`, at most 64 characters. Keys become folder names in
the lake (`shard=<key>`), so anything else is refused before it can reach a path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dagster as dg

SHARDS_PARTITIONS_NAME = "shards"
MAX_SHARD_KEY_LENGTH = 64
SHARD_INDEX_DIGITS = 5

shards = dg.DynamicPartitionsDefinition(name=SHARDS_PARTITIONS_NAME)

# `\Z`, not `$` (which also matches before a trailing newline), and `[0-9]`, not `\d` (which matches any script's
# digits): a key becomes a folder name, so it must be exactly these ASCII characters.
_MANIFEST_NAME = re.compile(r"\A[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z", re.ASCII)
_SHARD_KEY = re.compile(r"\A([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)-([0-9]{5})\Z", re.ASCII)


class InvalidShardKey(ValueError):
    """A shard key or manifest name that breaks the naming rules."""


def validate_manifest_name(name: str) -> str:
    max_name = MAX_SHARD_KEY_LENGTH - SHARD_INDEX_DIGITS - 1
    if not isinstance(name, str) or not name:
        raise InvalidShardKey("manifest name is empty")
    if len(name) > max_name:
        raise InvalidShardKey(f"manifest name {name[:80]!r} is longer than {max_name} characters")
    if not _MANIFEST_NAME.match(name):
        raise InvalidShardKey(
            f"manifest name {name[:80]!r} must be lowercase letters, digits and '-' "
            "(no leading/trailing '-', no '/', '.', '..' or spaces)"
        )
    return name


def shard_key(manifest_name: str, index: int) -> str:
    validate_manifest_name(manifest_name)
    if not 0 <= index < 10**SHARD_INDEX_DIGITS:
        raise InvalidShardKey(f"shard index {index} out of range 0..{10**SHARD_INDEX_DIGITS - 1}")
    return f"{manifest_name}-{index:0{SHARD_INDEX_DIGITS}d}"


def validate_shard_key(key: str) -> str:
    """Return `key` if it is a valid shard key, else raise InvalidShardKey saying why."""
    if not isinstance(key, str) or not key:
        raise InvalidShardKey("shard key is empty")
    if len(key) > MAX_SHARD_KEY_LENGTH:
        raise InvalidShardKey(f"shard key {key[:80]!r}... is longer than {MAX_SHARD_KEY_LENGTH} characters")
    if not _SHARD_KEY.match(key):
        raise InvalidShardKey(
            f"shard key {key!r} must look like '<manifest-name>-<nnnnn>' using only lowercase [a-z0-9-]"
        )
    return key


def manifest_name_of(key: str) -> str:
    m = _SHARD_KEY.match(validate_shard_key(key))
    assert m is not None
    return m.group(1)


# A progress line every few batches: often enough to follow a long step in the run log, rarely enough that a
# 1,000-row shard adds a handful of events, not one per batch.
PROGRESS_EVERY_BATCHES = 4


class ShardProgress:
    """Progress of one shard inside a long step, logged to the Dagster run log every `every` batches and when the
    shard is done, in the one format `ultraedit materialize` follows (`ops.progress.progress_message`):
    `progress <shard>: rows 128/1000, 3.10 rows/s, ~281 s left`."""

    def __init__(
        self, log: Any, shard: str, total: int, unit: str = "rows", every: int | None = None, clock=time.monotonic
    ) -> None:
        self.log, self.shard, self.total, self.unit = log, shard, int(total), unit
        self.every = max(1, every or PROGRESS_EVERY_BATCHES)
        self.clock = clock
        self.started = clock()
        self.done = self.batches = 0
        self._logged = -1

    def advance(self, n: int) -> None:
        """`n` more rows (one batch) done."""
        from ultraedit_dagster.ops.progress import progress_message

        self.done += int(n)
        self.batches += 1
        finished = self.total > 0 and self.done >= self.total
        if (self.batches % self.every == 0 or finished) and self.done != self._logged:
            self._logged = self.done
            elapsed = self.clock() - self.started
            self.log.info(progress_message(self.shard, self.done, self.total, elapsed, self.unit))


def _each_shard(
    context: Any, keys: list[str], build: Callable[[str], Any]
) -> tuple[dict[str, Any], dict[str, BaseException]]:
    """build(shard) for every shard of a range, isolated per shard: (results of those that succeeded, the errors of
    the others); the caller records what succeeded before it fails the step. Each finished shard logs how far the
    range has come and the time left."""
    done: dict[str, Any] = {}
    failed: dict[str, BaseException] = {}
    started = time.monotonic()
    for i, shard in enumerate(keys, 1):
        context.log.info(f"shard {i}/{len(keys)}: {shard}")
        try:
            done[shard] = build(shard)
        except Exception as exc:  # noqa: BLE001 - isolated per shard, reported by the caller
            context.log.error(f"shard {shard} failed: {type(exc).__name__}: {exc}")
            failed[shard] = exc
        elapsed = time.monotonic() - started
        left = elapsed / i * (len(keys) - i)
        context.log.info(
            f"range progress: shards {i}/{len(keys)} done ({len(failed)} failed), {elapsed:.0f} s, ~{left:.0f} s left"
        )
    return done, failed


def _range_failure(keys: list[str], done: Mapping[str, Any], failed: Mapping[str, BaseException]) -> dg.Failure:
    return dg.Failure(
        description=f"{len(failed)} of {len(keys)} shards failed: "
        + "; ".join(f"{s}: {type(e).__name__}: {e}" for s, e in failed.items()),
        metadata={"failed_shards": sorted(failed), "materialized_shards": sorted(done)},
    )


def materialize_each_shard(
    context: dg.AssetExecutionContext, build: Callable[[str], Mapping[str, Any]]
) -> dg.MaterializeResult:
    """Materialize every shard of the run: one shard, or the range a multi-run backfill hands a step (models load once
    for the range; `build(shard)` writes that shard's file and returns its metadata). Each shard gets its own
    materialization and metadata. A shard that fails does not lose the others: the shards that succeeded are recorded
    as materialized, then the step fails naming the failed shards, so a backfill of what failed redoes only those."""
    name = context.asset_key.path[-1]
    (result,) = materialize_each_shard_multi(context, [name], lambda shard: {name: build(shard)})
    return result


def materialize_each_shard_multi(
    context: dg.AssetExecutionContext, keys: list[str], build: Callable[[str], Mapping[str, Mapping[str, Any]]]
) -> Iterator[dg.MaterializeResult]:
    """`materialize_each_shard` for a step that writes several assets per shard (the fused generate-and-score
    step writes `edit_candidates` and `metric_scores`): `build(shard)` writes every asset's file of that shard and
    returns {asset name: metadata}. Yields one MaterializeResult per asset; for a range each shard of each asset gets
    its own materialization and metadata, and a failing shard fails the step after the others are recorded."""
    asset_keys = [dg.AssetKey(k) for k in keys]
    shard_keys = list(context.partition_keys)
    if len(shard_keys) == 1:
        metadata = build(shard_keys[0])
        for key in asset_keys:
            yield dg.MaterializeResult(asset_key=key, metadata=dict(metadata[key.path[-1]]))
        return
    done, failed = _each_shard(context, shard_keys, build)
    if not failed:
        for shard, metadata in done.items():
            for key in asset_keys:
                context.add_asset_metadata(dict(metadata[key.path[-1]]), asset_key=key, partition_key=shard)
        for key in asset_keys:
            yield dg.MaterializeResult(asset_key=key)
        return
    for shard, metadata in done.items():
        for key in asset_keys:
            context.log_event(dg.AssetMaterialization(key, partition=shard, metadata=dict(metadata[key.path[-1]])))
    raise _range_failure(shard_keys, done, failed) from next(iter(failed.values()))


def check_each_shard(
    context: dg.AssetCheckExecutionContext, check: Callable[[str], dg.AssetCheckResult]
) -> dg.AssetCheckResult:
    """Run a per-shard check over every shard of the run (one shard, or a backfill's range). For a range the result
    passes only if every shard passes; its metadata names the failing shards and carries the first failure's own."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        return check(keys[0])
    results = {shard: check(shard) for shard in keys}
    failing = [s for s, r in results.items() if not r.passed]
    severity = (
        dg.AssetCheckSeverity.ERROR
        if any(results[s].severity == dg.AssetCheckSeverity.ERROR for s in failing)
        else dg.AssetCheckSeverity.WARN
    )
    metadata: dict[str, Any] = {"shards": len(keys), "failing_shards": ", ".join(failing) or "none"}
    if failing:
        metadata.update({f"{failing[0]}: {k}": v for k, v in (results[failing[0]].metadata or {}).items()})
    return dg.AssetCheckResult(passed=not failing, severity=severity, metadata=metadata)
