"""The tagger: zero-shot open_clip tagging over the shipped object vocabulary, loaded lazily."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

import dagster as dg

from ..profiles import Profile
from ..devices import resolve_device, resolve_dtype


class TaggerResource(dg.ConfigurableResource):
    """Tags images with the nouns of `vocabulary_path` (default: the shipped ultraedit_dagster/data/
    object_vocabulary.txt) by CLIP zero-shot classification (stands in for Recognize Anything, which the package
    registry does not carry). `clip_model` / `clip_pretrained`: an open_clip name and pretrained tag or checkpoint
    file; `tiny` / `random` builds a seeded random model. Keeps tags with softmax probability >= `min_score`, best
    first, at most `max_tags`."""

    clip_model: str = "tiny"
    clip_pretrained: str = "random"
    vocabulary_path: str = ""
    min_score: float = 0.02
    max_tags: int = 20
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 32
    seed: int = 0

    _tagger: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "TaggerResource":
        rm = profile.region_masking
        kwargs: dict[str, Any] = dict(
            clip_model=profile.tagger_clip_model, clip_pretrained=profile.tagger_clip_pretrained,
            min_score=rm.tag_min_score, max_tags=rm.max_tags,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def load(self):
        if self._tagger is None:

            from ..models.tagger import load_tagger
            from ..object_selection import load_vocabulary

            device = resolve_device(self.device)
            dtype = resolve_dtype(self.dtype, device)
            self._tagger = load_tagger(
                self.clip_model, self.clip_pretrained, vocabulary=load_vocabulary(self.vocabulary_path or None),
                device=device, dtype=dtype, seed=self.seed,
            )
        return self._tagger

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def tag(self, images: list) -> list[list[str]]:
        """Tags per image, best first."""
        results = self.load().tag(images, min_score=self.min_score, max_tags=self.max_tags, batch_size=self.batch_size)
        return [[name for name, _ in r] for r in results]
