"""Zero-shot image tagging with open_clip over the shipped object vocabulary.

Recognize Anything (UltraEdit's tagger) is not installable from the package registry, so images are tagged by CLIP
zero-shot classification: each vocabulary noun becomes the prompt "a photo of a {noun}.", the image embedding is
compared with every prompt embedding (cosine x the model's logit scale, softmax over the vocabulary), and the nouns
whose probability is at least `min_score` are kept, best first, at most `max_tags`.

Model loading goes through models/clip.py (`load_clip`): "tiny" is a seeded random open_clip model (text vocab 49408
with open_clip's real tokenizer), any other name uses open_clip's pretrained tags or a checkpoint file.
No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ultraedit_dagster.models import clip as clip_models

PROMPT_TEMPLATE = "a photo of a {}."


@dataclass
class Tagger:
    model: torch.nn.Module
    tokenizer: object
    vocabulary: tuple[str, ...]
    model_id: str
    template: str = PROMPT_TEMPLATE
    _text_emb: torch.Tensor | None = field(default=None, repr=False)

    def text_embeddings(self) -> torch.Tensor:
        """(V, D) L2-normalised prompt embeddings, computed once."""
        if self._text_emb is None:
            prompts = [self.template.format(w) for w in self.vocabulary]
            self._text_emb = clip_models.encode_texts(self.model, self.tokenizer, prompts)
        return self._text_emb

    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    @torch.inference_mode()
    def scores(self, images: Sequence[Image.Image | np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, V) softmax probabilities of each vocabulary noun per image."""
        if len(images) == 0:
            return np.zeros((0, len(self.vocabulary)), dtype=np.float32)
        img = clip_models.encode_images(self.model, list(images), batch_size=batch_size)
        logits = self.logit_scale() * img @ self.text_embeddings().T
        return torch.softmax(logits, dim=-1).numpy().astype(np.float32)

    def tag(
        self,
        images: Sequence[Image.Image | np.ndarray],
        min_score: float = 0.05,
        max_tags: int = 20,
        batch_size: int = 32,
    ) -> list[list[tuple[str, float]]]:
        """Per image: (noun, probability) with probability >= min_score, best first, at most max_tags."""
        probs = self.scores(images, batch_size=batch_size)
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[: max(0, max_tags)]
            out.append([(self.vocabulary[i], float(row[i])) for i in order if row[i] >= min_score])
        return out


def load_tagger(
    model_name: str = "tiny",
    pretrained: str = "random",
    vocabulary: Sequence[str] | None = None,
    device: str = "cpu",
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
) -> Tagger:
    if vocabulary is None:
        from ultraedit_dagster.regions.object_selection import load_vocabulary

        vocabulary = load_vocabulary()
    if not vocabulary:
        raise ValueError("the tagging vocabulary is empty")
    model, _, tokenizer = clip_models.load_clip(model_name, pretrained, device=device, dtype=dtype, seed=seed)
    return Tagger(
        model=model,
        tokenizer=tokenizer,
        vocabulary=tuple(vocabulary),
        model_id=clip_models.clip_model_id(model_name, pretrained) + f"+vocab{len(vocabulary)}",
    )
