"""The DuckDB tools an analyst and an S3 lake need, from the venv alone (issue 13 items 8 and e): the venv's `duckdb`
command-line tool opens the warehouse file the pipeline writes, and httpfs loads from its Python package with
extension auto-install off (nothing is downloaded)."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.lake.warehouse import configure_lake_access, connect_writer, refresh_views


def _table(n: int, shard: str) -> pa.Table:
    return pa.table({"uid": [f"u{i}" for i in range(n)], "shard": [shard] * n, "status": ["ok"] * n})


def test_venv_duckdb_cli_opens_the_warehouse(tmp_path):
    cli = Path(sys.executable).parent / "duckdb"
    assert cli.exists(), "make setup installs the duckdb command-line tool into the venv (duckdb-cli)"
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.split()[0] == f"v{duckdb.__version__}"
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("captions", "a-00000", _table(3, "a-00000"))
    db = tmp_path / "warehouse.duckdb"
    with connect_writer(str(db)) as con:
        refresh_views(con, lake)
    proc = subprocess.run(
        [str(cli), "-readonly", "-csv", str(db), "-c", "SELECT count(*) AS n FROM captions; -- as in the README"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["n", "3"]


def test_s3_lake_views_load_httpfs_from_its_package(moto_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.duckdb/extensions to fall back on
    client = moto_server.client()
    client.create_bucket(Bucket="whlake")
    lake = Lake("s3://whlake/p", s3_client=client)
    lake.write_table("captions", "a-00000", _table(4, "a-00000"))
    with connect_writer(str(tmp_path / "wh.duckdb")) as con:
        assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone()[0] is False
        configure_lake_access(con, lake, {"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"})
        counts = refresh_views(con, lake, ("captions",))
        loaded = con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchone()
    assert counts == {"captions": 4} and loaded == (True,)
    assert not (tmp_path / "home" / ".duckdb" / "extensions").exists()


def test_a_warehouse_file_that_does_not_open_is_explained_not_called_locked(tmp_path):
    import pytest

    from ultraedit_dagster.lake.warehouse import WarehouseError, connect_reader

    bad = tmp_path / "warehouse.duckdb"
    bad.write_bytes(b"x" * 5000)  # as a file from an incompatible DuckDB version or another tool would be
    with pytest.raises(WarehouseError) as writer_error:
        with connect_writer(str(bad)):
            pass
    with pytest.raises(WarehouseError) as reader_error:
        connect_reader(str(bad))
    for error in (writer_error, reader_error):
        message = str(error.value)
        assert "locked" not in message and "delete it and run `ultraedit release`" in message
