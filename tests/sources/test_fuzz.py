"""Time-bounded fuzzing (issue 15): manifest parsing and image decoding.

Manifests (random bytes, and structure-aware mutations of valid JSONL / CSV / Parquet): the only allowed outcomes are
a `ManifestError` or a registered manifest whose rows round-trip. Images (mutated PNG / JPEG / TIFF / WebP / GIF): a
row with a reason or a normalised 64x64 image, never an exception out of `process_row`. Each fuzz loop stops after
a few seconds (seeded, so a failure names the seed and the case).
"""

import io
import json
import random
import time

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ultraedit_dagster.core.imaging import decode_png
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.sources.manifests import ManifestError, read_manifest, read_shard_manifest, register_manifest
from ultraedit_dagster.sources.rows import process_row

SECONDS = 3.0
SEED = 1515

TRICKY = [
    "",
    " ",
    "\x00",
    "\u2028",
    "\u0085",
    "\ufeff",
    "\ud800",
    '"',
    ",",
    "\n",
    "\r\n",
    "[",
    "{",
    "\\",
    "é",
    "\U0001f408",
    "0",
    "-1",
    "1e309",
    "null",
    "true",
    "a" * 300,
]


def _valid_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"image": f"/imgs/{i}-{rng.randrange(10**6)}.png", "caption": f"photo {i} {rng.choice(TRICKY)}"}
        if rng.random() < 0.5:
            row["id"] = f"id{i}"
        if rng.random() < 0.3:
            row["source"] = rng.choice(["coco", "", "x,y"])
        rows.append(row)
    return rows


def _jsonl(rows) -> bytes:
    ascii_only = len(rows) % 2 == 0  # \ud800 escapes one time, raw characters the other
    return "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in rows).encode("utf-8", "surrogatepass")


def _csv(rows) -> bytes:
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "caption", "id", "source"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


def _parquet(rows) -> bytes:
    def clean(v):  # Parquet strings are valid UTF-8: no lone surrogates
        return v.encode("utf-8", "replace").decode() if isinstance(v, str) else v

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{k: clean(v) for k, v in r.items()} for r in rows]), buf)
    return buf.getvalue()


def _mutate(rng: random.Random, data: bytes, text: bool) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a bit
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del data[pos:]
        elif op == 2:  # insert tricky text or random bytes
            piece = rng.choice(TRICKY).encode("utf-8", "surrogatepass") if text else rng.randbytes(rng.randint(1, 8))
            data[pos:pos] = piece
        elif op == 3 and data:  # duplicate a slice (repeated lines / chunks)
            a = rng.randrange(len(data))
            data[pos:pos] = data[a : a + rng.randint(1, 64)]
        elif op == 4:  # delete a slice
            del data[pos : pos + rng.randint(1, 16)]
        else:  # swap in a structural character
            if data:
                data[min(pos, len(data) - 1)] = ord(rng.choice(',"{}[]\n:\\'))
    return bytes(data)


def _round_trips(lake, path, reg) -> None:
    expected = read_manifest(str(path))
    got = [r for key in reg.shard_keys for r in read_shard_manifest(lake, key).to_pylist()]
    assert [(r["id"], r["image"], r["caption"], r["source"], r["license"]) for r in got] == [
        (r["id"], r["image"], r["caption"], r["source"], r["license"]) for r in expected
    ]
    assert [r["row_index"] for r in got] == list(range(len(expected)))


def test_fuzz_manifest_parsing(tmp_path):
    rng = random.Random(SEED)
    lake = Lake(str(tmp_path / "lake"))
    deadline = time.monotonic() + SECONDS
    outcomes = {"refused": 0, "registered": 0}
    case = 0
    while time.monotonic() < deadline or case < 30:
        case += 1
        fmt = rng.choice(["jsonl", "csv", "parquet"])
        valid = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[fmt](_valid_rows(rng, rng.randint(1, 6)))
        kind = rng.randrange(4)
        data = (
            rng.randbytes(rng.randint(0, 200))
            if kind == 0
            else (valid if kind == 1 else _mutate(rng, valid, fmt != "parquet"))
        )
        path = tmp_path / f"case{case}.{fmt}"
        path.write_bytes(data)
        name = f"fuzz{case}"
        try:
            reg = register_manifest(lake, str(path), name=name, shard_size=rng.randint(1, 4))
        except ManifestError as exc:
            assert str(exc), (SEED, case)
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"seed {SEED} case {case} ({fmt}, kind {kind}): {type(exc).__name__}: {exc}") from exc
        _round_trips(lake, path, reg)
        outcomes["registered"] += 1
    assert outcomes["refused"] and outcomes["registered"], outcomes


def _image_bytes(fmt: str, rng: random.Random) -> bytes:
    w, h = rng.randint(8, 48), rng.randint(8, 48)
    img = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
    mode = {"PNG": rng.choice(["RGB", "RGBA", "P", "L", "I;16"]), "GIF": "P", "TIFF": rng.choice(["RGB", "F", "CMYK"])}
    img = img.convert(mode.get(fmt, "RGB")) if mode.get(fmt, "RGB") != "I;16" else img.convert("I").convert("I;16")
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_fuzz_image_decoding(tmp_path):
    rng = random.Random(SEED)
    deadline = time.monotonic() + SECONDS
    outcomes = {"ok": 0, "failed": 0}
    case = 0
    while time.monotonic() < deadline or case < 30:
        case += 1
        fmt = rng.choice(["PNG", "JPEG", "TIFF", "WEBP", "GIF"])
        data = _image_bytes(fmt, rng)
        if rng.random() < 0.85:
            data = _mutate(rng, data, text=False)
        path = tmp_path / f"img{case}"
        path.write_bytes(data)
        row = {"uid": f"u{case}", "row_index": case, "id": None, "image": str(path), "caption": "x"}
        row.update(source=None, license=None)
        try:
            out = process_row(row, shard="f-00000", profile="tiny", size=64, min_side=4, max_pixels=4_000_000)
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"seed {SEED} case {case} ({fmt}): {type(exc).__name__}: {exc}") from exc
        if out["status"] == "ok":
            assert decode_png(out["image"]).size == (64, 64) and out["error"] is None
        else:
            assert out["status"] == "failed" and out["error"] and out["image"] is None, out
        outcomes[out["status"]] += 1
    assert outcomes["ok"] and outcomes["failed"], outcomes
