"""Selecting the kept candidates per triplet (docs/method.md §5), pure Python.

Passing candidates of one triplet (same `instruction_uid`) are sorted by `clip_sim_dir` (descending; ties broken by
`candidate_uid` so the choice is deterministic); free-form keeps the top `free_form_top_k` (4), region keeps the top
`region_top_k` (3) and only when at least `region_min_passing` (3) candidates pass. The numbers come from
`profile.selection`.

A candidate is eligible only when its row says `status = 'ok'` and `pass_all`, and, re-checked here rather than
trusted (docs/method.md §5-6): every metric is finite and inside its valid range, every threshold of its mode is met
(NaN never passes), and its L1 lies inside the mode's band [min_l1, max_l1] (no no-op pairs, no "changed
everything" pairs). Ineligible candidates are counted by reason in `SelectionResult.ineligible`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, METRIC_RANGES, THRESHOLD_METRICS


@dataclass
class SelectionResult:
    selected: list[dict[str, Any]] = field(default_factory=list)  # input rows + `rank` (1 = best), in order
    triplets: int = 0
    triplets_kept: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # why a triplet kept nothing -> count
    ineligible: dict[str, int] = field(default_factory=dict)  # why an ok candidate could not be selected -> count

    def _reject(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


RULE_VERSION = "2"  # 2: ranges, NaN, thresholds and the L1 band re-checked at selection (issue 14)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ineligible_reason(row: Mapping[str, Any], thresholds: Any) -> str | None:
    """Why an ok candidate may not be selected, or None. `thresholds`: the Thresholds of the row's mode (None: only
    status, pass_all and a finite clip_sim_dir are required, for callers that rank pre-validated rows)."""
    if row.get("status") != "ok":
        return "failed upstream"
    if not row.get("pass_all"):
        return "pass_all is false"
    if thresholds is None:
        return None if _finite(row.get("clip_sim_dir")) else "clip_sim_dir missing or not finite"
    for metric in METRIC_COLUMNS:
        value = row.get(metric)
        if not _finite(value):
            return f"{metric} missing or not finite"
        lo, hi = METRIC_RANGES[metric]
        if not lo <= value <= hi:
            return f"{metric} outside [{lo}, {hi}]"
    for metric in THRESHOLD_METRICS:
        if not row[metric] >= float(getattr(thresholds, metric)):
            return f"{metric} below threshold"
    if row["l1"] < thresholds.min_l1:
        return f"no-op pair (l1 < {thresholds.min_l1})"
    if row["l1"] > thresholds.max_l1:
        return f"changed everything (l1 > {thresholds.max_l1})"
    return None


def rule_text(selection: Any, thresholds_by_mode: Mapping[str, Any]) -> str:
    """The selection rule in one line, as the card and every release row state it."""
    parts = [
        f"rule v{RULE_VERSION}: passing = status ok, metrics finite and in range, every threshold met, "
        "l1 inside the band; ranked by clip_sim_dir (ties: candidate_uid)",
        f"free_form: top {selection.free_form_top_k} per triplet",
        f"region: top {selection.region_top_k} per triplet when at least {selection.region_min_passing} pass",
    ]
    for mode, t in thresholds_by_mode.items():
        mins = ", ".join(f"{m}>={getattr(t, m)}" for m in THRESHOLD_METRICS)
        parts.append(f"{mode}: {mins}, {t.min_l1}<=l1<={t.max_l1}")
    return "; ".join(parts)


def select(
    rows: Iterable[Mapping[str, Any]], selection: Any, thresholds_by_mode: Mapping[str, Any] | None = None
) -> SelectionResult:
    """Rows need candidate_uid, instruction_uid, mode, status, pass_all and every metric column.
    `thresholds_by_mode`: {"free_form": Thresholds, "region": Thresholds}; the release always passes it."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["instruction_uid"]].append(row)
    result = SelectionResult()
    for instruction_uid in sorted(groups):
        group = groups[instruction_uid]
        result.triplets += 1
        mode = group[0].get("mode")
        thresholds = (thresholds_by_mode or {}).get("region" if mode == "region" else "free_form")
        eligible = []
        for r in group:
            why = ineligible_reason(r, thresholds)
            if why is None:
                eligible.append(r)
            elif why != "failed upstream":
                result.ineligible[why] = result.ineligible.get(why, 0) + 1
        passing = sorted(eligible, key=lambda r: (-r["clip_sim_dir"], r["candidate_uid"]))
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


def release_rule(profile: Any) -> dict[str, Any]:
    """What every release row records about the rule that admitted it: its mode's thresholds (with the L1 band),
    the whole selection rule and the rule version (docs/method.md §6)."""
    by_mode = thresholds_by_mode(profile)
    return {
        "thresholds": {
            mode: ", ".join(f"{m}>={getattr(t, m)}" for m in THRESHOLD_METRICS) + f", {t.min_l1}<=l1<={t.max_l1}"
            for mode, t in by_mode.items()
        },
        "selection_rule": rule_text(profile.selection, by_mode),
        "rule_version": RULE_VERSION,
    }


def thresholds_by_mode(profile: Any) -> dict[str, Any]:
    return {"free_form": profile.free_form_thresholds, "region": profile.region_thresholds}
