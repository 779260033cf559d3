"""The object selector: which object(s) an instruction edits, or NONE, by rules or by an LLM."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

import dagster as dg

from ..object_selection import (
    MAX_OBJECTS,
    Selection,
    SelectionParseError,
    load_vocabulary,
    parse_selection,
    select_by_rules,
    selection_prompt,
)
from ..profiles import Profile


class ObjectSelectorResource(dg.ConfigurableResource):
    """`backend`: `rules` (the tiny profile: caption words the instruction changes, matched against the tags and
    the caption's nouns) or `openai` (UltraEdit's selection prompt to any OpenAI-compatible endpoint: `base_url`,
    `model`, `api_key` — pass the key as `dg.EnvVar("OPENAI_API_KEY")`; it is never logged). LLM replies are cached
    on disk by payload hash and retried on 429 / 5xx / timeouts through llm_client.LLMClient."""

    backend: str = "rules"
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 32
    cache_dir: str = ".ultraedit/llm_cache"
    max_concurrency: int = 4
    max_retries: int = 4
    timeout: float = 60.0
    max_objects: int = MAX_OBJECTS
    vocabulary_path: str = ""

    _client: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "ObjectSelectorResource":
        kwargs: dict[str, Any] = dict(backend=profile.object_selector_backend,
                                      max_objects=profile.region_masking.max_objects)
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def selector_id(self) -> str:
        if self.backend == "rules":
            return "rules"
        if self.backend == "openai":
            return f"openai:{self.model}"
        raise ValueError(f"unknown object selector backend {self.backend!r} (rules | openai)")

    def _llm(self):
        if self._client is None:
            from ..llm_client import LLMClient

            self._client = LLMClient(
                model=self.model, api_key=self.api_key or "", base_url=self.base_url or None,
                cache_dir=self.cache_dir or None, timeout=self.timeout, max_retries=self.max_retries,
                max_concurrency=self.max_concurrency,
            )
        return self._client

    def select_many(self, requests: list[dict]) -> list[Selection | Exception]:
        """For each request (instruction, source_caption, target_caption, tags, edit_type) a Selection, or the
        exception that says why no selection could be made (the asset records it as a failed row)."""
        if self.backend == "rules":
            vocab = load_vocabulary(self.vocabulary_path or None)
            out: list[Selection | Exception] = []
            for r in requests:
                try:
                    out.append(select_by_rules(
                        r["instruction"], r["source_caption"], r["target_caption"], r.get("tags") or (),
                        edit_type=r.get("edit_type"), vocabulary=vocab, max_objects=self.max_objects,
                    ))
                except Exception as exc:  # noqa: BLE001 - recorded per row
                    out.append(exc)
            return out
        self.selector_id  # validates the backend name
        messages = [
            [{"role": "user", "content": selection_prompt(
                r["instruction"], r["source_caption"], r["target_caption"], r.get("tags") or ())}]
            for r in requests
        ]
        results = self._llm().chat_many(messages, temperature=self.temperature, max_tokens=self.max_tokens)
        out = []
        for res in results:
            if not res.ok:
                out.append(RuntimeError(f"LLM error: {res.error}"))
                continue
            try:
                objects = parse_selection(res.text or "", max_objects=self.max_objects)
            except SelectionParseError as exc:
                out.append(exc)
                continue
            out.append(Selection(objects, self.selector_id, "llm", raw=res.text,
                                 prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens))
        return out
