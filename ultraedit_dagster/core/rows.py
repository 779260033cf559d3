"""Row building every stage shares: the failed row, the failure reason, and a shard's decoded source images.

A failed sample is a row with `status = 'failed'` and an `error` that says why (`<stage>: <what went wrong>`);
downstream stages skip it and the checks count it. Nothing is dropped silently. No Dagster imports here.
"""

import io
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from PIL import Image


def mark_failed(row: dict, error: str, *, clear: Iterable[str] = ()) -> dict:
    """`row` as a failed row: status, the full error text, and the `clear` columns (e.g. images) emptied."""
    row.update(status="failed", error=error)
    for column in clear:
        row[column] = None
    return row


def failure_reason(error: str | None) -> str:
    """The stage prefix of an error (`source_images: undecodable image: ...` -> `source_images`), for tallies."""
    return (error or "").split(":")[0]


class SourceImage(NamedTuple):
    uid: str
    png: bytes | None  # the stored PNG
    image: Image.Image | None  # decoded RGB; None when `error` says why not
    error: str | None


def source_images_of(lake: Any, shard: str, uids: Iterable[str], *, batch_size: int = 8) -> Iterator[SourceImage]:
    """Each wanted image uid of the shard's `source_images` once, in the shard's order, decoded to RGB or with the
    reason it cannot be used; wanted uids the shard does not have come last. Images are read and decoded a batch at
    a time, so a shard never sits in memory whole."""
    wanted = dict.fromkeys(uids)
    seen: set[str] = set()
    if wanted:
        for batch in lake.iter_batches(
            "source_images", shard, batch_size=batch_size, columns=["uid", "image", "status", "error"]
        ):
            for row in batch.to_pylist():
                uid = row["uid"]
                if uid not in wanted or uid in seen:
                    continue
                seen.add(uid)
                if row["status"] != "ok" or not row["image"]:
                    yield SourceImage(uid, None, None, f"source_images: {row['error'] or 'no image'}")
                    continue
                try:
                    image = Image.open(io.BytesIO(row["image"])).convert("RGB")
                except Exception as exc:  # noqa: BLE001 - recorded in the rows
                    yield SourceImage(uid, None, None, f"source_images: undecodable image: {exc}")
                    continue
                yield SourceImage(uid, row["image"], image, None)
    for uid in wanted:
        if uid not in seen:
            yield SourceImage(uid, None, None, f"source_images: image {uid} not in the shard")


INSTRUCTION_COLUMNS = [
    "instruction_uid",
    "image_uid",
    "instruction",
    "source_caption",
    "target_caption",
    "edit_type",
    "mode",
    "status",
    "error",
]


def instructions_by_image(lake: Any, shard: str, mode: str | None = None) -> tuple[list[dict], dict[str, list[dict]]]:
    """The shard's `edit_instructions` (only `mode`'s when given): (the failed ones, in order; the ok ones by image
    uid). Text columns only, read a batch at a time."""
    failed: list[dict] = []
    by_image: dict[str, list[dict]] = {}
    for batch in lake.iter_batches("edit_instructions", shard, batch_size=1024, columns=INSTRUCTION_COLUMNS):
        for ins in batch.to_pylist():
            if mode is not None and ins["mode"] != mode:
                continue
            if ins["status"] != "ok":
                failed.append(ins)
            else:
                by_image.setdefault(ins["image_uid"], []).append(ins)
    return failed, by_image
