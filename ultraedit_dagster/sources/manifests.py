"""Source manifests: read, validate, split into shard manifests.

A manifest is JSONL, CSV or Parquet with columns `image` (local path, file:// or s3:// URI), `caption`, and optional
`id`, `source`, `license`. Relative local paths are resolved against the manifest's folder. Registration writes one
shard manifest per `shard_size` rows into the lake (`manifests/<key>.parquet`) plus a registration record; the same
manifest registered twice adds nothing, and a different manifest under an existing name is refused (shards are
immutable once registered: give the new data a new name).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.core.partitions import shard_key, validate_manifest_name
from ultraedit_dagster.core.profiles import Profile, profile_for_recipe
from ultraedit_dagster.editing.params import RECIPES
from ultraedit_dagster.lake.store import Lake

REQUIRED_COLUMNS = ("image", "caption")
OPTIONAL_COLUMNS = ("id", "source", "license")
MANIFEST_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("row_index", pa.int64()),
        ("id", pa.string()),
        ("image", pa.string()),
        ("caption", pa.string()),
        ("source", pa.string()),
        ("license", pa.string()),
    ]
)
DEFAULT_SHARD_SIZE = 1000


class ManifestError(ValueError):
    """A manifest that cannot be registered; the message says what is wrong and where."""


@dataclass(frozen=True)
class Registration:
    name: str
    shard_keys: list[str]
    new_shard_keys: list[str]
    rows: int
    content_hash: str


def default_manifest_name(path: str) -> str:
    stem = Path(path).name.split(".")[0].lower()
    cleaned = "".join(c if c.isascii() and c.isalnum() else "-" for c in stem).strip("-")
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned[:58].strip("-") or "manifest"


def read_manifest(path: str) -> list[dict]:
    """Rows of a JSONL / CSV / Parquet manifest as dicts, validated; relative image paths made absolute."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest {path!r} does not exist or is not a file")
    suffix = "".join(p.suffixes[-1:]).lower()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ManifestError(f"manifest {path!r} is unreadable: {exc}") from None
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _read_jsonl(raw, path)
    elif suffix == ".csv":
        rows = _read_csv(raw, path)
    elif suffix == ".parquet":
        try:
            rows = pq.read_table(io.BytesIO(raw)).to_pylist()
        except Exception as exc:
            raise ManifestError(f"manifest {path!r} is not a readable Parquet file: {exc}") from None
    else:
        raise ManifestError(f"manifest {path!r}: unsupported format {suffix!r} (use .jsonl, .csv or .parquet)")
    return validate_rows(rows, path, base_dir=p.resolve().parent)


def _read_jsonl(raw: bytes, path: str) -> list[dict]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path!r} is not valid UTF-8 (byte {exc.start})") from None
    rows = []
    # JSONL lines end at "\n" only: str.splitlines would also cut at U+2028, U+0085 and other separators that
    # json.dumps(..., ensure_ascii=False) leaves inside strings
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path!r} line {lineno}: malformed JSON ({exc.msg})") from None
        except RecursionError:
            raise ManifestError(f"manifest {path!r} line {lineno}: malformed JSON (nested too deeply)") from None
        if not isinstance(row, dict):
            raise ManifestError(f"manifest {path!r} line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_csv(raw: bytes, path: str) -> list[dict]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path!r} is not valid UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                where = f"manifest {path!r} line {reader.line_num}"
                raise ManifestError(
                    f"{where}: {len(record)} fields but the header has {len(header)} "
                    f"({', '.join(header)}); quote values that contain commas: {','.join(record)[:200]!r}"
                )
            rows.append(dict(zip(header, record, strict=True)))
        return rows
    except csv.Error as exc:
        raise ManifestError(f"manifest {path!r}: malformed CSV ({exc})") from None


def validate_rows(rows: list[dict], path: str, base_dir: Path | None = None) -> list[dict]:
    if not rows:
        raise ManifestError(f"manifest {path!r} has no rows")
    columns = set().union(*(r.keys() for r in rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"manifest {path!r} is missing required column(s) {', '.join(missing)}; "
            f"found {', '.join(sorted(map(str, columns))) or 'none'}"
        )
    out: list[dict] = []
    seen_ids: dict[str, int] = {}
    for i, row in enumerate(rows):
        where = f"manifest {path!r} row {i + 1}"
        image = row.get("image")
        if not isinstance(image, str) or not image.strip():
            raise ManifestError(f"{where}: `image` must be a non-empty string, got {image!r:.80}")
        caption = row.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ManifestError(f"{where}: `caption` must be a string, got {type(caption).__name__}")
        image = image.strip()
        if "://" not in image and base_dir is not None and not os.path.isabs(image):
            # a NUL byte cannot name a file: the row is kept as given and fails in source_images with the reason
            joined = base_dir / image
            image = str(joined) if "\x00" in image else str(joined.resolve())
        rid = row.get("id")
        if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
            raise ManifestError(f"{where}: `id` must be a string or integer, got {type(rid).__name__}")
        for column in ("image", "caption", "id", "source", "license"):
            value = image if column == "image" else row.get(column)
            if isinstance(value, str) and not _is_utf8(value):
                raise ManifestError(f"{where}: `{column}` holds a lone surrogate (not valid Unicode): {value!r:.80}")
        # rows without ids are identified by (image, caption): COCO-style manifests repeat an image per caption
        identity = str(rid) if rid not in (None, "") else f"{image}\x1f{caption or ''}"
        if identity in seen_ids:
            what = f"id {rid!r}" if rid not in (None, "") else f"image+caption {image!r}"
            raise ManifestError(f"{where}: duplicate {what} (first seen in row {seen_ids[identity] + 1})")
        seen_ids[identity] = i
        out.append(
            {
                "id": None if rid in (None, "") else str(rid),
                "image": image,
                "caption": caption or "",  # empty captions become failed rows in source_images, with a reason
                "source": _opt_str(row.get("source")),
                "license": _opt_str(row.get("license")),
                "identity": identity,
            }
        )
    return out


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def content_hash(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["id"], r["image"], r["caption"], r["source"], r["license"]]).encode())
    return h.hexdigest()


def registration_relpath(name: str) -> str:
    return f"manifests/{validate_manifest_name(name)}/_registration.json"


def shard_manifest_relpath(key: str) -> str:
    return f"manifests/{key}.parquet"


def split_into_shards(name: str, rows: list[dict], shard_size: int) -> dict[str, pa.Table]:
    if shard_size < 1:
        raise ManifestError(f"shard size must be ≥ 1, got {shard_size}")
    n_shards = (len(rows) + shard_size - 1) // shard_size
    shard_key(name, n_shards - 1)  # refuses a manifest that would need more shard indexes than keys allow
    out = {}
    for s in range(n_shards):
        chunk = rows[s * shard_size : (s + 1) * shard_size]
        records = [
            {
                "uid": make_uid("image", name, r["identity"]),
                "row_index": s * shard_size + j,
                "id": r["id"],
                "image": r["image"],
                "caption": r["caption"],
                "source": r["source"],
                "license": r["license"],
            }
            for j, r in enumerate(chunk)
        ]
        out[shard_key(name, s)] = pa.Table.from_pylist(records, schema=MANIFEST_SCHEMA)
    return out


def register_manifest(
    lake: Lake,
    path: str,
    name: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    existing_keys: set[str] = frozenset(),
    recipe: str | None = None,
) -> Registration:
    """Write shard manifests to the lake (once) and return the shard keys; `new_shard_keys` are those not in
    `existing_keys`.

    Registration is atomic per name: the registration record is created first with a conditional create
    (`Lake.create_bytes`: a hard link locally, `If-None-Match: *` on S3), so of two manifests registered at once
    under one name exactly one wins and the other is refused. The record says `pending` until every shard manifest
    is written, then `complete`; a registration that crashed in between simply runs again with the same data."""
    name = validate_manifest_name(name or default_manifest_name(path))
    if recipe is not None and recipe not in RECIPES:
        raise ManifestError(f"unknown recipe {recipe!r}: one of {', '.join(RECIPES)} (docs/method.md §12)")
    rows = read_manifest(path)
    digest = content_hash(rows)
    shards = split_into_shards(name, rows, shard_size)
    keys = list(shards)
    record = {
        "name": name,
        "source_path": str(path),
        "rows": len(rows),
        "shard_size": shard_size,
        "content_hash": digest,
        "shard_keys": keys,
        "state": "pending",
    }
    if recipe is not None:  # this manifest's generation recipe; absent: the active profile's (docs/method.md §12)
        record["recipe"] = recipe
    reg_path = registration_relpath(name)
    if not lake.create_bytes(reg_path, json.dumps(record, indent=2).encode()):
        existing = _read_record(lake, reg_path, name)
        if existing.get("content_hash") != digest:
            raise ManifestError(
                f"a different manifest is already registered as {name!r} "
                f"({existing.get('rows')} rows, shard size {existing.get('shard_size')}); registered shards are "
                "immutable: register the new data under another --name"
            )
        if existing.get("shard_size") != shard_size:
            raise ManifestError(
                f"this manifest is already registered as {name!r} with shard size {existing.get('shard_size')} "
                f"(not {shard_size}); registered shards are immutable: use --shard-size "
                f"{existing.get('shard_size')}, or register it under another --name to split it differently"
            )
        if existing.get("recipe") != recipe:
            raise ManifestError(
                f"this manifest is already registered as {name!r} with recipe {existing.get('recipe') or 'default'} "
                f"(not {recipe or 'default'}); to run the same data through another recipe register it under another "
                "--name"
            )
        if existing.get("state", "complete") == "complete":
            keys = list(existing["shard_keys"])
            return Registration(name, keys, [k for k in keys if k not in existing_keys], len(rows), digest)
    # this call owns the name (or finishes a registration of the same data that was interrupted)
    for key, table in shards.items():
        buf = io.BytesIO()
        pq.write_table(table, buf)
        lake.write_bytes(shard_manifest_relpath(key), buf.getvalue())
    lake.write_bytes(reg_path, json.dumps({**record, "state": "complete"}, indent=2).encode())
    return Registration(name, keys, [k for k in keys if k not in existing_keys], len(rows), digest)


def _read_record(lake: Lake, reg_path: str, name: str) -> dict:
    try:
        record = json.loads(lake.read_bytes(reg_path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"the registration record of {name!r} ({reg_path}) is damaged: {exc}") from None
    if not isinstance(record, dict):
        raise ManifestError(f"the registration record of {name!r} ({reg_path}) is damaged")
    return record


def manifest_recipe(lake: Lake, key: str) -> str | None:
    """The recipe the shard's manifest was registered with (None: the active profile's), docs/method.md §12. The
    manifest name is the shard key without its `-<nnnnn>` index; a shard without a registration record has none."""
    name = key.rsplit("-", 1)[0]
    reg_path = registration_relpath(name)
    if not _registered(lake, reg_path):
        return None
    return _read_record(lake, reg_path, name).get("recipe")


def shard_profile(profile: Profile, lake: Lake, key: str) -> Profile:
    """The profile shard `key` is generated, selected and checked under: the active `profile`, or its variant for
    the recipe the shard's manifest was registered with (docs/method.md §12)."""
    return profile_for_recipe(profile, manifest_recipe(lake, key))


def _registered(lake: Lake, relpath: str) -> bool:
    """Whether the registration record exists; any other S3 error propagates (a shard must not silently fall back
    to the default recipe because a request failed)."""
    if not lake.is_s3:
        return (Path(lake.root) / relpath).is_file()
    from botocore.exceptions import ClientError

    try:
        lake.s3_client.head_object(Bucket=lake.bucket, Key=lake._key(relpath))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def read_shard_manifest(lake: Lake, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(lake.read_bytes(shard_manifest_relpath(key))))
