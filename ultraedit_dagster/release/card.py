"""The release: a dataset card (README.md) over the admitted shards' `filtered_release` files, and a static HTML
gallery (no Dagster imports).

The released samples are stored once: the per-shard `filtered_release` files in the lake ARE the release's data
(docs/method.md §6). `build_release(lake, out_dir, ...)` reads them (streaming; images are never all in memory) and
writes, into a fresh local folder, only what describes them:

    README.md                     the dataset card (YAML header naming the data files for `datasets`; counts, means,
                                  histograms, thresholds, selection rule, cost per kept sample, excluded shards)
    figures/<metric>.png          histograms of the release metrics per split
    figures/thresholds_*.png      per mode, every scored candidate's metrics with the thresholds marked, and the
                                  samples kept as each threshold moves (analysis/plots.py; given by the caller)
    gallery/index.html            a sample of rows: source | edited | mask | instruction | scores
    gallery/images/*.png          the sample's images, next to the HTML
    release.json                  the machine-readable summary (counts, means, cost, data files with rows and sha256)
    release_gate.parquet          the release gate: one row per shard and condition (docs/method.md §6)

Each data file is listed with its rows per split, bytes and sha256, so a reader can verify that the file they load
is the one the card describes (a shard materialized again after the card changes its sha256 until the card is
republished, which automation does when filtered_release changes). The caller (the `release_card` asset) publishes
the folder to the lake's `release/` prefix (data paths `../filtered_release/...`) or a configured folder (data
paths are then the files' absolute lake URIs).
"""

from __future__ import annotations

import hashlib
import html
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ultraedit_dagster.lake.store import Lake, shard_relpath
from ultraedit_dagster.release.cost import ReleaseCost, cost_markdown
from ultraedit_dagster.release.schema import IMAGE_COLUMNS, RELEASE_METRICS, SPLITS
from ultraedit_dagster.scoring.metrics import THRESHOLD_METRICS

SUMMARY_COLUMNS = [
    "split",
    "uid",
    "idx",
    "shard",
    "edit_type",
    "license",
    "profile",
    *RELEASE_METRICS,
    "l1",
    "clip_model_id",
    "dinov2_model_id",
    "scorer_input_sizes",
    "editor_id",
    "llm_id",
    "captioner_id",
    "tagger_id",
    "grounder_id",
    "segmenter_id",
]
MODEL_ID_COLUMNS = [
    "editor_id",
    "llm_id",
    "captioner_id",
    "tagger_id",
    "grounder_id",
    "segmenter_id",
    "clip_model_id",
    "dinov2_model_id",
    "scorer_input_sizes",
]
RELEASE_DATA_ASSET = "filtered_release"  # its per-shard files are the release's data
SPLIT_LABEL = {"free_form": "free-form", "region": "region-based"}


@dataclass
class ReleaseSummary:
    rows: int = 0
    by_split: dict[str, int] = field(default_factory=dict)
    by_edit_type: dict[str, dict[str, int]] = field(default_factory=dict)
    by_license: dict[str, int] = field(default_factory=dict)
    means: dict[str, dict[str, float | None]] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, list[str]] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    duplicate_idx: int = 0
    duplicate_uid: int = 0
    gallery_rows: int = 0
    excluded: dict[str, list[str]] = field(default_factory=dict)  # shard left out -> reasons
    selection_rule: str = ""
    cost: dict[str, Any] = field(default_factory=dict)  # ReleaseCost.to_dict() (release/cost.py)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _gallery_pick(summary_rows: list[dict[str, Any]], n: int) -> set[int]:
    """A deterministic sample: per split, the rows with the smallest idx (idx is a hash, so this is a random draw)."""
    picked: set[int] = set()
    per_split = max(1, n // max(1, len({r["split"] for r in summary_rows})))
    for split in SPLITS:
        idxs = sorted(r["idx"] for r in summary_rows if r["split"] == split)
        picked.update(idxs[:per_split])
    return picked


def _histograms(summary_rows: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = []
    for metric in (*RELEASE_METRICS, "l1"):
        fig, ax = plt.subplots(figsize=(4, 2.6), dpi=80)
        for split in SPLITS:
            vals = [r[metric] for r in summary_rows if r["split"] == split and r[metric] is not None]
            if vals:
                ax.hist(vals, bins=30, alpha=0.6, label=f"{SPLIT_LABEL[split]} (n={len(vals)})")
        ax.set_title(metric)
        ax.set_xlabel(metric)
        ax.set_ylabel("rows")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", format="png")
        plt.close(fig)
        names.append(f"{metric}.png")
    return names


def _fmt(v: Any) -> str:
    return "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def data_file_entry(lake: Lake, shard: str, rows_by_split: Mapping[str, int], data_prefix: str) -> dict[str, Any]:
    """One data file of the release: the shard's filtered_release file, with its rows per split, bytes and sha256.
    `path` is how the card reaches it (`data_prefix` + its path in the lake); `uri` is where it lives."""
    relpath = shard_relpath(RELEASE_DATA_ASSET, shard)
    if lake.is_s3:
        data = lake.read_bytes(relpath)
        size, digest = len(data), hashlib.sha256(data).hexdigest()
    else:
        local = Path(lake.root) / relpath
        size, digest = local.stat().st_size, sha256_file(local)
    return {
        "path": f"{data_prefix}{relpath}",
        "uri": lake.shard_uri(RELEASE_DATA_ASSET, shard),
        "shard": shard,
        "rows": sum(rows_by_split.values()),
        "rows_by_split": dict(sorted(rows_by_split.items())),
        "bytes": size,
        "sha256": digest,
    }


def build_release(
    lake: Lake,
    out_dir: str | Path,
    *,
    thresholds: Mapping[str, Any],
    profile_note: str = "",
    gallery_size: int = 24,
    title: str = "ultraedit-dagster release",
    batch_size: int = 64,
    shards: list[str] | None = None,
    excluded: Mapping[str, list[str]] | None = None,
    gate_rows: list[dict[str, Any]] | None = None,
    selection_rule: str = "",
    data_prefix: str = "../",
    cost: ReleaseCost | None = None,
    threshold_figures: Mapping[str, bytes] | None = None,
) -> ReleaseSummary:
    """Write the release folder (see module docstring) and return its summary. `thresholds`: split -> Thresholds.
    `shards`: the shards the release gate admitted (None: every filtered_release shard in the lake, for callers
    without a gate); `excluded`: shard -> reasons, listed on the card; `gate_rows`: the `release_gate` table;
    `data_prefix`: what makes a lake path reachable from the published card ("../" when the card is published in
    the lake's `release/`, the lake root + "/" elsewhere); `cost`: the release's cost (release/cost.py);
    `threshold_figures`: PNG name -> bytes, the threshold plots over the admitted shards' scored candidates."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = ReleaseSummary()
    shards = sorted(lake.list_shards(RELEASE_DATA_ASSET) if shards is None else shards)
    summary.shards = shards
    summary.excluded = {k: list(v) for k, v in sorted((excluded or {}).items())}
    summary.selection_rule = selection_rule
    summary.cost = cost.to_dict() if cost is not None else {}

    # pass 1: the small columns of every row (stats, sample choice, uniqueness, rows per file and split)
    rows: list[dict[str, Any]] = []
    for shard in shards:
        for batch in lake.iter_batches(RELEASE_DATA_ASSET, shard, batch_size=4096, columns=SUMMARY_COLUMNS):
            rows.extend(batch.to_pylist())
    summary.rows = len(rows)
    summary.by_split = dict(Counter(r["split"] for r in rows))
    et: dict[str, dict[str, int]] = defaultdict(dict)
    for (etype, split), c in Counter((r["edit_type"], r["split"]) for r in rows).items():
        et[etype or "unknown"][split] = c
    summary.by_edit_type = dict(sorted(et.items()))
    summary.by_license = dict(Counter(r["license"] or "unknown" for r in rows).most_common())
    for split in SPLITS:
        sr = [r for r in rows if r["split"] == split]
        summary.means[split] = {
            m: (float(np.mean([r[m] for r in sr if r[m] is not None])) if any(r[m] is not None for r in sr) else None)
            for m in (*RELEASE_METRICS, "l1")
        }
    summary.models = {c: sorted({r[c] for r in rows if r[c]}) for c in MODEL_ID_COLUMNS}
    summary.profiles = sorted({r["profile"] for r in rows if r["profile"]})
    summary.duplicate_idx = len(rows) - len({r["idx"] for r in rows})
    summary.duplicate_uid = len(rows) - len({r["uid"] for r in rows})
    gallery_idx = _gallery_pick(rows, gallery_size)
    figures = _histograms(rows, out / "figures")
    threshold_names = []
    for name, png in (threshold_figures or {}).items():
        threshold_names.append(f"thresholds_{name}")
        (out / "figures" / threshold_names[-1]).write_bytes(png)
    split_counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        split_counts[r["shard"]][r["split"]] += 1

    # pass 2: the data files are referenced, not copied; only the gallery's sampled images are extracted
    gallery_dir = out / "gallery"
    (gallery_dir / "images").mkdir(parents=True, exist_ok=True)
    gallery: list[dict[str, Any]] = []
    wanted = pa.array(sorted(gallery_idx), pa.int64())
    for shard in shards:
        if not split_counts.get(shard):  # an admitted shard that kept nothing has no data to list (or to load)
            continue
        summary.files.append(data_file_entry(lake, shard, split_counts[shard], data_prefix))
        if not gallery_idx:
            continue
        for batch in lake.iter_batches(RELEASE_DATA_ASSET, shard, batch_size=batch_size):
            table = pa.Table.from_batches([batch])
            for row in table.filter(pa.compute.is_in(table["idx"], wanted)).to_pylist():
                entry = {
                    k: row[k]
                    for k in (
                        "idx",
                        "split",
                        "edit_type",
                        "edit_prompt",
                        "source_caption",
                        "target_caption",
                        "edit_object",
                        *RELEASE_METRICS,
                        "l1",
                    )
                }
                for col in IMAGE_COLUMNS:
                    cell = row[col]
                    if cell and cell.get("bytes"):
                        name = f"{row['idx']}_{col}.png"
                        (gallery_dir / "images" / name).write_bytes(cell["bytes"])
                        entry[col] = f"images/{name}"
                    else:
                        entry[col] = None
                gallery.append(entry)
    gallery.sort(key=lambda e: (e["split"], e["idx"]))
    summary.gallery_rows = len(gallery)
    (gallery_dir / "index.html").write_text(gallery_html(gallery, title), encoding="utf-8")
    card = card_markdown(
        summary, thresholds, figures, title, profile_note, cost=cost, threshold_figures=threshold_names
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    (out / "release.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str), encoding="utf-8")
    if gate_rows is not None:
        pq.write_table(gate_table(gate_rows), str(out / "release_gate.parquet"))
    make_readable(out)
    return summary


GATE_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("asset", pa.string()),
        ("run_id", pa.string()),
        ("check", pa.string()),
        ("passed", pa.bool_()),
        ("evaluated_at", pa.float64()),
        ("detail", pa.string()),
        ("included", pa.bool_()),
    ]
)


def gate_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in GATE_SCHEMA.names} for r in rows], schema=GATE_SCHEMA)


def make_readable(folder: Path) -> None:
    """Folders 0755, files 0644, like the rest of the lake (a temporary directory starts as 0700)."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def card_markdown(
    s: ReleaseSummary,
    thresholds: Mapping[str, Any],
    figures: list[str],
    title: str,
    profile_note: str = "",
    cost: ReleaseCost | None = None,
    threshold_figures: list[str] | None = None,
) -> str:
    yaml = [
        "---",
        "license: other",
        "task_categories:",
        "- image-to-image",
        f"pretty_name: {title}",
    ]
    if s.files:  # one file per shard holds both splits; the `split` column says which (docs/method.md §6)
        yaml += ["configs:", "- config_name: default", "  data_files:", "  - split: train", "    path:"]
        yaml += [f"    - {f['path']}" for f in s.files]
    yaml.append("---")
    lines = [
        *yaml,
        "",
        f"# {title}",
        "",
        "Instruction-based image-editing pairs made by ultraedit-dagster, following UltraEdit "
        "(arXiv 2407.05282): columns `clip_sim_source`, `clip_sim_target`, `clip_sim_dir`, `clip_sim_image`, "
        "`dinov2_sim`, `ssim`, `source_caption`, `target_caption`, `edit_prompt`, `edit_object`, `idx`, "
        "`source_image`, `edited_image`, `mask_image`, plus provenance columns (uid, shard, edit type, seed, "
        "p, steps, guidance, the model id of every stage, profile, caption variants, original URI, licence).",
        "",
        "The source image is generated (regenerated from the source caption), not the original photo.",
        "",
    ]
    if profile_note:
        lines += [f"> **Profile note:** {profile_note}", ""]
    lines += [
        "## Counts",
        "",
        f"Total rows: **{s.rows}** from {len(s.shards)} shard(s); profile(s): {', '.join(s.profiles) or '—'}.",
        "",
        "| split | rows |",
        "|---|---|",
    ]
    lines += [f"| {sp} | {s.by_split.get(sp, 0)} |" for sp in SPLITS]
    lines += ["", "### By edit type", "", "| edit type | free_form | region |", "|---|---|---|"]
    lines += [f"| {et} | {c.get('free_form', 0)} | {c.get('region', 0)} |" for et, c in s.by_edit_type.items()]
    lines += ["", "### By licence", "", "| licence | rows |", "|---|---|"]
    lines += [f"| {lic} | {c} |" for lic, c in s.by_license.items()]
    lines += [
        "",
        "Mixed licences: check each row's `license` before redistribution.",
        "",
        "## Metric means",
        "",
        "| metric | free_form | region |",
        "|---|---|---|",
    ]
    for m in (*RELEASE_METRICS, "l1"):
        lines.append(
            f"| {m} | {_fmt(s.means.get('free_form', {}).get(m))} | {_fmt(s.means.get('region', {}).get(m))} |"
        )
    lines += [
        "",
        "UltraEdit reports CLIPin 0.2834, CLIPout 0.3049, CLIPdir 0.2950, CLIPimg 0.8427, SSIM 0.6401, "
        "DINOv2 0.7231 for its release (docs/method.md §5).",
        "",
        "### Histograms",
        "",
    ]
    lines += [f"![{f[:-4]}](figures/{f})" for f in figures]
    if threshold_figures:
        lines += [
            "",
            "### How the thresholds select: every scored candidate",
            "",
            "Per mode, the distribution of each metric over all scored candidates of the admitted shards (not only "
            "the released rows), with the thresholds above marked, and the samples the selection rule keeps as one "
            "threshold moves while the others stay at these values (docs/method.md §5).",
            "",
        ]
        lines += [f"![{f[:-4]}](figures/{f})" for f in threshold_figures]
    lines += ["", "## Shards", ""]
    lines.append(
        f"{len(s.shards)} shard(s) passed the release gate (every blocking check passed on the shard's latest "
        "materialization, nothing upstream changed since, no uid repeated): " + (", ".join(s.shards) or "none") + "."
    )
    if s.excluded:
        lines += [
            "",
            f"**{len(s.excluded)} shard(s) left out of this release:**",
            "",
            "| shard | why |",
            "|---|---|",
        ]
        lines += [f"| {shard} | {'; '.join(reasons)} |" for shard, reasons in s.excluded.items()]
    lines += ["", "The gate's rows are in `release_gate.parquet` (shard, asset, run_id, check, passed, evaluated_at)."]
    lines += [
        "",
        "## Thresholds",
        "",
        "A candidate passes when every metric reaches its minimum and its L1 lies inside the mode's band (no no-op "
        "pairs, no pairs that changed everything); SSIM is recorded, not filtered.",
        "",
        "| metric | " + " | ".join(thresholds) + " |",
        "|---|" + "---|" * len(thresholds),
    ]
    for m in THRESHOLD_METRICS:
        lines.append(f"| {m} | " + " | ".join(f"≥ {getattr(t, m)}" for t in thresholds.values()) + " |")
    lines.append("| l1 band | " + " | ".join(f"{t.min_l1} ≤ l1 ≤ {t.max_l1}" for t in thresholds.values()) + " |")
    notes = {getattr(t, "note", "") for t in thresholds.values()} - {""}
    lines += [f"Note: {n}" for n in sorted(notes)]
    if s.selection_rule:
        lines += ["", "## Selection rule", "", s.selection_rule.replace("; ", "\n- ").join(["- ", ""]), ""]
        lines += ["Every release row carries `thresholds`, `selection_rule` and `rule_version`."]
    lines += ["", "## Models", "", "| stage | model ids |", "|---|---|"]
    lines += [f"| {k} | {', '.join(v) or '—'} |" for k, v in s.models.items()]
    if cost is not None:
        lines += ["", *cost_markdown(cost)]
    lines += [
        "",
        "## Files",
        "",
        "The release's data are the admitted shards' `filtered_release` files in the lake, stored once and listed "
        "here with their checksums; each holds both splits (column `split`: free_form or region).",
        "",
        "| file | free_form | region | bytes | sha256 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {f['path']} | {f['rows_by_split'].get('free_form', 0)} | {f['rows_by_split'].get('region', 0)} "
        f"| {f['bytes']} | `{f['sha256']}` |"
        for f in s.files
    ]
    lines += [
        "",
        'Load it with `datasets.load_dataset("parquet", data_files=[...the files above...])["train"]` and '
        '`.filter(lambda r: r["split"] == "region")` for one split, or in DuckDB: '
        "`SELECT * FROM read_parquet([...the files above...]) WHERE split = 'region'`; the image columns "
        "decode to PIL images.",
        "",
        "## Gallery",
        "",
        f"[gallery/index.html](gallery/index.html): {s.gallery_rows} sampled rows.",
        "",
    ]
    if s.duplicate_idx or s.duplicate_uid:
        lines += [f"**Warning:** {s.duplicate_idx} duplicate idx, {s.duplicate_uid} duplicate uid.", ""]
    return "\n".join(lines)


_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
</script>"""


def gallery_html(entries: list[dict[str, Any]], title: str) -> str:
    e = html.escape
    rows = []
    for r in entries:
        cells = []
        for col in IMAGE_COLUMNS:
            cells.append(
                f'<td><img src="{e(r[col])}" alt="{col}" width="192"></td>'
                if r.get(col)
                else '<td class="none">no mask (free-form)</td>'
            )
        scores = "<br>".join(f"{m}: {_fmt(r.get(m))}" for m in (*RELEASE_METRICS, "l1"))
        text = (
            f"<b>{e(r['edit_prompt'] or '')}</b><br><i>{e(r['source_caption'] or '')}</i> → "
            f"<i>{e(r['target_caption'] or '')}</i><br>{e(r['split'])} · {e(r['edit_type'] or '')}"
            + (f" · object: {e(r['edit_object'])}" if r.get("edit_object") else "")
            + f"<br>idx {r['idx']}"
        )
        rows.append(f"<tr>{''.join(cells)}<td>{text}</td><td class=s>{scores}</td></tr>")
    body = "\n".join(rows) or '<tr><td colspan="5">The release is empty.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} gallery</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px;vertical-align:top;font-size:13px}}td.s{{font-family:monospace;font-size:11px}}td.none{{color:#888}}</style>
</head><body>
<h1>{e(title)}: {len(entries)} sampled rows</h1>
<table><thead><tr><th>source</th><th>edited</th><th>mask</th><th>instruction</th><th>scores</th></tr></thead>
<tbody>
{body}
</tbody></table>
{_SCRIPT}
</body></html>
"""
