"""What a kept sample of a release cost (docs/method.md §8), computed from the lake (no Dagster imports).

Per release (the shards the gate admitted) and per mode: candidates generated per kept sample, UNet row-steps per
kept sample, the pass rate of each threshold among scored candidates, lake bytes per kept sample (every per-shard
asset's file of the admitted shards, the release's own files included), and model seconds per stage per kept sample
where the stage measured them (the caller passes the measured seconds; rows carry only deterministic costs, so a
re-run stays byte-identical).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ultraedit_dagster.editing.rows import shard_bytes
from ultraedit_dagster.lake.store import SHARD_ASSETS, Lake
from ultraedit_dagster.scoring.metrics import THRESHOLD_METRICS

COST_COLUMNS = ["mode", "status", "outcome", "unet_row_steps", *(f"pass_{m}" for m in THRESHOLD_METRICS), "pass_all"]
MODES = ("free_form", "region")
RELEASE_ASSET = "filtered_release"


@dataclass
class ReleaseCost:
    kept: dict[str, int] = field(default_factory=dict)  # mode -> samples the release holds
    generated: dict[str, int] = field(default_factory=dict)  # mode -> candidates generated
    scored: dict[str, int] = field(default_factory=dict)  # mode -> candidates scored (status ok)
    passed: dict[str, dict[str, int]] = field(default_factory=dict)  # mode -> pass column -> count
    unet_row_steps: dict[str, int] = field(default_factory=dict)
    lake_bytes: dict[str, int] = field(default_factory=dict)  # asset -> bytes over the admitted shards
    model_seconds: dict[str, float] = field(default_factory=dict)  # stage -> measured seconds (admitted shards)
    # profile -> figures() of its shards alone, when the release holds shards of several recipes (docs/method.md §12)
    by_profile: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total_kept(self) -> int:
        return sum(self.kept.values())

    def per_kept(self, value: float, mode: str | None = None) -> float | None:
        kept = self.kept.get(mode, 0) if mode else self.total_kept
        return round(value / kept, 4) if kept else None

    def figures(self) -> dict[str, Any]:
        """The headline figures (release-wide), as the card, release.json and the asset metadata show them."""
        generated = sum(self.generated.values())
        return {
            "kept_samples": self.total_kept,
            "candidates_generated": generated,
            "candidates_per_kept_sample": self.per_kept(generated),
            "unet_row_steps_per_kept_sample": self.per_kept(sum(self.unet_row_steps.values())),
            "lake_bytes_per_kept_sample": self.per_kept(sum(self.lake_bytes.values())),
            "model_seconds_per_kept_sample": {
                stage: self.per_kept(seconds) for stage, seconds in sorted(self.model_seconds.items())
            },
        }

    def pass_rates(self, mode: str) -> dict[str, float | None]:
        scored = self.scored.get(mode, 0)
        return {col: (round(n / scored, 4) if scored else None) for col, n in sorted(self.passed.get(mode, {}).items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.figures(),
            "by_mode": {
                mode: {
                    "kept": self.kept.get(mode, 0),
                    "candidates_generated": self.generated.get(mode, 0),
                    "candidates_per_kept_sample": self.per_kept(self.generated.get(mode, 0), mode),
                    "unet_row_steps_per_kept_sample": self.per_kept(self.unet_row_steps.get(mode, 0), mode),
                    "pass_rate": self.pass_rates(mode),
                }
                for mode in MODES
            },
            "lake_bytes": dict(sorted(self.lake_bytes.items())),
            "model_seconds": {k: round(v, 2) for k, v in sorted(self.model_seconds.items())},
            "by_profile": self.by_profile,
        }


def release_cost(lake: Lake, shards: list[str], model_seconds: Mapping[str, float] | None = None) -> ReleaseCost:
    """The cost of the release made of `shards` (see the module docstring). Candidates whose triplet failed upstream
    (outcome `upstream_failed...`) were never generated and do not count."""
    cost = ReleaseCost(model_seconds=dict(model_seconds or {}))
    kept: Counter = Counter()
    generated: Counter = Counter()
    scored: Counter = Counter()
    steps: Counter = Counter()
    passed: dict[str, Counter] = {m: Counter() for m in MODES}
    for shard in shards:
        for asset in SHARD_ASSETS:
            if lake.exists(asset, shard):
                cost.lake_bytes[asset] = cost.lake_bytes.get(asset, 0) + shard_bytes(lake, asset, shard)
        if lake.exists(RELEASE_ASSET, shard):  # kept = what the release holds, per split
            for batch in lake.iter_batches(RELEASE_ASSET, shard, 8192, ["split"]):
                kept.update(batch["split"].to_pylist())
        if not lake.exists("metric_scores", shard):
            continue
        have = set(lake.columns("metric_scores", shard))
        for batch in lake.iter_batches("metric_scores", shard, 8192, [c for c in COST_COLUMNS if c in have]):
            for row in batch.to_pylist():
                outcome = row.get("outcome") or ""
                if outcome.startswith("upstream_failed"):
                    continue
                mode = row.get("mode") or "unassigned"
                generated[mode] += 1
                steps[mode] += row.get("unet_row_steps") or 0
                if row.get("status") == "ok":
                    scored[mode] += 1
                    counts = passed.setdefault(mode, Counter())
                    for col in (*(f"pass_{m}" for m in THRESHOLD_METRICS), "pass_all"):
                        counts[col] += bool(row.get(col))
    cost.kept, cost.generated, cost.scored, cost.unet_row_steps = dict(kept), dict(generated), dict(scored), dict(steps)
    cost.passed = {m: dict(c) for m, c in passed.items() if c}
    return cost


def cost_markdown(cost: ReleaseCost) -> list[str]:
    """The card's cost section."""
    f = cost.figures()

    def show(v: Any) -> str:
        return "—" if v is None else f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"

    lines = [
        "## Cost per kept sample",
        "",
        f"{show(f['candidates_generated'])} candidates were generated for {show(f['kept_samples'])} kept samples "
        "(docs/method.md §8).",
        "",
        "| figure | all | free_form | region |",
        "|---|---|---|---|",
        "| candidates generated per kept sample | "
        + " | ".join(
            show(v)
            for v in (
                f["candidates_per_kept_sample"],
                *(cost.per_kept(cost.generated.get(m, 0), m) for m in MODES),
            )
        )
        + " |",
        "| UNet row-steps per kept sample | "
        + " | ".join(
            show(v)
            for v in (
                f["unet_row_steps_per_kept_sample"],
                *(cost.per_kept(cost.unet_row_steps.get(m, 0), m) for m in MODES),
            )
        )
        + " |",
        f"| lake bytes per kept sample | {show(f['lake_bytes_per_kept_sample'])} | | |",
    ]
    for stage, seconds in f["model_seconds_per_kept_sample"].items():
        lines.append(f"| model seconds per kept sample: {stage} | {show(seconds)} | | |")
    if cost.by_profile:
        lines += ["", "Per recipe (the shards of each profile alone):", ""]
        lines += ["| profile | kept | candidates per kept | UNet row-steps per kept | model seconds per kept |"]
        lines.append("|---|---|---|---|---|")
        for name, p in sorted(cost.by_profile.items()):
            seconds = ", ".join(f"{k} {show(v)}" for k, v in p["model_seconds_per_kept_sample"].items()) or "—"
            lines.append(
                f"| {name} | {show(p['kept_samples'])} | {show(p['candidates_per_kept_sample'])} | "
                f"{show(p['unet_row_steps_per_kept_sample'])} | {seconds} |"
            )
    lines += ["", "Pass rate of each threshold among scored candidates:", "", "| threshold | free_form | region |"]
    lines.append("|---|---|---|")
    rates = {m: cost.pass_rates(m) for m in MODES}
    for col in (*(f"pass_{m}" for m in THRESHOLD_METRICS), "pass_all"):
        lines.append(f"| {col} | " + " | ".join(show(rates[m].get(col)) for m in MODES) + " |")
    if not cost.model_seconds:
        lines += ["", "Model seconds: no stage of the admitted shards recorded them."]
    else:
        lines += [
            "",
            "Model seconds are measured by the stages that record them (generation and scoring, in the "
            "`candidates_and_scores` step's metadata) over the admitted shards' latest materializations.",
        ]
    return lines
