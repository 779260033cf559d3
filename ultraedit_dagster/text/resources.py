"""Text-stage model bindings: the captioner (DALL-E 3-style recaptioning) and the instruction writer."""

from typing import Any, Optional

import dagster as dg
from pydantic import PrivateAttr

from ultraedit_dagster.core.imaging import decode_png
from ultraedit_dagster.core.profiles import Profile
from ultraedit_dagster.core.resources import LLMEndpoint, endpoint_or_default
from ultraedit_dagster.sources.rows import RETRYABLE_MARK
from ultraedit_dagster.text.prompts import DESCRIPTIVE_CAPTION_PROMPT, SHORT_CAPTION_PROMPT, vision_messages
from ultraedit_dagster.text.rows import MAX_CLIP_TOKENS, WriterSettings, png_data_url
from ultraedit_dagster.text.seeds import N_EXAMPLES, N_INSTRUCTIONS
from ultraedit_dagster.text.template_writer import TEMPLATE_ID

# The captioner: DALL-E 3-style short and descriptive captions (docs/method.md §2), three backends.


class CaptionerResource(dg.ConfigurableResource):
    """`backend`:
    - `passthrough` (tiny profile): short and descriptive captions are the ground-truth caption.
    - `transformers`: a BLIP-style image-to-text model, `model` = hub id, local folder, or `tiny` (seeded random).
      Short: unconditional greedy decoding; descriptive: a text prefix, beam search, a longer budget.
    - `openai`: a vision chat model on the shared `endpoint` (core.resources.LLMEndpoint), image sent as a PNG
      data URL, with the DALL-E 3 short and descriptive prompts.
    The short caption is cut to `max_clip_tokens` CLIP tokens when longer (and flagged)."""

    backend: str = "passthrough"
    model: str = "tiny"  # the transformers backend's model; the openai backend uses the endpoint's
    endpoint: Optional[LLMEndpoint] = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    max_clip_tokens: int = MAX_CLIP_TOKENS
    max_tokens: int = 300
    seed: int = 0

    _model: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "CaptionerResource":
        kwargs: dict[str, Any] = {"backend": profile.captioner_backend}
        if profile.captioner_backend == "transformers":
            kwargs["model"] = profile.captioner_model
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def captioner_id(self) -> str:
        if self.backend == "passthrough":
            return "passthrough"
        if self.backend == "transformers":
            return f"transformers:{self.model}"
        if self.backend == "openai":
            return f"openai:{endpoint_or_default(self.endpoint).model}"
        raise ValueError(f"unknown captioner backend {self.backend!r} (passthrough | transformers | openai)")

    def _transformers(self):
        if self._model is None:
            from ultraedit_dagster.core.devices import resolve_device, resolve_dtype
            from ultraedit_dagster.models.captioner import load_captioner

            dev = resolve_device(self.device)
            dtype = str(resolve_dtype(self.dtype, dev)).removeprefix("torch.")
            self._model = (*load_captioner(self.model, dev, dtype, self.seed), dev)
        return self._model

    def caption(self, rows: list[dict]) -> list[tuple[str | None, str | None, str | None]]:
        """(short, descriptive, error) for each source_images row (uid, image PNG bytes, caption_gt)."""
        _ = self.captioner_id  # validates the backend
        if self.backend == "passthrough":
            return [
                (r.get("caption_gt"), r.get("caption_gt"), None if r.get("caption_gt") else "no ground-truth caption")
                for r in rows
            ]
        if self.backend == "transformers":
            from ultraedit_dagster.models.captioner import generate_captions

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
        client = endpoint_or_default(self.endpoint).client()
        urls = [png_data_url(r["image"]) for r in rows]
        requests = [vision_messages(SHORT_CAPTION_PROMPT, u) for u in urls] + [
            vision_messages(DESCRIPTIVE_CAPTION_PROMPT, u) for u in urls
        ]
        results = client.chat_many(requests, temperature=0.0, max_tokens=self.max_tokens)
        n = len(rows)
        out = []
        for short, desc in zip(results[:n], results[n:], strict=True):
            failed = short if short.error else desc if desc.error else None
            # a transport failure (timeout, 429 / 5xx, circuit open) is marked so `backfill --failed` redoes it
            err = None if failed is None else (RETRYABLE_MARK if failed.retryable else "") + failed.error
            out.append((short.text, desc.text, err))
        return out

    def start_shard(self) -> None:
        """Close the LLM circuit breaker before a shard (of a backfill's range): one shard whose requests all
        failed must not fail the next shard without sending anything."""
        if self.backend == "openai":
            endpoint_or_default(self.endpoint).client().reset_breaker()


# The instruction writer: edit triplets per caption from an OpenAI-compatible LLM or an offline template writer.


class InstructionWriterResource(dg.ConfigurableResource):
    """`backend`:
    - `template` (tiny profile): deterministic lexicon edits from the caption alone (template_writer.py).
    - `openai`: UltraEdit's prompt (50 sampled instructions + 10 full examples from `seed_triplets`, chosen from the
      image uid; descriptive caption as context; k triplets requested) to the shared OpenAI-compatible `endpoint`
      (core.resources.LLMEndpoint: cached by payload hash, failures never; transient errors retried with
      exponential backoff and jitter; bounded concurrency). `moderation` runs captions and outputs through the
      moderation endpoint.
    Thresholds for the warn check: `max_parse_failure_rate`, `max_request_failure_rate` (share of ok images)."""

    backend: str = "template"
    endpoint: Optional[LLMEndpoint] = None
    temperature: float = 0.7
    max_tokens: int = 1024
    triplets_per_caption: int = 3
    region_fraction: float = 0.3
    n_instructions: int = N_INSTRUCTIONS
    n_examples: int = N_EXAMPLES
    moderation: bool = False
    near_duplicate_threshold: float = 0.8
    # InstructPix2Pix's hygiene (docs/method.md §1): keep one triplet per source caption / per image URL, across
    # shards too (the shard with the smaller key wins); near-duplicates are flagged against earlier shards as well
    one_triplet_per_caption: bool = False
    one_triplet_per_url: bool = False
    cross_shard_near_duplicates: bool = True
    max_parse_failure_rate: float = 0.2
    max_request_failure_rate: float = 0.1

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "InstructionWriterResource":
        kwargs: dict[str, Any] = dict(
            backend=profile.instruction_backend,
            triplets_per_caption=profile.triplets_per_caption,
            region_fraction=profile.region_fraction,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def llm_id(self) -> str:
        if self.backend == "template":
            return TEMPLATE_ID
        if self.backend == "openai":
            return f"openai:{endpoint_or_default(self.endpoint).model}"
        raise ValueError(f"unknown instruction backend {self.backend!r} (template | openai)")

    def settings(self) -> WriterSettings:
        return WriterSettings(
            backend=self.backend,
            llm_id=self.llm_id,
            k=self.triplets_per_caption,
            region_fraction=self.region_fraction,
            n_instructions=self.n_instructions,
            n_examples=self.n_examples,
            sampling={"temperature": self.temperature, "max_tokens": self.max_tokens},
            moderation=self.moderation,
            near_duplicate_threshold=self.near_duplicate_threshold,
            one_per_caption=self.one_triplet_per_caption,
            one_per_url=self.one_triplet_per_url,
        )

    def client(self):
        """The cached LLM client (openai backend only)."""
        if self.backend != "openai":
            return None
        return endpoint_or_default(self.endpoint).client()

    def start_shard(self) -> None:
        """Close the LLM circuit breaker before a shard (see CaptionerResource.start_shard)."""
        client = self.client()
        if client is not None:
            client.reset_breaker()
