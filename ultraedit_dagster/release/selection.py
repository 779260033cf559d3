"""Selecting the kept candidates per triplet (docs/method.md §5), pure Python.

Passing candidates of one triplet (same `instruction_uid`) are sorted by `clip_sim_dir` (descending; ties broken by
`candidate_uid` so the choice is deterministic); free-form keeps the top `free_form_top_k` (4), region keeps the top
`region_top_k` (3) and only when at least `region_min_passing` (3) candidates pass. The numbers come from
`profile.selection`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SelectionResult:
    selected: list[dict[str, Any]] = field(default_factory=list)  # input rows + `rank` (1 = best), in order
    triplets: int = 0
    triplets_kept: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # why a triplet kept nothing -> count

    def _reject(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _passes(row: Mapping[str, Any]) -> bool:
    value = row.get("clip_sim_dir")
    return row.get("status") == "ok" and bool(row.get("pass_all")) and value is not None and not math.isnan(value)


def select(rows: Iterable[Mapping[str, Any]], selection: Any) -> SelectionResult:
    """Rows need candidate_uid, instruction_uid, mode, status, pass_all, clip_sim_dir."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["instruction_uid"]].append(row)
    result = SelectionResult()
    for instruction_uid in sorted(groups):
        group = groups[instruction_uid]
        result.triplets += 1
        mode = group[0].get("mode")
        passing = sorted((r for r in group if _passes(r)), key=lambda r: (-r["clip_sim_dir"], r["candidate_uid"]))
        if mode == "region":
            top_k, min_passing = selection.region_top_k, selection.region_min_passing
        else:
            top_k, min_passing = selection.free_form_top_k, 1
        if not passing:
            ok = sum(1 for r in group if r.get("status") == "ok")
            result._reject("all candidates failed upstream" if ok == 0 else "no candidate passes the thresholds")
            continue
        if len(passing) < min_passing:
            result._reject(f"region: fewer than {min_passing} candidates pass")
            continue
        result.triplets_kept += 1
        for rank, row in enumerate(passing[:top_k], start=1):
            result.selected.append({**row, "rank": rank})
    return result
