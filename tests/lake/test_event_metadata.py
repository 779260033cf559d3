"""Event metadata stays small (issue 13 item 5): previews embedded in materialization metadata are bounded thumbnails
and full previews are files in the lake (written by the stage assets), so 4,000 shards do not put gigabytes into the
instance database."""

import numpy as np
from PIL import Image

from ultraedit_dagster.core.imaging import MAX_EMBEDDED_PREVIEW_BYTES, bounded_jpeg, markdown_image, thumbnail_grid

PER_SHARD_METADATA_LIMIT = 100_000


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:  # incompressible: the worst case for a preview
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_embedded_preview_is_bounded_whatever_the_image():
    for size in ((64, 64), (512, 256), (2048, 1536)):
        data = bounded_jpeg(_noise(*size))
        assert len(data) <= MAX_EMBEDDED_PREVIEW_BYTES, size
        assert data[:2] == b"\xff\xd8"  # a JPEG
    md = markdown_image(thumbnail_grid([_noise(512, 512, s) for s in range(16)], columns=4, thumb=192))
    assert md.startswith("![preview](data:image/jpeg;base64,") and len(md) < 60_000


def test_a_shard_materialization_keeps_its_metadata_under_100_kb(tmp_path, instance):
    """A real source_images materialization of a shard of 8 incompressible 512x512 images: the whole serialized
    materialization event (metadata included) stays under 100 KB; the old PNG grid alone was ~800 KB."""
    import json

    import dagster as dg
    from dagster._serdes import serialize_value

    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.resources import LakeResource
    from ultraedit_dagster.lake.store import Lake
    from ultraedit_dagster.sources.assets import source_images
    from ultraedit_dagster.sources.manifests import register_manifest

    rows = []
    for i in range(8):
        path = tmp_path / f"n{i}.png"
        _noise(512, 512, i).save(path)
        rows.append({"id": f"n{i}", "image": str(path), "caption": f"noise {i}"})
    manifest = tmp_path / "noise.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lake = Lake(str(tmp_path / "lake"))
    shard = register_manifest(lake, str(manifest), name="noise", shard_size=8).shard_keys[0]
    instance.add_dynamic_partitions("shards", [shard])
    result = dg.materialize(
        [source_images],
        partition_key=shard,
        instance=instance,
        resources={"lake": LakeResource(root=lake.root), "pipeline": PipelineResource()},
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("source_images")
    size = len(serialize_value(mat))
    print(f"source_images materialization event: {size} bytes")
    assert size < PER_SHARD_METADATA_LIMIT
    assert "data:image/jpeg;base64," in mat.metadata["preview"].value
    # the full preview is one small file per shard in the lake, linked from the metadata
    relpath = f"previews/source_images/shard={shard}.png"
    assert mat.metadata["preview_file"].value.endswith(relpath)
    assert lake.read_bytes(relpath)[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_file_in_the_lake_and_bounded_thumbnail_in_the_metadata(tmp_path):
    from ultraedit_dagster.core.imaging import decode_png
    from ultraedit_dagster.lake.resources import LakeResource

    lake = LakeResource(root=str(tmp_path / "lake"))
    grid = thumbnail_grid([_noise(512, 512, s) for s in range(8)], columns=4, thumb=256)
    metadata = lake.preview_metadata("source_images", "demo-00000", grid, alt="demo")
    uri = metadata["preview_file"].value
    assert uri == f"{lake.lake.root}/previews/source_images/shard=demo-00000.png"
    assert decode_png(lake.lake.read_bytes("previews/source_images/shard=demo-00000.png")).size == grid.size
    assert len(metadata["preview"].value) < 60_000
    assert lake.lake.list_files("source_images") == []  # the preview is not one of the asset's shard files
