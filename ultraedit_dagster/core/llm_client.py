"""A small wrapper around the `openai` SDK for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server).

- Disk cache: every successful reply is stored under `cache_dir/<2 hex>/<sha256>.json`, keyed by a hash of the
  request kind, model, messages and sampling parameters (not the endpoint or the key). Failures are never cached, so
  a re-run retries exactly what failed and sends nothing that already succeeded.
- Retries: 429, 408/409, 5xx, timeouts and connection errors are retried up to `max_retries` times with exponential
  backoff and jitter (delay = min(backoff_max, backoff_base·2^attempt) · U(0.5, 1), at least the server's
  Retry-After when it sends one and it is below backoff_max). Other errors (4xx, a malformed body) fail at once.
- Deadlines: the SDK's `timeout` bounds each read, so a server trickling one byte a second would hold a call
  forever; every call (all its attempts and back-off sleeps together) also has a total `deadline`, after which it
  fails as a timeout. The abandoned HTTP request finishes in a daemon thread, never blocking the caller.
- Circuit breaker: after `breaker_threshold` consecutive calls that failed for a transport reason (timeouts,
  connection errors, 429 / 5xx after their retries), further calls fail at once (`circuit open`, nothing sent) for
  `breaker_cooldown` seconds, then one probe is let through. `reset_breaker()` starts a shard afresh. Such failures
  are `ChatResult.retryable`: a later backfill may succeed where this run could not.
- Concurrency: `chat_many` runs requests on at most `max_concurrency` threads.
- Token counts come from the reply's `usage`; a cached reply reports the counts of the request that produced it and
  says `cached=True`.
- The API key is held only in the SDK client; it is never part of the cache key, a repr, a log line or an error
  message (it is scrubbed from error text as a precaution).

No Dagster imports here.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DEFAULT_CACHE_DIR = ".ultraedit/llm_cache"


@dataclass(frozen=True)
class ChatResult:
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0  # HTTP requests sent for this call (0 when served from the cache)
    error: str | None = None  # None when ok
    retryable: bool = False  # the failure was a transport one (deadline, timeouts, 5xx, circuit open): retry later

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ModerationResult:
    flagged: bool
    categories: tuple[str, ...] = ()
    error: str | None = None
    retryable: bool = False


MAX_ERROR_CHARS = 300


def scrub_secret(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced by `***`: as is, JSON-escaped, URL-quoted, and in the
    forms `repr` gives it. Scrub before truncating, never after."""
    if not secret or not text:
        return text
    from urllib.parse import quote, quote_plus

    forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]}
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, "***")
    return text


def payload_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class _DeadlineExceeded(Exception):
    """A call ran past its total deadline."""


class LLMClient:
    """Cached, retrying, concurrent chat completions and moderations over the openai SDK."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str = "",
        base_url: str | None = None,
        cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        max_concurrency: int = 4,
        moderation_model: str = "omni-moderation-latest",
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
        breaker_threshold: int = 8,
        breaker_cooldown: float = 60.0,
    ) -> None:
        import openai

        self.model = model
        self.base_url = base_url or None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_concurrency = max(1, int(max_concurrency))
        self.moderation_model = moderation_model
        self._sleep = sleep
        # total seconds for one call, all attempts and back-off included (default: three per-read timeouts)
        self.deadline = float(deadline) if deadline else 3.0 * float(timeout)
        self.breaker_threshold = int(breaker_threshold)
        self.breaker_cooldown = float(breaker_cooldown)
        self._transport_failures = 0
        self._last_transport_error = ""
        self._open_until = 0.0
        self._secret = api_key or ""
        # the SDK's own retries are off: ours are counted, jittered and bounded
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed", base_url=self.base_url, timeout=timeout, max_retries=0
        )
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        self.cache_hits = 0

    def __repr__(self) -> str:  # never shows the key
        return f"LLMClient(model={self.model!r}, base_url={self.base_url!r}, cache_dir={str(self.cache_dir)!r})"

    # -- cache --------------------------------------------------------------------------------------------------

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cache_get(self, key: str) -> dict | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is treated as a miss and rewritten

    def _cache_put(self, key: str, value: dict) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    # -- retry loop ---------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """The text with the API key removed in every form an endpoint may echo it (as is, JSON- or URL-escaped).
        Always scrub the whole text before cutting it: a cut first can split the key and leave most of it."""
        return scrub_secret(text, self._secret)

    def _error_text(self, text: str, limit: int = MAX_ERROR_CHARS) -> str:
        return self._scrub(text)[:limit]

    def _retryable(self, exc: Exception) -> bool:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in (408, 409, 429) or exc.status_code >= 500
        return False

    def _delay(self, attempt: int, exc: Exception) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2**attempt)) * random.uniform(0.5, 1.0)
        response = getattr(exc, "response", None)
        retry_after = None
        if response is not None:
            try:
                retry_after = float(response.headers.get("retry-after"))
            except (TypeError, ValueError):
                retry_after = None
        if retry_after is not None and 0 <= retry_after <= self.backoff_max:
            delay = max(delay, retry_after)
        return delay

    def _describe(self, exc: Exception) -> str:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            kind = "timeout"
        elif isinstance(exc, openai.APIConnectionError):
            kind = "connection error"
        elif isinstance(exc, openai.APIStatusError):
            kind = f"HTTP {exc.status_code}"
        else:
            kind = f"malformed response ({type(exc).__name__})"
        return self._error_text(f"{kind}: {exc}")

    def reset_breaker(self) -> None:
        """Close the circuit breaker (e.g. at the start of a shard)."""
        with self._lock:
            self._transport_failures, self._last_transport_error, self._open_until = 0, "", 0.0

    def _breaker_error(self) -> str | None:
        with self._lock:
            if self.breaker_threshold <= 0 or self._transport_failures < self.breaker_threshold:
                return None
            now = time.monotonic()
            if now >= self._open_until:  # half-open: let this one call probe, keep the others out meanwhile
                self._open_until = now + self.breaker_cooldown
                return None
            return (
                f"circuit open: {self._transport_failures} consecutive transport failures "
                f"(last: {self._last_transport_error}); request not sent"
            )[:MAX_ERROR_CHARS]

    def _record_outcome(self, transport_error: str | None) -> None:
        with self._lock:
            if transport_error is None:
                self._transport_failures, self._last_transport_error, self._open_until = 0, "", 0.0
                return
            self._transport_failures += 1
            self._last_transport_error = transport_error[:120]
            if self._transport_failures == self.breaker_threshold:
                self._open_until = time.monotonic() + self.breaker_cooldown

    def _run_with_deadline(self, fn: Callable[[], Any], seconds: float) -> Any:
        """fn() in a daemon thread, waited for at most `seconds`; _DeadlineExceeded when it is still running."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="llm-request", daemon=True).start()
        if not done.wait(max(0.0, seconds)):
            raise _DeadlineExceeded
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _call(self, fn: Callable[[], Any]) -> tuple[Any, int, str | None, bool]:
        """Run fn with retries within the call's total deadline; returns (response or None, attempts, error,
        retryable)."""
        open_error = self._breaker_error()
        if open_error is not None:
            return None, 0, open_error, True
        attempts = 0
        deadline_at = time.monotonic() + self.deadline
        while True:
            attempts += 1
            with self._lock:
                self.requests_sent += 1
            suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
            try:
                if attempts > 1 and time.monotonic() >= deadline_at:
                    raise _DeadlineExceeded
                result = self._run_with_deadline(fn, deadline_at - time.monotonic())
            except _DeadlineExceeded:
                error = f"timeout: no complete answer within the {self.deadline:g} s total deadline{suffix}"
                self._record_outcome(error)
                return None, attempts, error, True
            except Exception as exc:  # classify below; anything unexpected fails this item only
                retryable = self._retryable(exc)
                remaining = deadline_at - time.monotonic()
                if retryable and attempts <= self.max_retries and remaining > 0:
                    with self._lock:
                        self.retries += 1
                    self._sleep(min(self._delay(attempts - 1, exc), remaining))  # never sleeps past the deadline
                    continue
                error = self._describe(exc) + suffix
                self._record_outcome(error if retryable else None)
                return None, attempts, error, retryable
            self._record_outcome(None)
            return result, attempts, None, False

    # -- public API ---------------------------------------------------------------------------------------------

    def _chat_key(self, messages: list[dict], params: dict) -> str:
        return payload_hash({"kind": "chat", "model": self.model, "messages": messages, "params": params})

    def forget(self, messages: list[dict], **params: Any) -> None:
        """Drop a cached answer that turned out useless (e.g. no valid triplet), so a re-run asks again."""
        path = self._cache_path(self._chat_key(messages, params))
        if path is not None:
            path.unlink(missing_ok=True)

    def chat(self, messages: list[dict], **params: Any) -> ChatResult:
        """One chat completion (cached). `params` are sampling parameters (temperature, max_tokens, seed, ...)."""
        key = self._chat_key(messages, params)
        hit = self._cache_get(key)
        if hit is not None:
            with self._lock:
                self.cache_hits += 1
            return ChatResult(hit["text"], hit.get("prompt_tokens", 0), hit.get("completion_tokens", 0), cached=True)
        response, attempts, error, retryable = self._call(
            lambda: self._client.chat.completions.create(model=self.model, messages=messages, **params)
        )
        if error is not None:
            return ChatResult(None, attempts=attempts, error=error, retryable=retryable)
        try:
            text = response.choices[0].message.content
            usage = getattr(response, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            return ChatResult(
                None, attempts=attempts, error=self._error_text(f"malformed response: {type(exc).__name__}: {exc}")
            )
        if not isinstance(text, str) or not text.strip():
            return ChatResult(
                None, prompt_tokens, completion_tokens, attempts=attempts, error="malformed response: empty content"
            )
        self._cache_put(
            key,
            {"text": text, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "model": self.model},
        )
        return ChatResult(text, prompt_tokens, completion_tokens, cached=False, attempts=attempts)

    def chat_many(self, requests: list[list[dict]], **params: Any) -> list[ChatResult]:
        """Many chat completions, at most `max_concurrency` in flight; results in input order."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(lambda m: self.chat(m, **params), requests))

    def moderate(self, texts: list[str]) -> list[ModerationResult]:
        """Moderation results for each text (cached per text); an error is reported per text, not raised."""
        out: list[ModerationResult | None] = [None] * len(texts)
        todo = []
        for i, t in enumerate(texts):
            hit = self._cache_get(payload_hash({"kind": "moderation", "model": self.moderation_model, "input": t}))
            if hit is not None:
                out[i] = ModerationResult(hit["flagged"], tuple(hit.get("categories", ())))
            else:
                todo.append(i)
        if todo:
            batch = [texts[i] for i in todo]
            response, _, error, retryable = self._call(
                lambda: self._client.moderations.create(model=self.moderation_model, input=batch)
            )
            results = getattr(response, "results", None) if error is None else None
            if error is None and (not isinstance(results, list) or len(results) != len(batch)):
                error = "malformed moderation response"
            for n, i in enumerate(todo):
                if error is not None:
                    out[i] = ModerationResult(False, error=error, retryable=retryable)
                    continue
                r = results[n]
                cats = getattr(r, "categories", None)
                names = tuple(
                    sorted(k for k, v in (cats.model_dump() if hasattr(cats, "model_dump") else {}).items() if v)
                )
                out[i] = ModerationResult(bool(r.flagged), names)
                self._cache_put(
                    payload_hash({"kind": "moderation", "model": self.moderation_model, "input": texts[i]}),
                    {"flagged": bool(r.flagged), "categories": list(names)},
                )
        return [r for r in out if r is not None]
