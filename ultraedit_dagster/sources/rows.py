"""Turning one manifest row into one `source_images` row: fetch, decode, normalise, crop, or fail with a reason."""

from __future__ import annotations

import os
import random
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlparse

import pyarrow as pa

from ultraedit_dagster.core.imaging import ImageRejected, decode_image, encode_png, resize_center_crop, to_rgb
from ultraedit_dagster.lake.store import LakeError, split_s3_uri

SOURCE_IMAGES_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("shard", pa.string()),
        ("row_index", pa.int64()),
        ("id", pa.string()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("uri", pa.string()),
        ("caption_gt", pa.string()),
        ("source", pa.string()),
        ("license", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("profile", pa.string()),
    ]
)


class UriRefused(ValueError):
    """A manifest URI outside the configured allowlist, or of an unsupported scheme."""


# A row whose image could not be fetched for a reason a later attempt may not meet (S3 unreachable, throttled, 5xx)
# has an error starting with this mark (downstream stages keep it behind their own prefix, e.g.
# `source_images: retryable: cannot fetch ...`), so `ultraedit backfill --failed` and the nightly rebuild can find
# the shards to redo: see `is_retryable_error` and `shards_with_retryable_rows`.
RETRYABLE_MARK = "retryable: "


class TransientFetchError(ImageRejected):
    """A fetch that kept failing for a transient reason; the row is failed as retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(RETRYABLE_MARK + message)


def is_retryable_error(error: str | None) -> bool:
    """True when a failure row's `error` says a later attempt may succeed (at any stage's prefix)."""
    return bool(error) and (error.startswith(RETRYABLE_MARK) or f": {RETRYABLE_MARK}" in error)


def shards_with_retryable_rows(lake, asset: str = "source_images") -> list[str]:
    """The shards of `asset` holding failure rows marked retryable (for `backfill --failed` and the nightly rebuild:
    their partitions materialized successfully, but some rows wait for an outage to end). Any stage's rows: the
    image fetches of `source_images`, the LLM requests of `captions` and `edit_instructions` (`captioner: retryable:
    ...`, `request failed: retryable: ...`), and the upstream errors later stages carry. Reads only the shard,
    status and error columns; an S3 lake is read with httpfs from its package (lake.warehouse.lake_connection)."""
    from ultraedit_dagster.lake.warehouse import lake_connection

    shards = lake.list_shards(asset)
    if not shards:
        return []
    con = lake_connection(lake)
    try:
        rows = con.execute(
            "SELECT DISTINCT shard FROM read_parquet(?, union_by_name = true) "
            "WHERE status = 'failed' AND (starts_with(error, ?) OR contains(error, ?)) ORDER BY shard",
            [lake.asset_glob(asset), RETRYABLE_MARK, f": {RETRYABLE_MARK}"],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def check_uri_allowed(uri: str, allowed_prefixes: Sequence[str]) -> None:
    """Refuse URIs outside the allowlist (when one is set). Local paths are compared after resolving `..`/links.

    For local files this is a first filter only: `fetch_bytes` checks the real path of the very file descriptor it
    reads, so a symlink flipped after this check cannot redirect the read."""
    if not allowed_prefixes:
        return
    candidate = _local_path(uri)
    if "\x00" in uri or (candidate is not None and "\x00" in candidate):
        raise UriRefused("image URI contains a NUL byte")
    if candidate is not None and _inside_local_roots(os.path.realpath(candidate), allowed_prefixes):
        return
    for prefix in allowed_prefixes:
        if _local_path(prefix) is None and ".." not in uri.split("/"):
            if uri == prefix or uri.startswith(prefix.rstrip("/") + "/"):
                return
    raise UriRefused(f"image URI {uri!r} is outside the allowed roots ({', '.join(allowed_prefixes)})")


def _inside_local_roots(real_path: str, allowed_prefixes: Sequence[str]) -> bool:
    for prefix in allowed_prefixes:
        prefix_local = _local_path(prefix)
        if prefix_local is None or "\x00" in prefix_local:
            continue
        root = os.path.realpath(prefix_local)
        if os.path.commonpath([root, real_path]) == root:
            return True
    return False


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    if "://" in uri:
        return None
    return uri


class FetchBreaker:
    """A per-shard circuit breaker for image fetches: after `threshold` consecutive rows whose fetch failed for a
    transient reason (the store is down, not one object), the remaining rows fail at once as retryable instead of
    each waiting through its own retries."""

    def __init__(self, threshold: int = 5) -> None:
        self.threshold = threshold
        self.consecutive = 0
        self.reason: str | None = None

    @property
    def open(self) -> bool:
        return self.threshold > 0 and self.consecutive >= self.threshold

    def success(self) -> None:
        self.consecutive, self.reason = 0, None

    def failure(self, reason: str) -> None:
        self.consecutive += 1
        self.reason = reason


_TRANSIENT_AWS_CODES = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "503",
    "500",
    "502",
    "504",
}
_TRANSIENT_CLASS_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ProtocolError",
}


def is_transient_fetch_error(exc: BaseException) -> bool:
    """Network failures, timeouts, S3 throttling and 5xx: worth another attempt. A missing object, a refused
    permission or a bad bucket name are not."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        seen += 1
        if {c.__name__ for c in type(e).__mro__} & _TRANSIENT_CLASS_NAMES:
            return True
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return code in _TRANSIENT_AWS_CODES or status == 429 or status >= 500
        e = e.__cause__ or e.__context__
    return False


def _read_fd(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ImageRejected(f"file is over the {limit}-byte limit")


def _fd_real_path(fd: int, path: str, st: os.stat_result) -> str:
    """The real path of the open file `fd` (Linux: /proc/self/fd; elsewhere the resolved path, accepted only when
    it is the very inode that was opened)."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(path)
        try:
            now = os.stat(real)
        except OSError:
            raise ImageRejected(f"file changed while it was opened: {path}") from None
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ImageRejected(f"file changed while it was opened: {path}") from None
        return real
    if real.endswith(" (deleted)") and not os.path.exists(real):
        raise ImageRejected(f"file was removed while it was opened: {path}")
    return real


def read_local_file(path: str, allowed_prefixes: Sequence[str] = (), max_bytes: int = 256 << 20) -> bytes:
    """Open `path` once, check the real path of that descriptor against the allowlist, then read that descriptor:
    there is no window between the check and the read for a symlink or a rename to redirect it."""
    if "\x00" in path:
        raise ImageRejected("image path contains a NUL byte")
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageRejected(f"file not found: {path}") from None
    except OSError as exc:
        raise ImageRejected(f"cannot open {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if allowed_prefixes and not _inside_local_roots(_fd_real_path(fd, path, st), allowed_prefixes):
            raise UriRefused(f"image URI {path!r} is outside the allowed roots ({', '.join(allowed_prefixes)})")
        if not stat.S_ISREG(st.st_mode):
            raise ImageRejected(f"not a regular file: {path}")
        if st.st_size > max_bytes:
            raise ImageRejected(f"file is {st.st_size} bytes, over the {max_bytes}-byte limit")
        try:
            return _read_fd(fd, max_bytes)
        except OSError as exc:
            raise ImageRejected(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)


def fetch_s3(
    uri: str,
    s3_client_factory: Callable[[], object],
    max_bytes: int = 256 << 20,
    *,
    attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
    breaker: FetchBreaker | None = None,
) -> bytes:
    """An object's bytes, retried with exponential backoff and jitter on transient errors; a row still failing
    transiently raises TransientFetchError (a retryable failure row), any other error fails it at once."""
    try:
        bucket, key = split_s3_uri(uri)
    except LakeError as exc:
        raise ImageRejected(str(exc)) from None
    if breaker is not None and breaker.open:
        raise TransientFetchError(
            f"cannot fetch {uri}: not attempted after {breaker.consecutive} consecutive transient failures "
            f"in this shard (last: {breaker.reason})"
        )
    last = ""
    for attempt in range(max(1, attempts)):
        try:
            obj = s3_client_factory().get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
            if (obj.get("ContentLength") or 0) > max_bytes:
                raise ImageRejected(f"object is {obj['ContentLength']} bytes, over the {max_bytes}-byte limit")
            data = obj["Body"].read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ImageRejected(f"object is over the {max_bytes}-byte limit")
        except ImageRejected:
            raise
        except Exception as exc:  # botocore raises many types: classify
            if not is_transient_fetch_error(exc):
                raise ImageRejected(f"cannot fetch {uri}: {exc}") from None
            last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                sleep(min(max_delay, base_delay * 2**attempt) * random.uniform(0.5, 1.0))
            continue
        if breaker is not None:
            breaker.success()
        return data
    if breaker is not None:
        breaker.failure(last)
    raise TransientFetchError(f"cannot fetch {uri} after {attempts} attempts: {last}")


def fetch_bytes(
    uri: str,
    s3_client_factory: Callable[[], object] | None = None,
    max_bytes: int = 256 << 20,
    *,
    allowed_prefixes: Sequence[str] = (),
    breaker: FetchBreaker | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """Read an image's bytes from a local path, file:// or s3:// URI."""
    local = _local_path(uri)
    if local is not None:
        return read_local_file(local, allowed_prefixes, max_bytes)
    if uri.startswith("s3://"):
        if s3_client_factory is None:
            raise ImageRejected("s3:// image URI but no S3 client is configured")
        return fetch_s3(uri, s3_client_factory, max_bytes, breaker=breaker, sleep=sleep)
    raise UriRefused(f"unsupported URI scheme in {uri!r} (use a local path, file:// or s3://)")


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MAX_CAPTION_CHARS = 20_000


def clean_caption(text: str | None) -> str:
    """NFC-normalise, drop terminal escapes and control / format characters, collapse whitespace.

    Captions reach diffusion prompts, LLM prompts and the release: a NUL, a bell or an ANSI colour code is never
    part of a description. Letters of any script and emoji are kept.
    """
    text = unicodedata.normalize("NFC", text or "")[:MAX_CAPTION_CHARS]
    text = _ANSI_ESCAPE.sub(" ", text)
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\u200d" else ch  # ZWJ joins emoji
        for ch in text
    )
    text = " ".join(text.split())
    # marks and joiners alone (zero-width characters, combining accents with no base) describe nothing
    if not any(unicodedata.category(ch)[0] in "LNSP" for ch in text):
        return ""
    return text


def process_row(
    row: dict,
    *,
    shard: str,
    profile: str,
    size: int,
    min_side: int,
    max_pixels: int,
    allowed_prefixes: Sequence[str] = (),
    s3_client_factory: Callable[[], object] | None = None,
    breaker: FetchBreaker | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """One manifest row → one source_images row (status 'ok', or 'failed' with the reason in `error`).

    Nothing about one row's data can fail the shard: bad paths, bad bytes, images that decode into something
    unusable or too large to normalise all become a failed row with the reason. A fetch that failed for a transient
    reason is marked retryable (`RETRYABLE_MARK`)."""
    out = {
        "uid": row["uid"],
        "shard": shard,
        "row_index": row["row_index"],
        "id": row["id"],
        "image": None,
        "width": None,
        "height": None,
        "uri": row["image"],
        "caption_gt": row["caption"],
        "source": row["source"],
        "license": row["license"],
        "status": "ok",
        "error": None,
        "profile": profile,
    }
    try:
        out["caption_gt"] = clean_caption(row["caption"])
        if not out["caption_gt"]:
            raise ImageRejected("empty caption")
        check_uri_allowed(row["image"], allowed_prefixes)
        data = fetch_bytes(
            row["image"], s3_client_factory, allowed_prefixes=allowed_prefixes, breaker=breaker, sleep=sleep
        )
        out["image"], out["width"], out["height"] = normalise_image(data, size, min_side, max_pixels)
    except (ImageRejected, UriRefused) as exc:
        out["status"], out["error"], out["image"] = "failed", str(exc), None
    return out


def normalise_image(data: bytes, size: int, min_side: int, max_pixels: int) -> tuple[bytes, int, int]:
    """Encoded bytes → (PNG of size x size, original width, original height), or ImageRejected with the reason.

    The work is bounded by the pixel limit (decoding) and by the output size (the crop happens while resizing).
    Whatever else a hostile file makes the decoder or the converters raise is this row's failure, never the shard's.
    """
    try:
        image = decode_image(data, max_pixels=max_pixels)
        width, height = image.size
        image = to_rgb(image)
        if min(image.size) < min_side:
            raise ImageRejected(f"image is {image.size[0]}x{image.size[1]}, smaller than the {min_side}px minimum side")
        return encode_png(resize_center_crop(image, size)), width, height
    except ImageRejected:
        raise
    except MemoryError:
        raise ImageRejected("not enough memory to normalise this image") from None
    except Exception as exc:  # noqa: BLE001 - a decoder's surprise on one file is that row's failure
        raise ImageRejected(f"cannot normalise image: {type(exc).__name__}: {_stable_text(exc)}") from None


def _stable_text(exc: BaseException) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", str(exc))[:300]
