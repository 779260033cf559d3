"""The release gate (docs/method.md §6): which shard versions may enter the release, and why the others may not.
Pure logic, no Dagster imports; `gate_records.py` gathers the evidence from the Dagster instance and the lake.

A shard enters the release only when all of these hold, each recorded as one row of the `release_gate` table
(shard, asset, run_id, check, passed, evaluated_at, detail):

- `filtered_release` has a materialization of the shard, and the lake file carries that materialization's run id in
  its footer (`lake_file_matches_materialization`): a file written outside that run, or left by an older run, is
  not what the checks saw;
- every blocking check of `filtered_release` and of `metric_scores` (the tables the release reads) was evaluated in
  the run of that asset's latest materialization of the shard and passed for the shard;
- no upstream asset of `filtered_release` was materialized for the shard after it (`upstream_unchanged`): a shard
  whose scores or candidates changed since is stale until `filtered_release` runs again;
- its rows duplicate no uid of a shard that comes earlier in key order (`unique_across_shards`).

A shard that fails any of these is left out of the release and listed on the card with the reasons; the release of
the other shards is still published (a failed shard must not hold back the others, and nothing is published
silently).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RELEASE_ASSET = "filtered_release"
SCORES_ASSET = "metric_scores"
# Blocking checks the gate requires, per asset (tests assert this equals the blocking checks defined in checks.py).
BLOCKING_CHECKS: dict[str, tuple[str, ...]] = {
    SCORES_ASSET: ("metric_scores_valid_ranges",),
    RELEASE_ASSET: (
        "filtered_release_meets_thresholds",
        "filtered_release_valid_ranges",
        "filtered_release_unique_ids",
        "filtered_release_region_masks",
        "filtered_release_images_decode",
    ),
}
UPSTREAM_ASSETS = ("source_images", "captions", "edit_instructions", "region_masks", "edit_candidates", SCORES_ASSET)
GATE_COLUMNS = ("shard", "asset", "run_id", "check", "passed", "evaluated_at", "detail")


@dataclass(frozen=True)
class Materialization:
    run_id: str
    timestamp: float


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    timestamp: float
    failing_shards: frozenset[str] | None = None  # a multi-shard evaluation names its failing shards

    def passed_for(self, shard: str) -> bool:
        if self.passed:
            return True
        if self.failing_shards is None:  # a single-shard evaluation (or one that does not say): it failed
            return False
        return shard not in self.failing_shards


@dataclass
class ShardEvidence:
    shard: str
    materializations: dict[str, Materialization | None] = field(default_factory=dict)  # asset -> latest
    checks: dict[tuple[str, str], CheckOutcome | None] = field(default_factory=dict)  # (asset, check) -> in that run
    file_run_id: str | None = None  # the run id in the filtered_release file's footer
    file_exists: bool = False


@dataclass
class ShardDecision:
    shard: str
    included: bool
    reasons: list[str]
    rows: list[dict[str, Any]]


def _row(shard: str, asset: str, run_id: str | None, check: str, passed: bool, when: float | None, detail: str):
    return {
        "shard": shard,
        "asset": asset,
        "run_id": run_id,
        "check": check,
        "passed": passed,
        "evaluated_at": when,
        "detail": detail,
    }


def judge(e: ShardEvidence) -> ShardDecision:
    """The gate rows of one shard and whether it may enter the release."""
    rows: list[dict[str, Any]] = []
    release = e.materializations.get(RELEASE_ASSET)
    if release is None:
        detail = (
            "the lake file was never materialized through Dagster"
            if e.file_exists
            else "filtered_release was never materialized"
        )
        rows.append(_row(e.shard, RELEASE_ASSET, None, "materialized", False, None, detail))
    else:
        matches = e.file_exists and e.file_run_id == release.run_id
        detail = (
            "the lake file was written by the latest materialization"
            if matches
            else (
                "no lake file"
                if not e.file_exists
                else f"the lake file was written by run {e.file_run_id or 'unknown'}, not by the latest "
                f"materialization (run {release.run_id})"
            )
        )
        rows.append(
            _row(e.shard, RELEASE_ASSET, release.run_id, "lake_file_matches_materialization", matches, None, detail)
        )
    for asset, checks in BLOCKING_CHECKS.items():
        mat = e.materializations.get(asset)
        for check in checks:
            if mat is None:
                rows.append(_row(e.shard, asset, None, check, False, None, f"{asset} has no materialization"))
                continue
            outcome = e.checks.get((asset, check))
            if outcome is None:
                rows.append(
                    _row(e.shard, asset, mat.run_id, check, False, None, "not evaluated on the latest materialization")
                )
                continue
            ok = outcome.passed_for(e.shard)
            rows.append(
                _row(
                    e.shard,
                    asset,
                    mat.run_id,
                    check,
                    ok,
                    outcome.timestamp,
                    "passed" if ok else "failed on the latest materialization",
                )
            )
    if release is not None:
        newer = sorted(
            a
            for a in UPSTREAM_ASSETS
            if (m := e.materializations.get(a)) is not None and m.timestamp > release.timestamp
        )
        rows.append(
            _row(
                e.shard,
                RELEASE_ASSET,
                release.run_id,
                "upstream_unchanged",
                not newer,
                None,
                f"stale: {', '.join(newer)} materialized again after filtered_release" if newer else "up to date",
            )
        )
    reasons = [f"{r['check']} ({r['asset']}): {r['detail']}" for r in rows if not r["passed"]]
    return ShardDecision(e.shard, not reasons, reasons, rows)


def exclude_duplicates(decisions: list[ShardDecision], uids_of: Mapping[str, Iterable[str]]) -> list[ShardDecision]:
    """Leave out every included shard that repeats a uid of an earlier included shard (key order; the first shard
    holding a uid keeps it), or holds a uid twice itself; records an `unique_across_shards` row for each."""
    seen: dict[str, str] = {}
    for d in sorted(decisions, key=lambda d: d.shard):
        if not d.included:
            continue
        uids = list(uids_of.get(d.shard, ()))
        clash = sorted({seen[u] for u in uids if u in seen})
        repeated = len(uids) - len(set(uids))
        ok = not clash and repeated == 0
        detail = (
            "unique"
            if ok
            else (f"repeats uids of shard(s) {', '.join(clash)}" if clash else f"holds {repeated} uid(s) twice")
        )
        d.rows.append(_row(d.shard, RELEASE_ASSET, None, "unique_across_shards", ok, None, detail))
        if ok:
            seen.update({u: d.shard for u in uids})
        else:
            d.included = False
            d.reasons.append(f"unique_across_shards ({RELEASE_ASSET}): {detail}")
    return decisions
