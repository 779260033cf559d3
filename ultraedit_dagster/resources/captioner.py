"""The captioner: DALL-E 3-style short and descriptive captions (reference.md §2), three backends."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

import dagster as dg

from ..imaging import decode_png
from ..llm_client import DEFAULT_CACHE_DIR
from ..profiles import Profile
from ..prompts import DESCRIPTIVE_CAPTION_PROMPT, SHORT_CAPTION_PROMPT, vision_messages
from ..text_stage import MAX_CLIP_TOKENS, png_data_url


class CaptionerResource(dg.ConfigurableResource):
    """`backend`:
    - `passthrough` (tiny profile): short and descriptive captions are the ground-truth caption.
    - `transformers`: a BLIP-style image-to-text model, `model` = hub id, local folder, or `tiny` (seeded random).
      Short: unconditional greedy decoding; descriptive: a text prefix, beam search, a longer budget.
    - `openai`: a vision chat model through the openai SDK (`model`, `base_url`, `api_key` — pass
      `dg.EnvVar("OPENAI_API_KEY")`, never logged), image sent as a PNG data URL, with the DALL-E 3 short and
      descriptive prompts; replies are cached on disk and retried like the instruction writer's.
    The short caption is cut to `max_clip_tokens` CLIP tokens when longer (and flagged)."""

    backend: str = "passthrough"
    model: str = "tiny"
    base_url: str = ""
    api_key: str = ""
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    max_clip_tokens: int = MAX_CLIP_TOKENS
    cache_dir: str = DEFAULT_CACHE_DIR
    timeout_s: float = 60.0
    max_retries: int = 4
    max_concurrency: int = 4
    max_tokens: int = 300
    seed: int = 0

    _model: Any = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "CaptionerResource":
        kwargs: dict[str, Any] = {"backend": profile.captioner_backend}
        if profile.captioner_backend == "transformers":
            kwargs["model"] = profile.captioner_model
        elif profile.captioner_backend == "openai":
            kwargs.update(model=profile.llm_model, base_url=profile.llm_base_url,
                          api_key=dg.EnvVar("OPENAI_API_KEY"))
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def captioner_id(self) -> str:
        if self.backend == "passthrough":
            return "passthrough"
        if self.backend in ("transformers", "openai"):
            return f"{self.backend}:{self.model}"
        raise ValueError(f"unknown captioner backend {self.backend!r} (passthrough | transformers | openai)")

    def _llm(self):
        if self._client is None:
            from ..llm_client import LLMClient

            self._client = LLMClient(model=self.model, api_key=self.api_key, base_url=self.base_url or None,
                                     cache_dir=self.cache_dir or None, timeout=self.timeout_s,
                                     max_retries=self.max_retries, max_concurrency=self.max_concurrency)
        return self._client

    def _transformers(self):
        if self._model is None:
            from ..models.captioner import load_captioner

            from ..devices import resolve_device, resolve_dtype

            dev = resolve_device(self.device)
            dtype = str(resolve_dtype(self.dtype, dev)).removeprefix("torch.")
            self._model = (*load_captioner(self.model, dev, dtype, self.seed), dev)
        return self._model

    def caption(self, rows: list[dict]) -> list[tuple[str | None, str | None, str | None]]:
        """(short, descriptive, error) for each source_images row (uid, image PNG bytes, caption_gt)."""
        _ = self.captioner_id  # validates the backend
        if self.backend == "passthrough":
            return [(r.get("caption_gt"), r.get("caption_gt"), None if r.get("caption_gt") else "no ground-truth caption")
                    for r in rows]
        if self.backend == "transformers":
            from ..models.captioner import generate_captions

            model, processor, dev = self._transformers()
            out: list[tuple[str | None, str | None, str | None]] = []
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                try:
                    images = [decode_png(r["image"]) for r in batch]
                    caps = generate_captions(model, processor, images, device=dev)
                    out += [(s, d, None) for s, d in caps]
                except Exception as exc:  # one bad batch fails its rows, not the shard
                    out += [(None, None, f"{type(exc).__name__}: {exc}"[:300])] * len(batch)
            return out
        client = self._llm()
        urls = [png_data_url(r["image"]) for r in rows]
        requests = [vision_messages(SHORT_CAPTION_PROMPT, u) for u in urls] + [
            vision_messages(DESCRIPTIVE_CAPTION_PROMPT, u) for u in urls]
        results = client.chat_many(requests, temperature=0.0, max_tokens=self.max_tokens)
        n = len(rows)
        out = []
        for short, desc in zip(results[:n], results[n:]):
            err = short.error or desc.error
            out.append((short.text, desc.text, err))
        return out
