"""Scoring stage: CLIP / DINOv2 / SSIM / L1 metrics of every candidate (docs/method.md §5)."""
