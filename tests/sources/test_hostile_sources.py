"""source_images against hostile inputs (issue 15 items 3, 4, 8, 12, 14): a symlink flipped after the allowlist
check, extreme aspect ratios, S3 outages, NUL bytes in paths, NaN float TIFFs, captions of invisible characters."""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from tests.conftest import free_port
from ultraedit_dagster.core.imaging import decode_png
from ultraedit_dagster.sources import rows as source_rows
from ultraedit_dagster.sources.rows import (
    RETRYABLE_MARK,
    SOURCE_IMAGES_SCHEMA,
    FetchBreaker,
    clean_caption,
    is_retryable_error,
    process_row,
    shards_with_retryable_rows,
)


def _row(image: str, caption: str = "a picture", uid: str = "u1") -> dict:
    return {"uid": uid, "row_index": 0, "id": None, "image": image, "caption": caption, "source": None, "license": None}


def _process(row, **kw):
    kw.setdefault("allowed_prefixes", ())
    return process_row(row, shard="t-00000", profile="tiny", size=64, min_side=8, max_pixels=50_000_000, **kw)


def _png(w, h, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


# -- item 3: the allowlist is checked on the descriptor that is read ------------------------------------------------


def test_symlink_flipped_after_the_check_cannot_escape_the_allowlist(tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "ok.png").write_bytes(_png(32, 32, (0, 255, 0)))
    (outside / "secret.png").write_bytes(_png(32, 32, (255, 0, 0)))
    link = root / "link.png"
    link.symlink_to(root / "ok.png")

    real_check = source_rows.check_uri_allowed

    def check_then_flip(uri, prefixes):
        real_check(uri, prefixes)  # the link points inside the root when it is checked ...
        link.unlink()
        link.symlink_to(outside / "secret.png")  # ... and outside when it is opened

    monkeypatch.setattr(source_rows, "check_uri_allowed", check_then_flip)
    out = _process(_row(str(link)), allowed_prefixes=[str(root)])
    assert out["status"] == "failed" and "outside the allowed roots" in out["error"], out["error"]
    assert out["image"] is None

    # a link that stays inside the root is fine, and so is a plain file
    monkeypatch.setattr(source_rows, "check_uri_allowed", real_check)
    link.unlink()
    link.symlink_to(root / "ok.png")
    assert _process(_row(str(link)), allowed_prefixes=[str(root)])["status"] == "ok"
    assert _process(_row(f"file://{root / 'ok.png'}"), allowed_prefixes=[str(root)])["status"] == "ok"


def test_fifos_and_directories_are_rows_not_hangs(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir.png").mkdir()
    for name in ("pipe.png", "dir.png"):
        out = _process(_row(str(tmp_path / name)), allowed_prefixes=[str(tmp_path)])
        assert out["status"] == "failed" and ("not a regular file" in out["error"] or "cannot" in out["error"])


# -- item 12: NUL bytes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefixes", [(), ("/tmp",)])
def test_nul_byte_in_an_image_path_is_one_failed_row(tmp_path, prefixes):
    for uri in ("/tmp/a\x00b.png", "file:///tmp/a%00b.png", f"{tmp_path}/x\x00.png"):
        out = _process(_row(uri), allowed_prefixes=prefixes)
        assert out["status"] == "failed" and "NUL byte" in out["error"], (uri, out["error"])


# -- item 4: work bounded by the output size ----------------------------------------------------------------------


def test_extreme_aspect_ratio_is_cropped_before_resizing(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("L", (64, 200_000), 128).save(strip, optimize=True)
    assert strip.stat().st_size < 400_000
    import tracemalloc

    tracemalloc.start()
    out = process_row(_row(str(strip)), shard="t-00000", profile="tiny", size=512, min_side=64, max_pixels=89_478_485)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out["status"] == "ok", out["error"]
    assert decode_png(out["image"]).size == (512, 512)
    assert (out["width"], out["height"]) == (64, 200_000)
    assert peak < 200 << 20  # resizing first made a 512 x 1,600,000 intermediate (2.4 GB)


def test_a_decoder_surprise_fails_the_row_not_the_shard(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(_png(32, 32))

    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(source_rows, "resize_center_crop", boom)
    out = _process(_row(str(tmp_path / "a.png")))
    assert out["status"] == "failed" and "not enough memory" in out["error"]
    monkeypatch.setattr(source_rows, "resize_center_crop", lambda *a: (_ for _ in ()).throw(SystemError("odd")))
    out = _process(_row(str(tmp_path / "a.png")))
    assert out["status"] == "failed" and out["error"] == "cannot normalise image: SystemError: odd"


# -- item 14: NaN float TIFFs and invisible captions -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_nan_or_inf_is_a_failed_row(tmp_path, bad):
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr[3, 5] = bad
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    out = _process(_row(str(tmp_path / "f.tif")))
    assert out["status"] == "failed" and "NaN or infinite" in out["error"]
    arr[3, 5] = 0.5
    Image.fromarray(arr, mode="F").save(tmp_path / "g.tif")
    assert _process(_row(str(tmp_path / "g.tif")))["status"] == "ok"


@pytest.mark.parametrize("caption", ["\u200b\u200c\u200d", "\u0301\u0308", "\u200d \u0301 \ufe0f", "\u2060\u034f"])
def test_captions_of_only_invisible_characters_are_empty(tmp_path, caption):
    assert clean_caption(caption) == ""
    (tmp_path / "a.png").write_bytes(_png(32, 32))
    out = _process(_row(str(tmp_path / "a.png"), caption=caption))
    assert out["status"] == "failed" and out["error"] == "empty caption"
    assert clean_caption("cafe\u0301 \U0001f408") == "café \U0001f408"  # marks on a base and emoji stay


# -- item 8: transient S3 errors retried, then marked retryable ------------------------------------------------------


def _dead_s3_client():
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=1),
    )


def test_unreachable_s3_is_retried_then_marked_retryable_and_the_breaker_opens():
    client = _dead_s3_client()
    sleeps: list[float] = []
    breaker = FetchBreaker(threshold=2)
    outs = [
        _process(
            _row(f"s3://b/img{i}.png", uid=f"u{i}"),
            s3_client_factory=lambda: client,
            breaker=breaker,
            sleep=sleeps.append,
        )
        for i in range(4)
    ]
    for out in outs:
        assert out["status"] == "failed" and out["error"].startswith(RETRYABLE_MARK), out["error"]
        assert is_retryable_error(out["error"]) and is_retryable_error(f"source_images: {out['error']}")
    assert "after 4 attempts" in outs[0]["error"] and "EndpointConnectionError" in outs[0]["error"]
    assert len(sleeps) == 2 * 3 and sleeps[0] < sleeps[1] < sleeps[2] * 2  # two rows retried with backoff
    assert "not attempted after 2 consecutive transient failures" in outs[2]["error"]  # then the breaker is open


def test_s3_permanent_errors_fail_at_once_and_recovery_succeeds(moto_server, tmp_path):
    client = moto_server.client()
    client.create_bucket(Bucket="imgs")
    client.put_object(Bucket="imgs", Key="a.png", Body=_png(40, 40))
    sleeps: list[float] = []
    missing = _process(_row("s3://imgs/none.png"), s3_client_factory=lambda: client, sleep=sleeps.append)
    assert missing["status"] == "failed" and not is_retryable_error(missing["error"]) and not sleeps
    assert "NoSuchKey" in missing["error"]

    # the first attempt hits an outage, the second succeeds
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        return _dead_s3_client() if calls["n"] == 1 else client

    ok = _process(_row("s3://imgs/a.png"), s3_client_factory=flaky, sleep=sleeps.append)
    assert ok["status"] == "ok" and len(sleeps) == 1
    assert not is_retryable_error(None) and not is_retryable_error("captions: empty caption")


def test_shards_with_retryable_rows(lake):
    def shard_rows(shard, errors):
        rows = []
        for i, e in enumerate(errors):
            r = _process(_row("/nonexistent.png", uid=f"{shard}-{i}"))
            r.update(shard=shard, status="failed" if e else "ok", error=e)
            rows.append(r)
        lake.write_table("source_images", shard, pa.Table.from_pylist(rows, schema=SOURCE_IMAGES_SCHEMA))

    assert shards_with_retryable_rows(lake) == []
    shard_rows("a-00000", [None, "file not found: x"])
    shard_rows("a-00001", [RETRYABLE_MARK + "cannot fetch s3://b/k after 4 attempts: EndpointConnectionError"])
    shard_rows("a-00002", [None])
    assert shards_with_retryable_rows(lake) == ["a-00001"]


def test_the_asset_counts_retryable_rows(lake, instance, tmp_path):
    import dagster as dg

    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.resources import LakeResource
    from ultraedit_dagster.sources.assets import source_images
    from ultraedit_dagster.sources.manifests import register_manifest

    (tmp_path / "a.png").write_bytes(_png(80, 80))
    manifest = tmp_path / "m.jsonl"
    rows = [{"image": str(tmp_path / "a.png"), "caption": "ok"}, {"image": "/x\u0000y.png", "caption": "nul"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    shard = register_manifest(lake, str(manifest), name="nul", shard_size=10).shard_keys[0]
    instance.add_dynamic_partitions("shards", [shard])
    result = dg.materialize(
        [source_images],
        partition_key=shard,
        instance=instance,
        resources={
            "lake": LakeResource(root=lake.root),
            "pipeline": PipelineResource(allowed_uri_prefixes=[str(tmp_path)]),
        },
        raise_on_error=False,
    )
    assert result.success  # the NUL path with an allowlist is one failed row, not a crashed step
    [mat] = result.asset_materializations_for_node("source_images")
    assert mat.metadata["failed"].value == 1 and mat.metadata["retryable"].value == 0
    got = {r["caption_gt"]: r for r in lake.read_table("source_images", shard).to_pylist()}
    assert got["ok"]["status"] == "ok" and "NUL byte" in got["nul"]["error"]


def test_shards_with_retryable_rows_on_an_s3_lake(moto_server, monkeypatch):
    """`backfill --failed` and the nightly rebuild look for rows marked retryable on an S3 lake too (DuckDB reads it
    with httpfs from its package; nothing is downloaded), and in the text stage's rows."""
    from ultraedit_dagster.lake.store import Lake

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    s3_lake = Lake("s3://lake/prefix", s3_client=client)
    assert shards_with_retryable_rows(s3_lake) == []
    for shard, error in (("s-00000", None), ("s-00001", RETRYABLE_MARK + "cannot fetch s3://b/k")):
        row = _process(_row("/nonexistent.png", uid=shard))
        row.update(shard=shard, status="failed" if error else "ok", error=error)
        s3_lake.write_table("source_images", shard, pa.Table.from_pylist([row], schema=SOURCE_IMAGES_SCHEMA))
    texts = {"s-00000": "request failed: retryable: HTTP 500: internal error", "s-00001": "parse failed: none"}
    for shard, error in texts.items():
        table = pa.table({"shard": [shard], "status": ["failed"], "error": [error]})
        s3_lake.write_table("edit_instructions", shard, table)
    assert shards_with_retryable_rows(s3_lake) == ["s-00001"]
    assert shards_with_retryable_rows(s3_lake, "edit_instructions") == ["s-00000"]
