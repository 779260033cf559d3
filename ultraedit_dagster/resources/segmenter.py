"""The segmenter: SAM prompted with all boxes of an image at once, masks merged by max, loaded lazily."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

import dagster as dg

from ..profiles import Profile
from ..devices import resolve_device, use_fp16


class SegmenterResource(dg.ConfigurableResource):
    """segment-anything's SamPredictor (reference.md §4). `model_type`: vit_h / vit_l / vit_b (built exactly as
    segment_anything builds them) or `tiny` (same modelling classes, small config); `checkpoint`: the .pth file,
    loaded with `torch.load(weights_only=True)`; empty means random weights (only for `tiny`). On GPU SAM runs under
    fp16 autocast."""

    model_type: str = "tiny"
    checkpoint: str = ""
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1  # SamPredictor embeds one image at a time
    seed: int = 0

    _segmenter: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "SegmenterResource":
        kwargs: dict[str, Any] = dict(model_type=profile.sam_model_type, checkpoint=profile.sam_checkpoint)
        kwargs.update(overrides)
        return cls(**kwargs)

    def load(self):
        if self._segmenter is None:
            if self.model_type != "tiny" and not self.checkpoint:
                raise ValueError(f"SAM {self.model_type} needs a checkpoint file (only 'tiny' is built random)")
            from ..models.segmenter import load_segmenter

            device = resolve_device(self.device)
            self._segmenter = load_segmenter(
                self.model_type, self.checkpoint or None, device=device, fp16=use_fp16(self.dtype, device),
                seed=self.seed,
            )
        return self._segmenter

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def segment(self, image_rgb, boxes):
        """The fine mask (bool HxW) for one image and its boxes (xyxy pixels)."""
        return self.load().segment(image_rgb, boxes)
