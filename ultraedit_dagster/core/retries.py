"""Retries: which errors are worth retrying, the step RetryPolicy for them, and run retries for crashed workers.

Three layers, from cheapest to broadest:

1. `TRANSIENT_RETRY_POLICY` on every asset, always together with the `@retry_transient_only` decorator under
   `@dg.asset`: Dagster's RetryPolicy retries *every* exception, so the decorator classifies first. A transient error
   (network, S3 throttling/5xx, LLM rate limit or timeout) propagates and is retried in the same run after an
   exponentially growing, jittered delay; any other error (a model that does not load, a bad config, bad data, a
   guard) becomes `dg.Failure(allow_retries=False)` with a clear message, so the step fails after one attempt.
2. Run retries (`run_retries:` in dagster.yaml, see `RUN_RETRY_TAGS`): the daemon re-launches a run whose worker
   crashed or was pre-empted (spot GPU nodes), re-executing only the steps that had not succeeded.
3. `ultraedit backfill --failed` / the nightly rebuild schedule for whatever is still failed after that.

Pure logic; dagster is imported only where the policy objects are built.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dagster as dg

MAX_RETRIES = 4
BASE_DELAY_S = 2.0  # attempts wait ~2s, 4s, 8s, 16s, each with full jitter

TRANSIENT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=MAX_RETRIES,
    delay=BASE_DELAY_S,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)

# Tags that opt a run into (or out of) the instance's run retries. The instance default comes from dagster.yaml
# (`run_retries: {enabled: true, max_retries: 2}`); `retry_on_asset_or_op_failure: false` there keeps the daemon
# from re-running runs that failed for ordinary step errors (those are the RetryPolicy's and the backfill's job),
# so only crashed/pre-empted workers are retried.
RUN_RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}
INSTANCE_RUN_RETRIES = {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}

# HTTP statuses that mean "try again later".
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# botocore / S3 error codes that are transient.
_RETRYABLE_AWS_CODES = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
}
# Class names (checked along the MRO) of transient errors from libraries we do not import here.
_RETRYABLE_CLASS_NAMES = {
    # openai
    "RateLimitError",
    "APIConnectionError",
    "APITimeoutError",
    "InternalServerError",
    # botocore / urllib3 / requests / httpx
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "ProtocolError",
    "NewConnectionError",
    "ConnectError",
    "ReadTimeout",
    "ConnectTimeout",
    "RemoteProtocolError",
    "PoolTimeout",
    # lake/warehouse.py: another process has the DuckDB file open (an analyst's shell); it may close
    "WarehouseLocked",
}
# Errors no retry can fix: fail fast with a clear message.
_PERMANENT_CLASS_NAMES = {
    "ValidationError",
    "DagsterInvalidConfigError",
    "ProfileError",
    "ModelLoadError",
    "ManifestError",
    "InvalidShardKey",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "BadRequestError",
    "NoCredentialsError",
    "PartialCredentialsError",
}
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EAGAIN,
}
# A full disk, an exhausted quota or a read-only volume: deterministic until someone frees space, so never retried.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_TRANSIENT_MESSAGES = (
    "rate limit",
    "too many requests",
    "temporarily unavailable",
    "connection reset",
    "timed out",
    "slow down",
    "service unavailable",
    "try again",
)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _aws_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_retryable(exc: BaseException) -> bool:
    """True for errors a later attempt may not hit: network failures, S3 throttling/5xx, LLM rate limits/timeouts.

    The exception's cause chain is searched, so a `LakeError` raised `from` a botocore throttling error is
    retryable while a `LakeError` about a missing shard is not. Anything unrecognised is *not* retryable: failing
    fast and backfilling later is cheaper than retrying a deterministic bug four times on a GPU.
    """
    for e in _chain(exc):
        names = _class_names(e)
        if names & _PERMANENT_CLASS_NAMES:
            return False
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            return False
        if names & _RETRYABLE_CLASS_NAMES:
            return True
        if isinstance(e, (TimeoutError, socket.timeout, ConnectionError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        code = _aws_code(e)
        if code is not None:
            return code in _RETRYABLE_AWS_CODES or (_status_code(e) or 0) >= 500
        status = _status_code(e)
        if status is not None:
            return status in _RETRYABLE_STATUS
    message = str(exc).lower()
    return any(m in message for m in _TRANSIENT_MESSAGES)


def classify(exc: BaseException) -> str:
    """'retryable' or 'fatal'."""
    return "retryable" if is_retryable(exc) else "fatal"


def fatal_message(exc: BaseException, stage: str = "") -> str:
    where = f"{stage}: " if stage else ""
    kind = type(exc).__name__
    hint = ""
    text = str(exc)
    disk = next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in _DISK_ERRNOS), None)
    if disk is not None:
        hint = (
            f" (the disk is full or read-only ({errno.errorcode.get(disk.errno, disk.errno)}): free space or fix the "
            "volume, then re-run; the shard's previous file is untouched and nothing half-written is visible; "
            "retrying will not help)"
        )
    elif isinstance(exc, (FileNotFoundError, ImportError, ModuleNotFoundError)) or "model" in text.lower():
        hint = (
            " (a model or its weights could not be loaded: check the profile's model ids, the model cache "
            "volume / HF_HOME and that the weights were downloaded; retrying will not help)"
        )
    elif isinstance(exc, (ValueError, TypeError, KeyError)):
        hint = " (a configuration or data error: retrying will not help)"
    else:  # e.g. an upstream shard that is missing: say so, since the step is not retried
        hint = " (not a transient error: retrying will not help)"
    return f"{where}{kind}: {text}{hint}"


@contextlib.contextmanager
def fail_fast_unless_transient(stage: str = "") -> Iterator[None]:
    """Re-raise transient errors unchanged (the RetryPolicy retries them); turn every other error into a
    `dg.Failure(allow_retries=False)` with a clear message, so the step fails at once.

    A `dg.Failure` that still allows retries is kept only when what caused it is transient (e.g. the per-shard
    failure of a multi-shard run raised `from` a throttling error); a Failure raised for a deterministic reason, or
    with no cause at all, is re-raised with `allow_retries=False` and its description and metadata kept."""
    try:
        yield
    except dg.RetryRequested:
        raise
    except dg.Failure as failure:
        cause = failure.__cause__
        if not failure.allow_retries or (cause is not None and is_retryable(cause)):
            raise
        raise dg.Failure(description=failure.description, metadata=failure.metadata, allow_retries=False) from (
            cause or failure
        )
    except Exception as exc:
        if is_retryable(exc):
            raise
        raise dg.Failure(description=fatal_message(exc, stage), allow_retries=False) from exc


F = TypeVar("F", bound=Callable[..., Any])


def retry_transient_only(fn: F) -> F:
    """Decorator for an asset's compute function (put it under `@dg.asset(..., retry_policy=TRANSIENT_RETRY_POLICY)`):
    the whole body runs inside `fail_fast_unless_transient(<asset name>)`, so the RetryPolicy only ever sees
    transient errors. The signature is kept (Dagster reads the context and resource parameters through
    `functools.wraps`); generator bodies (multi-assets that yield) stay generators."""
    stage = fn.__name__
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            with fail_fast_unless_transient(stage):
                return (yield from fn(*args, **kwargs))

        gen_wrapper.retry_transient_only = True  # type: ignore[attr-defined]
        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fail_fast_unless_transient(stage):
            return fn(*args, **kwargs)

    wrapper.retry_transient_only = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def classifies_errors(asset_def: Any) -> bool:
    """True when an asset's compute function is wrapped by `retry_transient_only` (tests check every asset)."""
    fn = getattr(getattr(asset_def.op, "compute_fn", None), "decorated_fn", None)
    return bool(getattr(fn, "retry_transient_only", False))


def call_with_retries(
    fn, *args, max_retries: int = MAX_RETRIES, base_delay: float = BASE_DELAY_S, sleep=None, rng=None, **kwargs
):
    """Retry `fn` in-process on transient errors with exponential backoff and full jitter (for calls inside a
    step, e.g. one LLM request out of thousands, where re-running the whole step would waste work)."""
    import random
    import time

    sleep = sleep or time.sleep
    rng = rng or random.Random()
    for attempt in range(max_retries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == max_retries or not is_retryable(exc):
                raise
            sleep(rng.uniform(0, base_delay * (2**attempt)))
    raise AssertionError("unreachable")
