"""Scoring stage: CLIP / DINOv2 / SSIM / L1 metrics of every edit candidate, with pass flags per threshold.

`metric_scores` is produced together with `edit_candidates` by the fused generate-and-score step
(`editing.assets.candidates_and_scores`, docs/method.md §8): the generated pairs are scored in memory, never written
and read back for scoring. This module keeps the asset's importable name (its key) for the checks."""

import dagster as dg

metric_scores = dg.AssetKey("metric_scores")

assets: list = []  # the multi-asset lives in editing.assets
