"""The instruction writer: edit triplets per caption from an OpenAI-compatible LLM or an offline template writer."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

import dagster as dg

from ..llm_client import DEFAULT_CACHE_DIR
from ..profiles import Profile
from ..seeds import N_EXAMPLES, N_INSTRUCTIONS
from ..template_writer import TEMPLATE_ID
from ..text_stage import WriterSettings


class InstructionWriterResource(dg.ConfigurableResource):
    """`backend`:
    - `template` (tiny profile): deterministic lexicon edits from the caption alone (template_writer.py).
    - `openai`: UltraEdit's prompt (50 sampled instructions + 10 full examples from `seed_triplets`, chosen from the
      image uid; descriptive caption as context; k triplets requested) to any OpenAI-compatible chat endpoint:
      `base_url` (empty = OpenAI), `model`, `api_key` — pass `dg.EnvVar("OPENAI_API_KEY")`; the key is never logged
      or stored. Replies are cached under `cache_dir` by a hash of model, messages and sampling parameters (failures
      never), transient errors retried `max_retries` times with exponential backoff and jitter, at most
      `max_concurrency` requests in flight. `moderation` runs captions and outputs through the moderation endpoint.
    Thresholds for the warn check: `max_parse_failure_rate`, `max_request_failure_rate` (share of ok images)."""

    backend: str = "template"
    model: str = "gpt-4o-mini"
    base_url: str = ""
    api_key: str = ""
    temperature: float = 0.7
    max_tokens: int = 1024
    triplets_per_caption: int = 3
    region_fraction: float = 0.3
    n_instructions: int = N_INSTRUCTIONS
    n_examples: int = N_EXAMPLES
    cache_dir: str = DEFAULT_CACHE_DIR
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_concurrency: int = 4
    moderation: bool = False
    moderation_model: str = "omni-moderation-latest"
    near_duplicate_threshold: float = 0.8
    max_parse_failure_rate: float = 0.2
    max_request_failure_rate: float = 0.1

    _client: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "InstructionWriterResource":
        kwargs: dict[str, Any] = dict(backend=profile.instruction_backend,
                                      triplets_per_caption=profile.triplets_per_caption,
                                      region_fraction=profile.region_fraction)
        if profile.instruction_backend == "openai":
            kwargs.update(model=profile.llm_model, base_url=profile.llm_base_url,
                          api_key=dg.EnvVar("OPENAI_API_KEY"))
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def llm_id(self) -> str:
        if self.backend == "template":
            return TEMPLATE_ID
        if self.backend == "openai":
            return f"openai:{self.model}"
        raise ValueError(f"unknown instruction backend {self.backend!r} (template | openai)")

    def settings(self) -> WriterSettings:
        return WriterSettings(
            backend=self.backend, llm_id=self.llm_id, k=self.triplets_per_caption, region_fraction=self.region_fraction,
            n_instructions=self.n_instructions, n_examples=self.n_examples,
            sampling={"temperature": self.temperature, "max_tokens": self.max_tokens}, moderation=self.moderation,
            near_duplicate_threshold=self.near_duplicate_threshold,
        )

    def client(self):
        """The cached LLM client (openai backend only)."""
        if self.backend != "openai":
            return None
        if self._client is None:
            from ..llm_client import LLMClient

            self._client = LLMClient(
                model=self.model, api_key=self.api_key, base_url=self.base_url or None, cache_dir=self.cache_dir or None,
                timeout=self.timeout_s, max_retries=self.max_retries, backoff_base=self.backoff_base_s,
                backoff_max=self.backoff_max_s, max_concurrency=self.max_concurrency,
                moderation_model=self.moderation_model,
            )
        return self._client
