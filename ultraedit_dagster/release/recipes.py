"""A release over shards of several recipes (docs/method.md §12), pure: no Dagster imports.

Each admitted shard was generated, selected and checked under its manifest's recipe profile
(`sources.manifests.shard_profile`); the card then names the profile beside each threshold column, rule and plot.
"""

from dataclasses import dataclass
from typing import Any

from ultraedit_dagster.analysis.plots import lake_threshold_plots
from ultraedit_dagster.core.profiles import Profile
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.selection import rule_text, thresholds_by_mode
from ultraedit_dagster.sources.manifests import shard_profile


@dataclass
class RecipeGroups:
    """The admitted shards grouped by the profile they ran under."""

    profiles: dict[str, Profile]  # name -> profile, sorted by name (the active one when no shard is admitted)
    shards: dict[str, list[str]]  # profile name -> its admitted shards

    @classmethod
    def of(cls, active: Profile, lake: Lake, shards: list[str]) -> "RecipeGroups":
        groups: dict[str, list[str]] = {}
        profiles = {active.name: active}
        for shard in shards:
            prof = shard_profile(active, lake, shard)
            profiles[prof.name] = prof
            groups.setdefault(prof.name, []).append(shard)
        used = sorted(groups) or [active.name]
        return cls({name: profiles[name] for name in used}, {name: groups[name] for name in sorted(groups)})

    @property
    def mixed(self) -> bool:
        return len(self.profiles) > 1

    def thresholds(self) -> dict[str, Any]:
        """Card column -> Thresholds: each mode, with its profile's name when there are several profiles."""
        return {
            (f"{mode} ({name})" if self.mixed else mode): t
            for name, prof in self.profiles.items()
            for mode, t in thresholds_by_mode(prof).items()
        }

    def rule(self) -> str:
        """The selection rule in one line; one per profile, each named, when there are several."""
        rules = {name: rule_text(p.selection, thresholds_by_mode(p)) for name, p in self.profiles.items()}
        if not self.mixed:
            return next(iter(rules.values()))
        return "; ".join(f"{name} shards: {rule}" for name, rule in rules.items())

    def note(self) -> str:
        """The tiny thresholds' caveat, when the release is the tiny profile's alone."""
        return self.profiles["tiny"].free_form_thresholds.note if list(self.profiles) == ["tiny"] else ""

    def threshold_figures(self, lake: Lake, s3_settings: dict | None) -> dict[str, bytes]:
        """PNG name -> bytes: the threshold plots (analysis/plots.py) of each profile over its own scored shards."""
        figures: dict[str, bytes] = {}
        for name, prof in self.profiles.items():
            scored = [s for s in self.shards.get(name, []) if lake.exists("metric_scores", s)]
            if scored:
                plots = lake_threshold_plots(lake, s3_settings, prof, scored).pngs
                figures.update({(f"{name}_{f}" if self.mixed else f): png for f, png in plots.items()})
        return figures
