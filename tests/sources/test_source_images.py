"""source_images on good images and on every bad-input case, with the recorded reason; its checks."""

import io
import json

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from ultraedit_dagster.core.imaging import decode_png
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.sources.assets import source_images
from ultraedit_dagster.sources.checks import source_images_failed_fraction, source_images_unique_uids
from ultraedit_dagster.sources.manifests import register_manifest


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, 3))
    return Image.fromarray(np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))


def make_inputs(d):
    """Every image case of the issue: (name, file name, writer, expected status, expected error fragment)."""
    d.mkdir(parents=True, exist_ok=True)
    cases = {}

    def save(name, fn, status, fragment=None):
        fn(d / name)
        cases[name] = (status, fragment)

    save("rgb.jpg", lambda p: _photo(640, 480).save(p, quality=90), "ok")
    save("gray.png", lambda p: _photo(300, 200).convert("L").save(p), "ok")
    save("cmyk.jpg", lambda p: _photo(300, 200).convert("CMYK").save(p), "ok")
    save(
        "sixteen.png",
        lambda p: Image.fromarray((np.arange(200 * 300).reshape(200, 300) % 65535).astype(np.uint16)).save(p),
        "ok",
    )

    def palette(p):
        img = _photo(200, 200).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        img.info["transparency"] = 0
        img.save(p, transparency=0)

    save("palette_alpha.png", palette, "ok")
    save("rgba.png", lambda p: _photo(200, 200).convert("RGBA").save(p), "ok")

    def rotated(p):
        img = _photo(400, 200)  # landscape pixels, EXIF says rotate 90°: displayed portrait
        exif = Image.Exif()
        exif[0x0112] = 6
        img.save(p, exif=exif.tobytes())

    save("exif_rotated.jpg", rotated, "ok")
    save("wide.png", lambda p: _photo(20000, 100).save(p), "ok")
    save("zero.jpg", lambda p: p.write_bytes(b""), "failed", "empty file (0 bytes)")
    save("text.jpg", lambda p: p.write_text("this is not an image"), "failed", "not a decodable image")

    def truncated_png(p):
        buf = io.BytesIO()
        _photo(300, 300).save(buf, "PNG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    save("truncated.png", truncated_png, "failed", "truncated")

    def truncated_jpg(p):
        buf = io.BytesIO()
        _photo(300, 300).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    save("truncated.jpg", truncated_jpg, "failed", "truncated")
    save("bomb.png", lambda p: Image.new("1", (20000, 20000)).save(p), "failed", "decompression bomb")
    save("tiny.png", lambda p: _photo(1, 1).save(p), "failed", "smaller than the 64px minimum")
    return cases


@pytest.fixture
def shard_with_everything(lake, tmp_path):
    cases = make_inputs(tmp_path / "imgs")
    rows = [{"id": name, "image": str(tmp_path / "imgs" / name), "caption": f"a test picture {name}"} for name in cases]
    rows.append({"id": "missing", "image": str(tmp_path / "imgs" / "nope.jpg"), "caption": "gone"})
    rows.append({"id": "nocaption", "image": str(tmp_path / "imgs" / "rgb.jpg"), "caption": "   "})
    cases["missing"] = ("failed", "file not found")
    cases["nocaption"] = ("failed", "empty caption")
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    reg = register_manifest(lake, str(path), name="bad", shard_size=100)
    return reg.shard_keys[0], cases


def _materialize(lake, instance, shard, **pipeline_kwargs):
    instance.add_dynamic_partitions("shards", [shard])
    return dg.materialize(
        [source_images, source_images_unique_uids, source_images_failed_fraction],
        partition_key=shard,
        instance=instance,
        resources={"lake": LakeResource(root=lake.root), "pipeline": PipelineResource(**pipeline_kwargs)},
        raise_on_error=False,
    )


def test_every_input_case_gives_a_row_with_its_reason(lake, instance, shard_with_everything):
    shard, cases = shard_with_everything
    result = _materialize(lake, instance, shard)
    assert result.success
    rows = {r["id"]: r for r in lake.read_table("source_images", shard).to_pylist()}
    assert set(rows) == set(cases), "every manifest row has exactly one output row"
    for name, (status, fragment) in cases.items():
        row = rows[name]
        assert row["status"] == status, (name, row["error"])
        if status == "ok":
            img = decode_png(row["image"])
            assert img.size == (512, 512) and img.mode == "RGB", name
            assert row["error"] is None
        else:
            assert row["image"] is None
            assert fragment in row["error"], (name, row["error"])
    # EXIF orientation applied: original 400x200 landscape is reported as is, but the pixels were rotated first
    assert rows["exif_rotated.jpg"]["width"] == 400
    mat = result.asset_materializations_for_node("source_images")[0]
    assert mat.metadata["failed"].value == sum(1 for s, _ in cases.values() if s == "failed")
    assert "data:image/jpeg;base64," in mat.metadata["preview"].value


def test_exif_rotation_and_alpha_are_applied():
    from ultraedit_dagster.core.imaging import to_rgb

    img = _photo(400, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    assert to_rgb(Image.open(io.BytesIO(buf.getvalue()))).size == (200, 400)
    transparent = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)


def test_rerun_replaces_rows_and_checks_pass(lake, instance, shard_with_everything):
    shard, cases = shard_with_everything
    _materialize(lake, instance, shard)
    first = lake.read_table("source_images", shard)
    result = _materialize(lake, instance, shard)
    second = lake.read_table("source_images", shard)
    assert second.num_rows == len(cases) and second.equals(first)
    assert lake.list_files("source_images") == [f"shard={shard}/data.parquet"]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["source_images_unique_uids"].passed
    # 7 of 16 rows fail in this shard: over the default 25% maximum, so the warn check fails
    assert not checks["source_images_failed_fraction"].passed
    assert checks["source_images_failed_fraction"].severity == dg.AssetCheckSeverity.WARN


def test_uri_allowlist_refuses_paths_outside_the_roots(lake, instance, tmp_path):
    make_inputs(tmp_path / "ok")
    outside = tmp_path / "outside"
    outside.mkdir()
    _photo(100, 100).save(outside / "x.png")
    rows = [
        {"id": "in", "image": str(tmp_path / "ok" / "rgb.jpg"), "caption": "inside"},
        {"id": "out", "image": str(outside / "x.png"), "caption": "outside"},
        {"id": "dots", "image": str(tmp_path / "ok" / ".." / "outside" / "x.png"), "caption": "escape"},
        {"id": "http", "image": "http://example.invalid/a.png", "caption": "web"},
    ]
    path = tmp_path / "allow.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    shard = register_manifest(lake, str(path), name="allow", shard_size=10).shard_keys[0]
    _materialize(lake, instance, shard, allowed_uri_prefixes=[str(tmp_path / "ok")])
    rows = {r["id"]: r for r in lake.read_table("source_images", shard).to_pylist()}
    assert rows["in"]["status"] == "ok"
    for rid in ("out", "dots", "http"):
        assert rows[rid]["status"] == "failed" and "outside the allowed roots" in rows[rid]["error"]


def test_unique_uid_check_fails_on_duplicates():
    import duckdb
    import pyarrow as pa

    from ultraedit_dagster.sources.checks import unique_uids_result

    con = duckdb.connect()
    con.register("t", pa.table({"uid": ["a", "b", "a", "c"]}))
    result = unique_uids_result(con)
    assert not result.passed and result.metadata["duplicate_uids"].value == 1
    assert result.metadata["examples"].value == "a"
    con.register("t", pa.table({"uid": ["a", "b"]}))
    assert unique_uids_result(con).passed
