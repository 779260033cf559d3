"""The lake's atomic writes (local and S3 through moto's server), the warehouse views, and loading the definitions."""

import json
import os
import subprocess
import sys

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from tests.conftest import REPO
from ultraedit_dagster.lake.store import Lake, LakeError
from ultraedit_dagster.lake.warehouse import connect_writer, refresh_views


def _table(n, tag="a"):
    return pa.table({"uid": [f"{tag}{i}" for i in range(n)], "shard": ["s-00000"] * n, "status": ["ok"] * n})


class Boom(RuntimeError):
    pass


def _interrupted_write(lake, asset, shard, table):
    with pytest.raises(Boom):
        with lake.open_writer(asset, shard, table.schema) as writer:
            writer.write_table(table.slice(0, 1))
            raise Boom("crash in the middle of a shard")


def test_interrupted_write_leaves_previous_shard_intact_and_no_partial_file(lake):
    _interrupted_write(lake, "source_images", "s-00000", _table(5))
    assert not lake.exists("source_images", "s-00000")
    assert lake.list_files("source_images") == []  # no temporary file left behind either

    lake.write_table("source_images", "s-00000", _table(3, "old"))
    _interrupted_write(lake, "source_images", "s-00000", _table(5, "new"))
    assert lake.read_table("source_images", "s-00000").column("uid").to_pylist() == ["old0", "old1", "old2"]
    assert lake.list_files("source_images") == ["shard=s-00000/data.parquet"]


def test_rewrite_replaces_rather_than_appends(lake):
    lake.write_table("captions", "s-00000", _table(4, "x"))
    lake.write_table("captions", "s-00000", _table(2, "y"))
    assert lake.read_table("captions", "s-00000").column("uid").to_pylist() == ["y0", "y1"]
    assert lake.list_shards("captions") == ["s-00000"]


@pytest.mark.parametrize(
    "asset, shard", [("../etc", "s-00000"), ("source_images", "../../x-00000"), ("source_images", "/abs")]
)
def test_paths_cannot_escape_the_lake(lake, asset, shard):
    with pytest.raises((LakeError, ValueError)):
        lake.write_table(asset, shard, _table(1))
    with pytest.raises(LakeError):
        lake.write_bytes("../outside.txt", b"x")


def test_warehouse_views_return_the_lake_rows(lake, tmp_path):
    lake.write_table("source_images", "a-00000", _table(3, "a").set_column(1, "shard", pa.array(["a-00000"] * 3)))
    lake.write_table("source_images", "b-00000", _table(2, "b").set_column(1, "shard", pa.array(["b-00000"] * 2)))
    db = str(tmp_path / "wh.duckdb")
    with connect_writer(db) as con:
        counts = refresh_views(con, lake)
    assert counts["source_images"] == 5 and counts["captions"] is None
    # an analyst opens it read-only while nothing writes it
    ro = duckdb.connect(db, read_only=True)
    assert ro.execute("SELECT shard, count(*) FROM source_images GROUP BY 1 ORDER BY 1").fetchall() == [
        ("a-00000", 3),
        ("b-00000", 2),
    ]
    ro.close()


def test_s3_lake_end_to_end_against_moto_server(moto_server, tmp_path, instance):
    """The real S3 protocol over HTTP: write, replace, list, read; source_images reads s3:// images into an S3 lake."""
    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.resources import LakeResource, S3Connection
    from ultraedit_dagster.sources.assets import source_images
    from ultraedit_dagster.sources.manifests import register_manifest

    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    client.create_bucket(Bucket="raw")
    lake = Lake("s3://lake/prefix", s3_client=client)
    lake.write_table("captions", "s-00000", _table(4, "x"))
    lake.write_table("captions", "s-00000", _table(2, "y"))
    assert lake.read_table("captions", "s-00000").column("uid").to_pylist() == ["y0", "y1"]
    assert lake.list_files("captions") == ["shard=s-00000/data.parquet"]
    _interrupted_write(lake, "captions", "s-00000", _table(9, "z"))
    assert lake.read_table("captions", "s-00000").num_rows == 2

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    client.upload_file(str(tmp_path / "a.png"), "raw", "imgs/a.png")
    manifest = tmp_path / "s3.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "a", "image": "s3://raw/imgs/a.png", "caption": "noise"},
                {"id": "b", "image": "s3://raw/imgs/missing.png", "caption": "missing"},
            ]
        )
    )
    shard = register_manifest(lake, str(manifest), name="s3", shard_size=10).shard_keys[0]
    instance.add_dynamic_partitions("shards", [shard])
    s3 = S3Connection(
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    result = dg.materialize(
        [source_images],
        partition_key=shard,
        instance=instance,
        resources={"lake": LakeResource(root="s3://lake/prefix", s3=s3), "pipeline": PipelineResource()},
    )
    assert result.success
    rows = {r["id"]: r for r in lake.read_table("source_images", shard).to_pylist()}
    assert rows["a"]["status"] == "ok" and rows["a"]["width"] == 400
    assert rows["b"]["status"] == "failed" and "cannot fetch s3://raw/imgs/missing.png" in rows["b"]["error"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix="prefix/source_images/")["Contents"]]
    assert keys == [f"prefix/source_images/shard={shard}/data.parquet"]


def test_definitions_load_like_dagster_dev(tmp_path):
    """`dagster definitions validate -w workspace.yaml` loads the code location exactly as `dagster dev` does."""
    env = {**os.environ, "ULTRAEDIT_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dh")}
    os.makedirs(env["DAGSTER_HOME"])
    bin_dir = os.path.dirname(sys.executable)
    out = subprocess.run(
        [os.path.join(bin_dir, "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from ultraedit_dagster.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"source_images", "warehouse_views"} <= keys
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {"source_images_unique_uids", "source_images_failed_fraction"} <= checks
    assert defs.resolve_job_def("shard_pipeline").partitions_def.name == "shards"


@pytest.mark.parametrize("on_s3", [False, True])
def test_replace_folder_swaps_the_release_and_drops_stale_files(tmp_path, request, on_s3):
    if on_s3:
        server = request.getfixturevalue("moto_server")
        client = server.client()
        client.create_bucket(Bucket="lake")
        lake = Lake("s3://lake/p", s3_client=client)
    else:
        lake = Lake(str(tmp_path / "lake"))
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "data").mkdir(parents=True)
    (first / "data" / "old.parquet").write_bytes(b"old")
    (first / "README.md").write_text("v1")
    (second / "data").mkdir(parents=True)
    (second / "data" / "new.parquet").write_bytes(b"new")
    (second / "README.md").write_text("v2")
    lake.replace_folder("release", first)
    lake.replace_folder("release", second)
    assert lake.read_bytes("release/README.md") == b"v2"
    assert lake.read_bytes("release/data/new.parquet") == b"new"
    assert not lake.has_bytes("release/data/old.parquet"), "files the new release lacks are removed"


def test_moved_lake_is_never_read_at_its_old_location(tmp_path, monkeypatch, capsys):
    """Copy a checkout's .ultraedit folder elsewhere and change the copy: `ultraedit sql` in the copy reads the copy's
    lake (the views are re-pointed), not the original's; a warehouse refresh re-points them too."""
    import shutil

    from ultraedit_dagster import cli
    from ultraedit_dagster.lake.warehouse import connect_reader, lake_root_of

    old_home = tmp_path / "old" / ".ultraedit"
    old_lake = Lake(str(old_home / "lake"))
    old_lake.write_table("captions", "s-00000", _table(3))
    with connect_writer(str(old_home / "warehouse.duckdb")) as con:
        refresh_views(con, old_lake)
    new_home = tmp_path / "new" / ".ultraedit"
    shutil.copytree(old_home, new_home)
    new_lake = Lake(str(new_home / "lake"))
    new_lake.write_table("captions", "s-00001", _table(5))  # only the copy has this shard

    monkeypatch.setenv("ULTRAEDIT_HOME", str(new_home))
    for name in ("ULTRAEDIT_LAKE", "ULTRAEDIT_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    assert cli.main(["sql", "SELECT count(*) AS n FROM captions; -- the copy holds 8 rows"]) == 0
    captured = capsys.readouterr()
    assert [c.strip("│ ") for c in captured.out.splitlines()].count("8") == 1, captured.out
    assert "views re-pointed" in captured.err
    con = connect_reader(str(new_home / "warehouse.duckdb"))
    assert lake_root_of(con) == str(new_home.resolve() / "lake")
    con.close()
    # the original is untouched
    con = connect_reader(str(old_home / "warehouse.duckdb"))
    assert con.execute("SELECT count(*) FROM captions").fetchone()[0] == 3
    con.close()


def test_every_lake_asset_has_a_view_seed_triplets_included(lake, tmp_path):
    """One view per lake asset (issue 18): the per-shard ones and the single-file seed pool, read where the
    seed_triplets asset writes it."""
    import io

    import pyarrow.parquet as pq

    from ultraedit_dagster.lake.store import SHARD_ASSETS
    from ultraedit_dagster.lake.warehouse import LAKE_VIEWS, SINGLE_FILE_ASSETS
    from ultraedit_dagster.text.assets import SEED_RELPATH
    from ultraedit_dagster.text.seeds import load_seeds, seeds_to_table

    assert SINGLE_FILE_ASSETS == {"seed_triplets": SEED_RELPATH}
    assert set(LAKE_VIEWS) == {"seed_triplets", *SHARD_ASSETS}
    buf = io.BytesIO()
    pq.write_table(seeds_to_table(load_seeds()), buf)
    lake.write_bytes(SEED_RELPATH, buf.getvalue())
    for asset in SHARD_ASSETS:
        lake.write_table(asset, "s-00000", _table(2, asset))
    db = str(tmp_path / "wh.duckdb")
    with connect_writer(db) as con:
        counts = refresh_views(con, lake)
    assert counts == {"seed_triplets": len(load_seeds()), **{a: 2 for a in SHARD_ASSETS}}
    ro = duckdb.connect(db, read_only=True)
    views = {r[0] for r in ro.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert views == set(LAKE_VIEWS)
    assert ro.execute("SELECT count(DISTINCT edit_type) > 1 FROM seed_triplets").fetchone() == (True,)
    ro.close()
