"""Turning one manifest row into one `source_images` row: fetch, decode, normalise, crop, or fail with a reason."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlparse

import pyarrow as pa

from ultraedit_dagster.core.imaging import ImageRejected, decode_image, encode_png, resize_center_crop, to_rgb
from ultraedit_dagster.lake.store import split_s3_uri

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


def check_uri_allowed(uri: str, allowed_prefixes: Sequence[str]) -> None:
    """Refuse URIs outside the allowlist (when one is set). Local paths are compared after resolving `..`/links."""
    if not allowed_prefixes:
        return
    candidate = _local_path(uri)
    for prefix in allowed_prefixes:
        prefix_local = _local_path(prefix)
        if prefix_local is not None:  # a local root: compare real paths, so `..` and symlinks cannot escape it
            if candidate is None:
                continue
            root = os.path.realpath(prefix_local)
            if os.path.commonpath([root, os.path.realpath(candidate)]) == root:
                return
        elif ".." not in uri.split("/") and (uri == prefix or uri.startswith(prefix.rstrip("/") + "/")):
            return
    raise UriRefused(f"image URI {uri!r} is outside the allowed roots ({', '.join(allowed_prefixes)})")


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    if "://" in uri:
        return None
    return uri


def fetch_bytes(uri: str, s3_client_factory: Callable[[], object] | None = None, max_bytes: int = 256 << 20) -> bytes:
    """Read an image's bytes from a local path, file:// or s3:// URI."""
    local = _local_path(uri)
    if local is not None:
        if not os.path.exists(local):
            raise ImageRejected(f"file not found: {local}")
        if not os.path.isfile(local):
            raise ImageRejected(f"not a regular file: {local}")
        size = os.path.getsize(local)
        if size > max_bytes:
            raise ImageRejected(f"file is {size} bytes, over the {max_bytes}-byte limit")
        with open(local, "rb") as fh:
            return fh.read()
    if uri.startswith("s3://"):
        if s3_client_factory is None:
            raise ImageRejected("s3:// image URI but no S3 client is configured")
        bucket, key = split_s3_uri(uri)
        try:
            obj = s3_client_factory().get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        except Exception as exc:
            raise ImageRejected(f"cannot fetch {uri}: {exc}") from None
        if obj.get("ContentLength", 0) > max_bytes:
            raise ImageRejected(f"object is {obj['ContentLength']} bytes, over the {max_bytes}-byte limit")
        return obj["Body"].read()
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
    return " ".join(text.split())


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
) -> dict:
    """One manifest row → one source_images row (status 'ok', or 'failed' with the reason in `error`)."""
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
        image = decode_image(fetch_bytes(row["image"], s3_client_factory), max_pixels=max_pixels)
        out["width"], out["height"] = image.size
        image = to_rgb(image)
        if min(image.size) < min_side:
            raise ImageRejected(f"image is {image.size[0]}x{image.size[1]}, smaller than the {min_side}px minimum side")
        out["image"] = encode_png(resize_center_crop(image, size))
    except (ImageRejected, UriRefused) as exc:
        out["status"], out["error"] = "failed", str(exc)
    return out
