"""Building `metric_scores` rows from `edit_candidates` rows (pure: no Dagster). The scorer is anything with a
`score(sources, targets, source_captions, target_captions)` method (resources.scorer.ScorerResource).

The fused generate-and-score step (docs/method.md §8) passes the generated pixels in memory (`images=`), so nothing is
PNG-encoded just to be decoded again; the pixels are the ones a stored PNG would hold (PNG is lossless), so the scores
are the same either way. Besides the metrics every row has the candidate's typed `outcome` (docs/method.md §5), the
generation `round`, and its generation work in UNet row-steps (2 rows, 4 with CFG, times the denoising steps run): a
deterministic cost, so a re-run stays byte-identical; measured model seconds per shard are in the step's metadata
(docs/method.md §8)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ultraedit_dagster.core.imaging import decode_png
from ultraedit_dagster.core.rows import mark_failed
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, THRESHOLD_METRICS, pass_flags

UPSTREAM_ASSETS = ("source_images", "captions", "edit_instructions", "region_masks", "edit_candidates")
PASS_COLUMNS = [f"pass_{m}" for m in THRESHOLD_METRICS] + ["pass_all"]

METRIC_SCORES_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("candidate_uid", "instruction_uid", "image_uid", "shard", "mode", "edit_type")]
    + [(m, pa.float64()) for m in METRIC_COLUMNS]
    + [(c, pa.bool_()) for c in PASS_COLUMNS]
    + [
        (c, pa.string())
        for c in ("thresholds", "clip_model_id", "dinov2_model_id", "scorer_input_sizes", "status", "error", "profile")
    ]
    + [
        ("outcome", pa.string()),
        ("round", pa.int64()),
        ("unet_row_steps", pa.int64()),
        ("recipe", pa.string()),  # the edit_candidates row's recipe and version (docs/method.md §12)
        ("recipe_version", pa.string()),
    ]
)
CANDIDATE_COLUMNS = [
    "candidate_uid",
    "instruction_uid",
    "image_uid",
    "shard",
    "mode",
    "edit_type",
    "source_caption",
    "target_caption",
    "source_image",
    "target_image",
    "status",
    "error",
]


def upstream_error(error: str | None, asset: str = "edit_candidates") -> str:
    """Carry an upstream failure: keep an error that already names its asset, else prefix `asset: `."""
    error = error or "failed upstream (no reason given)"
    return error if any(error.startswith(f"{a}:") for a in UPSTREAM_ASSETS) else f"{asset}: {error}"


def thresholds_for(profile: Any, mode: str) -> Any:
    return profile.region_thresholds if mode == "region" else profile.free_form_thresholds


def thresholds_text(t: Any) -> str:
    return ", ".join(f"{m}>={getattr(t, m)}" for m in THRESHOLD_METRICS)


def first_failed_threshold(row: Mapping[str, Any]) -> str | None:
    """The first thresholded metric (docs/method.md §5 order) whose pass flag is false, or None when all pass."""
    for m in THRESHOLD_METRICS:
        if not row.get(f"pass_{m}"):
            return m
    return None


def score_rows(
    rows: Sequence[Mapping[str, Any]],
    scorer: Any,
    profile: Any,
    ids: Mapping[str, str],
    images: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
) -> list[dict[str, Any]]:
    """metric_scores rows for a batch of edit_candidates rows (same order). `ids`: clip_model_id,
    dinov2_model_id, scorer_input_sizes. `images`: per row the (source, target) uint8 HxWx3 pixels already in memory
    (the fused step); without it they are decoded from the rows' PNG bytes."""
    out: list[dict[str, Any]] = []
    todo: list[tuple[int, np.ndarray, np.ndarray]] = []
    for i, row in enumerate(rows):
        base = {
            "candidate_uid": row["candidate_uid"],
            "instruction_uid": row.get("instruction_uid"),
            "image_uid": row.get("image_uid"),
            "shard": row.get("shard"),
            "mode": row.get("mode"),
            "edit_type": row.get("edit_type"),
            **{m: None for m in METRIC_COLUMNS},
            **{c: False for c in PASS_COLUMNS},
            "thresholds": thresholds_text(thresholds_for(profile, row.get("mode"))),
            **ids,
            "status": "ok",
            "error": None,
            "profile": profile.name,
            "recipe": row.get("recipe"),
            "recipe_version": row.get("recipe_version"),
        }
        out.append(base)
        if row.get("status") != "ok":
            mark_failed(base, upstream_error(row.get("error")))
            continue
        try:
            if images is not None:
                if images[i] is None:
                    raise ValueError("no images for an ok candidate")
                src, tgt = images[i]
            else:
                src = np.asarray(decode_png(row["source_image"]).convert("RGB"))
                tgt = np.asarray(decode_png(row["target_image"]).convert("RGB"))
        except Exception as exc:
            mark_failed(base, f"metric_scores: cannot decode images: {type(exc).__name__}: {exc}")
            continue
        if src.shape != tgt.shape:
            mark_failed(base, f"metric_scores: source {src.shape} and target {tgt.shape} differ in size")
            continue
        todo.append((i, src, tgt))
    if todo:
        scores = scorer.score(
            [s for _, s, _ in todo],
            [t for _, _, t in todo],
            [rows[i].get("source_caption") or "" for i, _, _ in todo],
            [rows[i].get("target_caption") or "" for i, _, _ in todo],
        )
        for k, (i, _, _) in enumerate(todo):
            values = {m: float(scores[m][k]) for m in METRIC_COLUMNS}
            bad = [m for m, v in values.items() if math.isnan(v) or math.isinf(v)]
            out[i].update(values)
            if bad:
                out[i].update(
                    {m: None for m in bad}, status="failed", error=f"metric_scores: non-finite {', '.join(bad)}"
                )
                continue
            out[i].update(pass_flags(values, thresholds_for(profile, rows[i].get("mode"))))
    return out
