"""Plots for choosing thresholds (docs/method.md §5), pure: no Dagster imports.

Per mode, over ALL scored candidates (metric_scores, status ok), not only the released rows:

- `histograms`: one panel per metric with the active profile's thresholds marked (a line per minimum, two for the
  L1 band, none for SSIM, which has no threshold); NaN / infinite scores are counted in the panel title, not drawn.
- `tradeoff`: one panel per threshold, the samples the selection rule would keep as that threshold moves while
  the others stay at the profile's values, with the profile's threshold and "+20% kept" marked.

The kept counts come from `KEPT_SQL`, the rule threshold_sweep and the release apply (release/selection.py):
eligible = status ok, every metric finite and inside its valid range, L1 inside the mode's band, every threshold
met; free-form keeps min(passing, top k) per triplet, region min(passing, top k) when at least `region_min_passing`
pass. At the profile's own thresholds a curve therefore equals what the release kept.

`embedded_markdown` turns PNGs into markdown with data URLs for the Dagster UI (bounded in bytes, like
core.imaging's previews), and `card_markdown_for_ui` does it for the release card's relative `figures/*.png`
links, which the UI cannot resolve.
"""

import base64
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, METRIC_RANGES, THRESHOLD_METRICS

MODES = ("free_form", "region")
MORE_KEPT = 1.2  # the analyst guide's question: which threshold buys 20% more samples at the least quality cost
# One materialization of threshold_plots lives in the instance database for every warehouse refresh: the UI copies
# of its four figures stay within this many PNG bytes in all (base64 adds a third); full-size PNGs go to the lake.
MAX_EMBEDDED_BYTES = 160_000
CARD_TEXT_LIMIT = 20_000  # characters of card text shown in the UI (the card itself is published in full)


def _base_eligibility(alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    ranged = " and ".join(
        f"isfinite({p}{m}) and {p}{m} between {METRIC_RANGES[m][0]} and {METRIC_RANGES[m][1]}" for m in METRIC_COLUMNS
    )
    return f"{p}status = 'ok' and {ranged} and {p}l1 between $min_l1 and $max_l1"


# Samples kept per grid value of one metric (`{metric}`), the other thresholds fixed; $-parameters are bound.
KEPT_SQL = """
with eligible as (
    select instruction_uid, {metric} as v
    from {relation}
    where mode = $mode and {eligibility} {others}
),
grid as (select unnest($grid::double[]) as x),
per_triplet as (
    select g.x, e.instruction_uid, count(*) as passing
    from grid g join eligible e on e.v >= g.x
    group by all
)
select g.x,
       coalesce(sum(case when p.passing >= $min_passing then least(p.passing, $top_k) else 0 end), 0)::bigint
from grid g left join per_triplet p using (x)
group by g.x
order by g.x
"""


def thresholds_of(profile: Any, mode: str) -> Any:
    return profile.region_thresholds if mode == "region" else profile.free_form_thresholds


def rule_of(profile: Any, mode: str) -> tuple[int, int]:
    """(top k, minimum passing) of the mode's selection rule."""
    s = profile.selection
    return (s.region_top_k, s.region_min_passing) if mode == "region" else (s.free_form_top_k, 1)


def kept_curve(
    con: duckdb.DuckDBPyConnection, relation: str, profile: Any, mode: str, metric: str, grid: Sequence[float]
) -> list[tuple[float, int]]:
    """[(threshold value, samples kept)] as `metric`'s minimum takes each grid value, the others at the profile's."""
    t = thresholds_of(profile, mode)
    top_k, min_passing = rule_of(profile, mode)
    others = "".join(f" and {m} >= {float(getattr(t, m))!r}" for m in THRESHOLD_METRICS if m != metric)
    sql = KEPT_SQL.format(metric=metric, relation=relation, eligibility=_base_eligibility(), others=others)
    params = {
        "mode": mode,
        "grid": [float(x) for x in grid],
        "min_l1": float(t.min_l1),
        "max_l1": float(t.max_l1),
        "top_k": int(top_k),
        "min_passing": int(min_passing),
    }
    return [(float(x), int(k)) for x, k in con.execute(sql, params).fetchall()]


def curve_grid(values: np.ndarray, threshold: float, points: int = 41) -> list[float]:
    """Quantiles of the metric's finite values (so the curve is dense where candidates are) plus the threshold."""
    finite = values[np.isfinite(values)]
    grid = set(np.quantile(finite, np.linspace(0.0, 1.0, points)).round(6).tolist()) if finite.size else set()
    return sorted(grid | {float(threshold)})


@dataclass
class ModeData:
    mode: str
    values: dict[str, np.ndarray]  # metric -> scored candidates' values (NaN kept, to be counted)
    curves: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    kept_at_profile: int = 0


def load_mode(con: duckdb.DuckDBPyConnection, relation: str, profile: Any, mode: str) -> ModeData:
    """The mode's scored candidates (status ok) and a kept-samples curve per threshold."""
    cols = ", ".join(METRIC_COLUMNS)
    rows = con.execute(f"select {cols} from {relation} where status = 'ok' and mode = $mode", {"mode": mode})
    table = rows.fetchnumpy()
    # a NULL score arrives masked: count it with the NaNs (not finite, not drawn)
    values = {m: np.ma.asarray(table[m], dtype=float).filled(np.nan) for m in METRIC_COLUMNS}
    data = ModeData(mode, values)
    t = thresholds_of(profile, mode)
    for metric in THRESHOLD_METRICS:
        threshold = float(getattr(t, metric))
        data.curves[metric] = kept_curve(con, relation, profile, mode, metric, curve_grid(values[metric], threshold))
    threshold = float(t.clip_sim_dir)
    data.kept_at_profile = dict(data.curves["clip_sim_dir"]).get(threshold, 0)
    return data


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: figures only become PNG bytes
    import matplotlib.pyplot as plt

    return plt


def histogram_figure(data: ModeData, profile: Any):
    """One panel per metric: the scored candidates' histogram and the profile's thresholds as vertical lines."""
    plt = _pyplot()
    t = thresholds_of(profile, data.mode)
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.6), dpi=100)
    fig.suptitle(f"{data.mode}: every scored candidate, thresholds of profile {profile.name}")
    for ax, metric in zip(axes.flat, METRIC_COLUMNS, strict=False):
        vals = data.values[metric]
        finite = vals[np.isfinite(vals)]
        bad = int(vals.size - finite.size)
        ax.hist(finite, bins=40, color="#4c72b0", alpha=0.85, label="scored candidates")
        if metric in THRESHOLD_METRICS:
            marks = [(float(getattr(t, metric)), f"min {getattr(t, metric)}")]
        elif metric == "l1":
            marks = [(float(t.min_l1), f"min {t.min_l1}"), (float(t.max_l1), f"max {t.max_l1}")]
        else:
            marks = []  # SSIM has no threshold
        for x, label in marks:
            ax.axvline(x, color="#c44e52", linestyle="--", linewidth=1.5, label=label, gid="threshold")
        ax.set_title(f"{metric} (n={finite.size}" + (f", {bad} NaN/inf not shown)" if bad else ")"), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    axes.flat[-1].axis("off")
    fig.tight_layout()
    return fig


def tradeoff_figure(data: ModeData, profile: Any):
    """One panel per threshold: samples kept as it moves (the others at the profile's values)."""
    plt = _pyplot()
    t = thresholds_of(profile, data.mode)
    top_k, min_passing = rule_of(profile, data.mode)
    fig, axes = plt.subplots(1, len(THRESHOLD_METRICS), figsize=(16, 3.6), dpi=100)
    rule = f"top {top_k}" + (f", at least {min_passing} passing" if data.mode == "region" else "")
    fig.suptitle(f"{data.mode}: samples kept as one threshold moves (others at profile {profile.name}; {rule})")
    for ax, metric in zip(axes, THRESHOLD_METRICS, strict=True):
        curve = data.curves[metric]
        xs = [x for x, _ in curve]
        ax.plot(xs, [k for _, k in curve], color="#4c72b0", linewidth=1.8, label="kept samples", gid="kept")
        ax.axvline(float(getattr(t, metric)), color="#c44e52", linestyle="--", label="profile", gid="threshold")
        target = data.kept_at_profile * MORE_KEPT
        ax.axhline(target, color="#55a868", linestyle=":", label=f"+{MORE_KEPT - 1:.0%} kept", gid="target")
        ax.set_xlabel(f"min {metric}", fontsize=8)
        ax.set_ylabel("kept samples", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def figure_pngs(fig, thumbnail_dpi: int = 70) -> tuple[bytes, bytes]:
    """(full-size PNG, small palette PNG for the UI) of a figure, which is closed afterwards."""
    plt = _pyplot()
    full, small = io.BytesIO(), io.BytesIO()
    fig.savefig(full, format="png")
    fig.savefig(small, format="png", dpi=thumbnail_dpi)
    plt.close(fig)
    return full.getvalue(), _shrink_png(small.getvalue(), max_side=10_000)


@dataclass
class PlotSet:
    pngs: dict[str, bytes]  # file name -> full-size PNG
    thumbnails: dict[str, bytes]  # file name -> small PNG for the UI
    kept_at_profile: dict[str, int]
    scored: dict[str, int]


def threshold_plots(con: duckdb.DuckDBPyConnection, relation: str, profile: Any) -> PlotSet:
    """Both modes' histogram and trade-off figures from `relation` (metric_scores' rows: a view, or
    read_parquet(...) over the lake)."""
    out = PlotSet({}, {}, {}, {})
    for mode in MODES:
        data = load_mode(con, relation, profile, mode)
        out.kept_at_profile[mode] = data.kept_at_profile
        out.scored[mode] = int(data.values["clip_sim_dir"].size)
        for kind, make in (("histograms", histogram_figure), ("tradeoff", tradeoff_figure)):
            name = f"{mode}_{kind}.png"
            out.pngs[name], out.thumbnails[name] = figure_pngs(make(data, profile))
    return out


def lake_threshold_plots(
    lake: Any, s3_settings: Mapping[str, Any] | None, profile: Any, shards: Sequence[str] | None = None
) -> PlotSet:
    """`threshold_plots` over the lake's metric_scores Parquet (`shards`: those shards' files; None: every shard),
    through an in-memory DuckDB: never the warehouse file, which has one writer at a time."""
    from ultraedit_dagster.lake.warehouse import CONNECTION_CONFIG, configure_lake_access, sql_string

    files = lake.asset_glob("metric_scores") if shards is None else [lake.shard_uri("metric_scores", s) for s in shards]
    source = sql_string(files) if isinstance(files, str) else "[" + ", ".join(sql_string(f) for f in files) + "]"
    con = duckdb.connect(config=dict(CONNECTION_CONFIG))
    try:
        configure_lake_access(con, lake, s3_settings)
        return threshold_plots(con, f"read_parquet({source}, union_by_name = true)", profile)
    finally:
        con.close()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def embedded_markdown(images: Mapping[str, bytes], max_bytes: int = MAX_EMBEDDED_BYTES) -> str:
    """Markdown showing each PNG inline (data URL) while the running total stays within `max_bytes`; an image
    past the budget is named instead, with where to find it."""
    lines, used = [], 0
    for name, png in images.items():
        if used + len(png) <= max_bytes:
            lines.append(f"![{name}]({data_url(png)})")
            used += len(png)
        else:
            lines.append(f"*{name}: not embedded here ({len(png)} bytes past the UI budget); see the lake copy*")
    return "\n\n".join(lines)


_FIGURE_LINK = re.compile(r"!\[([^\]]*)\]\((figures/[A-Za-z0-9_.-]+\.png)\)")


def card_markdown_for_ui(card: str, folder: str | Path, max_bytes: int = MAX_EMBEDDED_BYTES) -> str:
    """The release card for the Dagster UI: its text (YAML header dropped, cut at CARD_TEXT_LIMIT characters of
    text) with each relative `figures/x.png` link replaced in place by the figure itself (a data URL, shrunk to a
    thumbnail), within `max_bytes` in all. The published card keeps its relative links."""
    body = card.split("---", 2)[-1] if card.startswith("---") else card
    links: list[tuple[str, str]] = []

    def token(m: re.Match) -> str:
        links.append((m.group(1), m.group(2)))
        return f"\x00{len(links) - 1}\x00"

    text = _FIGURE_LINK.sub(token, body)
    if len(text) > CARD_TEXT_LIMIT:  # counted without the images, which have their own budget
        text = text[:CARD_TEXT_LIMIT] + "\n\n*(card cut here for the UI; the published README.md has all of it)*"
    used = 0
    for i, (alt, rel) in enumerate(links):
        path = Path(folder) / rel
        if f"\x00{i}\x00" not in text:
            continue
        if not path.is_file():
            shown = f"*{alt}: {rel} is missing*"
        else:
            png = _shrink_png(path.read_bytes())
            if used + len(png) <= max_bytes:
                shown, used = f"![{alt}]({data_url(png)})", used + len(png)
            else:
                shown = f"*{alt}: not embedded here (past the UI budget); see {rel} beside the published card*"
        text = text.replace(f"\x00{i}\x00", shown)
    return re.sub("\x00[0-9]+\x00?", "", text)


def _shrink_png(png: bytes, max_side: int = 480) -> bytes:
    """At most `max_side` pixels a side, 64 colours (a chart needs few): about a third of matplotlib's RGBA PNG."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.convert("RGB").quantize(colors=64).save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(png) else png
