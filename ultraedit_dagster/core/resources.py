"""Resources every stage shares: pipeline-wide settings (profile, global seed, input limits), the LLM endpoint."""

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ultraedit_dagster.core.profiles import Profile, get_profile
from ultraedit_dagster.core.run_tags import tag_run_with_this_process


class PipelineResource(dg.ConfigurableResource):
    """Settings every stage shares. Every random choice derives from `global_seed` and row uids."""

    profile_name: str = ""  # empty: ULTRAEDIT_PROFILE, else `tiny`
    global_seed: int = 0
    image_size: int = 512
    min_image_side: int = 64
    max_image_pixels: int = 89_478_485  # Pillow's default decompression-bomb limit
    max_failed_fraction: float = 0.25
    # When non-empty, manifest image URIs must start with one of these (local folders, file://, s3://bucket/prefix).
    allowed_uri_prefixes: list[str] = []

    @property
    def profile(self) -> Profile:
        return get_profile(self.profile_name or None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # a daemon-launched run records its machine and worker process, so a killed worker's run can be reaped
        tag_run_with_this_process(context.instance, context.dagster_run)


class LLMEndpoint(dg.ConfigurableResource):
    """The ONE OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server) that serves every LLM / VLM role: the
    captioner, the instruction writer and the object selector. Pass the key as `dg.EnvVar("OPENAI_API_KEY")`: it is
    never logged or stored. Answers are cached under `cache_dir` by payload hash (empty: $ULTRAEDIT_HOME/llm_cache)
    and retried with back-off on 429 / 5xx / timeouts (docs/method.md §1)."""

    model: str = "gpt-4o-mini"
    base_url: str = ""  # empty: the OpenAI API
    api_key: str = ""
    cache_dir: str = ""
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_concurrency: int = 4
    moderation_model: str = "omni-moderation-latest"

    _client: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "LLMEndpoint":
        kwargs: dict[str, Any] = {"model": profile.llm_model, "base_url": profile.llm_base_url}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def client(self):
        """The cached client (one per process and endpoint)."""
        if self._client is None:
            from ultraedit_dagster.core import settings
            from ultraedit_dagster.core.llm_client import LLMClient

            self._client = LLMClient(
                model=self.model,
                api_key=self.api_key,
                base_url=self.base_url or None,
                cache_dir=self.cache_dir or settings.llm_cache_dir(),
                timeout=self.timeout_s,
                max_retries=self.max_retries,
                backoff_base=self.backoff_base_s,
                backoff_max=self.backoff_max_s,
                max_concurrency=self.max_concurrency,
                moderation_model=self.moderation_model,
            )
        return self._client


def endpoint_or_default(endpoint: "LLMEndpoint | None") -> LLMEndpoint:
    """A role's endpoint, or the default one (OpenAI's API with no key: requests then fail with a clear reason)."""
    return endpoint or LLMEndpoint()
