"""Image helpers: decoding untrusted bytes safely, normalising to RGB, PNG encoding, thumbnail grids."""

from __future__ import annotations

import base64
import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps


class ImageRejected(ValueError):
    """An input image that cannot be used; the message is the failure reason recorded in the row."""


def decode_image(data: bytes, max_pixels: int = 89_478_485) -> Image.Image:
    """Decode untrusted bytes into a fully loaded PIL image, refusing empty, truncated, non-image and bomb inputs."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = probe.format
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb refused: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not a decodable image: no known image format recognised") from None
    except Exception as exc:
        raise ImageRejected(f"not a decodable image: {type(exc).__name__}: {_stable(exc)}") from None
    if width * height > max_pixels:
        raise ImageRejected(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels exceeds {max_pixels}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()  # truncated data fails here, not later
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb refused: {exc}") from None
    except Exception as exc:
        raise ImageRejected(
            f"corrupt or truncated {fmt or 'image'} data: {type(exc).__name__}: {_stable(exc)}"
        ) from None
    return image


def _stable(exc: Exception) -> str:
    """An exception message without memory addresses, so failure rows are identical across re-runs."""
    return re.sub(r" at 0x[0-9a-f]+", "", str(exc))


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (CMYK, 16-bit, palette, alpha, grayscale) to 8-bit RGB.

    Transparency is composited on white rather than dropped to black, so a logo on alpha stays visible.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise ImageRejected(f"float image has {bad} NaN or infinite pixel(s): no faithful 8-bit rendering")
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        image = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size` (bicubic) and centre-crop to size x size (UltraEdit's preprocessing).

    The centre square is cut from the source while resizing (PIL's `box`), so the work and memory are bounded by
    the output: a 64 x 200,000 strip never becomes a 512 x 1,600,000 intermediate."""
    width, height = image.size
    side = min(width, height)
    if side < 1:
        raise ImageRejected(f"image is {width}x{height}: nothing to crop")
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def thumbnail_grid(images: list[Image.Image], columns: int = 4, thumb: int = 128) -> Image.Image:
    """Tile images into one small picture for the Dagster UI."""
    if not images:
        return Image.new("RGB", (thumb, thumb), (235, 235, 235))
    rows = (len(images) + columns - 1) // columns
    cols = min(columns, len(images))
    grid = Image.new("RGB", (cols * thumb, rows * thumb), (255, 255, 255))
    for i, img in enumerate(images):
        t = img.convert("RGB").copy()
        t.thumbnail((thumb, thumb))
        grid.paste(t, ((i % columns) * thumb, (i // columns) * thumb))
    return grid


# Event metadata lives in the instance database for every materialization of every shard: an embedded preview is
# bounded so that one shard's metadata stays far below 100 KB (4,000 shards of unbounded PNG grids put ~6 GB into the
# database). Full-size previews go to the lake as files (`LakeResource.write_preview`).
MAX_EMBEDDED_PREVIEW_BYTES = 40_000  # JPEG bytes; base64 in markdown adds a third (~54 KB of text at most)
MAX_EMBEDDED_PREVIEW_SIDE = 512


def bounded_jpeg(
    image: Image.Image, max_bytes: int = MAX_EMBEDDED_PREVIEW_BYTES, max_side: int = MAX_EMBEDDED_PREVIEW_SIDE
) -> bytes:
    """`image` as a JPEG of at most `max_bytes` (longest side at most `max_side`): quality, then size, come down
    until it fits."""
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side))
    while True:
        for quality in (80, 65, 50, 35):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality, optimize=True)
            data = buf.getvalue()
            if len(data) <= max_bytes:
                return data
        if max(img.size) <= 16:
            return data
        img = img.resize((max(1, img.width * 3 // 4), max(1, img.height * 3 // 4)))


def markdown_image(image: Image.Image, alt: str = "preview") -> str:
    """Markdown that the Dagster UI renders inline: a bounded JPEG data URL (`bounded_jpeg`), never a full PNG."""
    data = base64.b64encode(bounded_jpeg(image)).decode("ascii")
    return f"![{alt}](data:image/jpeg;base64,{data})"
