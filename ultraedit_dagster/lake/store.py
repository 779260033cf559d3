"""The lake: one Parquet file per asset per shard, written atomically.

Layout: `<root>/<asset>/shard=<key>/data.parquet`. `root` is a local folder or `s3://bucket/prefix`.

Atomicity: a local write goes to a hidden temporary file in the same folder, is fsynced, then renamed over the
target (rename is atomic on POSIX). An S3 write uploads the finished file in one PUT, so readers see the old
object or the new one, never a half. Either way a re-run replaces the shard: rows are never appended.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from ultraedit_dagster.core.partitions import validate_shard_key

# Every per-shard asset of the graph, in pipeline order (names are contracts: a lake folder and a warehouse view each).
SHARD_ASSETS = (
    "source_images",
    "captions",
    "edit_instructions",
    "region_masks",
    "edit_candidates",
    "metric_scores",
    "filtered_release",
)

DATA_FILE = "data.parquet"
_ASSET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class LakeError(RuntimeError):
    """A lake operation that failed; the message says which object and why."""


def validate_asset_name(asset: str) -> str:
    if not isinstance(asset, str) or not _ASSET_NAME.match(asset):
        raise LakeError(f"asset name {asset!r} must match {_ASSET_NAME.pattern}")
    return asset


def shard_relpath(asset: str, shard: str) -> str:
    return f"{validate_asset_name(asset)}/shard={validate_shard_key(shard)}/{DATA_FILE}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise LakeError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass
class Lake:
    """Shard storage over a local folder or an S3 bucket (any S3-compatible endpoint via the boto3 client)."""

    root: str
    s3_client: Any = None  # a boto3 S3 client, required when root is s3://

    def __post_init__(self) -> None:
        self.root = self.root.rstrip("/")
        if self.is_s3:
            if self.s3_client is None:
                raise LakeError(f"lake root {self.root!r} is on S3 but no S3 client was configured")
            self.bucket, self.prefix = split_s3_uri(self.root)
        else:
            self.root = str(Path(self.root).expanduser().resolve())

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    # -- addressing -------------------------------------------------------------------------------------------

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def shard_uri(self, asset: str, shard: str) -> str:
        return f"{self.root}/{shard_relpath(asset, shard)}"

    def asset_glob(self, asset: str) -> str:
        """The glob DuckDB reads for every shard of an asset."""
        return f"{self.root}/{validate_asset_name(asset)}/shard=*/{DATA_FILE}"

    # -- writing ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_writer(self, asset: str, shard: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """Stream row groups into a shard; it becomes visible only when the block exits without error."""
        relpath = shard_relpath(asset, shard)
        if self.is_s3:
            with tempfile.TemporaryDirectory(prefix="ultraedit-") as tmpdir:
                tmp_path = os.path.join(tmpdir, DATA_FILE)
                with pq.ParquetWriter(tmp_path, schema, compression="zstd") as writer:
                    yield writer
                self._put_s3(self._key(relpath), tmp_path)
            return
        final = Path(self.root) / relpath
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = final.parent / f".{DATA_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            with pq.ParquetWriter(str(tmp_path), schema, compression="zstd") as writer:
                yield writer
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, final)
            _remove_stale_temporaries(final.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    def write_table(self, asset: str, shard: str, table: pa.Table, row_group_size: int = 64) -> str:
        """Write a whole shard (replacing the previous one); returns its URI."""
        with self.open_writer(asset, shard, table.schema) as writer:
            writer.write_table(table, row_group_size=row_group_size)
        return self.shard_uri(asset, shard)

    def _put_s3(self, key: str, local_path: str) -> None:
        try:
            with open(local_path, "rb") as body:
                # one PUT of the finished object: readers see the old object or the new one, never a part
                self.s3_client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except Exception as exc:  # botocore raises many types; say which object failed
            raise LakeError(f"S3 upload of s3://{self.bucket}/{key} failed: {exc}") from exc

    # -- reading ----------------------------------------------------------------------------------------------

    def exists(self, asset: str, shard: str) -> bool:
        relpath = shard_relpath(asset, shard)
        if self.is_s3:
            try:
                self.s3_client.head_object(Bucket=self.bucket, Key=self._key(relpath))
                return True
            except Exception:
                return False
        return (Path(self.root) / relpath).is_file()

    def _parquet_file(self, asset: str, shard: str) -> pq.ParquetFile:
        relpath = shard_relpath(asset, shard)
        if self.is_s3:
            try:
                obj = self.s3_client.get_object(Bucket=self.bucket, Key=self._key(relpath))
                return pq.ParquetFile(io.BytesIO(obj["Body"].read()))
            except Exception as exc:
                raise LakeError(f"cannot read {self.shard_uri(asset, shard)}: {exc}") from exc
        path = Path(self.root) / relpath
        if not path.is_file():
            raise LakeError(f"{asset} has no data for shard {shard!r} at {path}: materialize it first")
        return pq.ParquetFile(str(path))

    def read_table(self, asset: str, shard: str, columns: list[str] | None = None) -> pa.Table:
        return self._parquet_file(asset, shard).read(columns=columns)

    def iter_batches(
        self, asset: str, shard: str, batch_size: int = 64, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream a shard in record batches, so a shard's images are never all in memory at once."""
        yield from self._parquet_file(asset, shard).iter_batches(batch_size=batch_size, columns=columns)

    def columns(self, asset: str, shard: str) -> list[str]:
        return list(self._parquet_file(asset, shard).schema_arrow.names)

    def num_rows(self, asset: str, shard: str) -> int:
        return self._parquet_file(asset, shard).metadata.num_rows

    def _s3_relative_keys(self, relprefix: str) -> list[str]:
        """Every object key under `<root>/<relprefix>`, relative to it (paginated: any number of shards)."""
        prefix = self._key(relprefix)
        keys: list[str] = []
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
        return keys

    def list_shards(self, asset: str) -> list[str]:
        validate_asset_name(asset)
        if self.is_s3:
            rels = self._s3_relative_keys(f"{asset}/")
        else:
            base = Path(self.root) / asset
            rels = [str(p.relative_to(base)) for p in base.glob(f"shard=*/{DATA_FILE}")] if base.exists() else []
        return sorted(r.split("/")[0][len("shard=") :] for r in rels if r.endswith(f"/{DATA_FILE}"))

    def list_files(self, asset: str) -> list[str]:
        """Every object under an asset's folder (used by tests and checks to prove one file per shard)."""
        validate_asset_name(asset)
        if self.is_s3:
            return sorted(self._s3_relative_keys(f"{asset}/"))
        base = Path(self.root) / asset
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []

    # -- side files (shard manifests, release files) -------------------------------------------------------------

    def write_bytes(self, relpath: str, data: bytes) -> str:
        _check_relpath(relpath)
        if self.is_s3:
            try:
                self.s3_client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data)
            except Exception as exc:
                raise LakeError(f"S3 upload of {self.root}/{relpath} failed: {exc}") from exc
        else:
            final = Path(self.root) / relpath
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, final)
            finally:  # a full disk or a failed rename leaves no temporary behind
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return f"{self.root}/{relpath}"

    def create_bytes(self, relpath: str, data: bytes) -> bool:
        """Write `relpath` only if it does not exist yet, atomically: True when this call created it, False when it
        was already there (then nothing is written). Two writers racing for one name: exactly one gets True.

        Locally the finished temporary file is hard-linked to the final name (link fails if the name exists); on S3
        the PUT carries `If-None-Match: *` (a conditional write: 412 when the object exists)."""
        _check_relpath(relpath)
        if self.is_s3:
            try:
                self.s3_client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data, IfNoneMatch="*")
                return True
            except Exception as exc:
                response = getattr(exc, "response", None) or {}
                code = str(response.get("Error", {}).get("Code", ""))
                status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("PreconditionFailed", "412") or status == 412:
                    return False
                raise LakeError(f"conditional S3 upload of {self.root}/{relpath} failed: {exc}") from exc
        final = Path(self.root) / relpath
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def read_bytes(self, relpath: str) -> bytes:
        _check_relpath(relpath)
        if self.is_s3:
            try:
                return self.s3_client.get_object(Bucket=self.bucket, Key=self._key(relpath))["Body"].read()
            except Exception as exc:
                raise LakeError(f"cannot read {self.root}/{relpath}: {exc}") from exc
        path = Path(self.root) / relpath
        if not path.is_file():
            raise LakeError(f"missing lake file {path}")
        return path.read_bytes()

    def replace_folder(self, relpath: str, src: Path) -> str:
        """Replace the folder `<root>/<relpath>` with the local folder `src` (e.g. a release); returns its URI.

        Locally the new folder is swapped in by rename; on S3 every file is uploaded, then objects the new folder
        does not have are deleted.
        """
        _check_relpath(relpath)
        if not self.is_s3:
            swap_folder(src, Path(self.root) / relpath)
            return f"{self.root}/{relpath}"
        new_keys = set()
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            key = self._key(f"{relpath}/{path.relative_to(src).as_posix()}")
            self._put_s3(key, str(path))
            new_keys.add(key)
        for key in self._s3_relative_keys(f"{relpath}/"):
            full = self._key(f"{relpath}/{key}")
            if full not in new_keys:
                self.s3_client.delete_object(Bucket=self.bucket, Key=full)
        return f"{self.root}/{relpath}"

    def has_bytes(self, relpath: str) -> bool:
        _check_relpath(relpath)
        if self.is_s3:
            try:
                self.s3_client.head_object(Bucket=self.bucket, Key=self._key(relpath))
                return True
            except Exception:
                return False
        return (Path(self.root) / relpath).is_file()


def swap_folder(src: Path, dest: Path) -> None:
    """Replace local folder `dest` with a copy of `src`: copy beside it, then swap by rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging, old = dest.parent / f".{dest.name}.new", dest.parent / f".{dest.name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(staging, dest)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove temporary files left by writers that were killed (SIGKILL, OOM) before they could clean up.

    Called after a successful replace: the shard is complete, so any other temporary in its folder is garbage.
    """
    for stale in folder.glob(f".{DATA_FILE}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _check_relpath(relpath: str) -> None:
    parts = relpath.split("/")
    if relpath.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in relpath:
        raise LakeError(f"lake path {relpath!r} must be a relative path without '.', '..' or empty parts")
