"""The grounder: GroundingDINO (transformers) turning the selected object phrase into boxes, loaded lazily."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

import dagster as dg

from ..devices import resolve_device, use_fp16
from ..profiles import Profile


class GrounderResource(dg.ConfigurableResource):
    """GroundingDINO open-set detection (reference.md §4). `model`: a hub id (`IDEA-Research/grounding-dino-base`),
    a local folder written by `save_pretrained` (model and processor together), or `tiny` (seeded random, small
    config). Boxes whose best token score exceeds `box_threshold` (0.30) are kept and labelled with the tokens above
    `text_threshold` (0.25); `max_boxes` > 0 keeps only the best ones. On GPU the model runs under fp16 autocast."""

    model: str = "tiny"
    box_threshold: float = 0.30
    text_threshold: float = 0.25
    max_boxes: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    seed: int = 0

    _grounder: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "GrounderResource":
        rm = profile.region_masking
        kwargs: dict[str, Any] = dict(
            model=profile.grounder_model, box_threshold=rm.box_threshold, text_threshold=rm.text_threshold,
            max_boxes=rm.max_boxes,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def load(self):
        if self._grounder is None:
            from ..models.grounder import load_grounder

            device = resolve_device(self.device)
            self._grounder = load_grounder(self.model, device=device, fp16=use_fp16(self.dtype, device), seed=self.seed)
        return self._grounder

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def detect(self, images: list, texts: list[str]) -> list:
        """One `Detection` per (image, text) pair, batched by `batch_size`."""
        grounder = self.load()
        out = []
        for start in range(0, len(images), max(1, self.batch_size)):
            out += grounder.detect(
                images[start:start + self.batch_size], texts[start:start + self.batch_size],
                box_threshold=self.box_threshold, text_threshold=self.text_threshold, max_boxes=self.max_boxes,
            )
        return out
