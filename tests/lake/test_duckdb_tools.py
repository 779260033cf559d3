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


# -- an analyst holding the warehouse open (issue 15 item 15) -----------------------------------------------------

HOLDER = (
    "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); print('open', flush=True); "
    "time.sleep(float(sys.argv[2]))"
)


def _hold(path, seconds: float) -> subprocess.Popen:
    """Another process with the warehouse open read-only, as an analyst's shell or notebook has it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def _warehouse(tmp_path) -> tuple[Lake, Path]:
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("captions", "a-00000", _table(2, "a-00000"))
    db = tmp_path / "warehouse.duckdb"
    with connect_writer(str(db)) as con:
        refresh_views(con, lake)
    return lake, db


def test_a_locked_warehouse_names_the_process_holding_it_and_is_retryable(tmp_path):
    import time

    import pytest

    from ultraedit_dagster.core.retries import is_retryable
    from ultraedit_dagster.lake.warehouse import WarehouseLocked

    _, db = _warehouse(tmp_path)
    holder = _hold(db, 60)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLocked) as error:
            with connect_writer(str(db), lock_wait_s=1.0):
                pass
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    message = str(error.value)
    assert error.value.pid == holder.pid
    assert f"process {holder.pid} (" in message and "is locked" in message and "read-only sessions too" in message
    assert HOLDER[:20] in message, "the holder's command line says which session it is"
    assert 1.0 <= waited < 5, "a bounded wait, not 51 s"
    assert is_retryable(error.value), "the step's retry policy retries it: the analyst may close the file"
    with connect_writer(str(db), lock_wait_s=1.0) as con:  # closed: the next attempt goes through
        assert con.execute("SELECT count(*) FROM captions").fetchone() == (2,)


def _materialize_views(lake, db, instance):
    import dagster as dg

    from ultraedit_dagster.lake.assets import build_warehouse_views
    from ultraedit_dagster.lake.resources import LakeResource, WarehouseResource

    return dg.materialize(
        [build_warehouse_views(["captions"])],
        instance=instance,
        resources={"lake": LakeResource(root=lake.root), "warehouse": WarehouseResource(path=str(db), lock_wait_s=0.5)},
        raise_on_error=False,
    )


def _retry_messages(result) -> list[str]:
    """Per retry of the step, the messages along its error's cause chain (what the UI shows for the attempt)."""
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_UP_FOR_RETRY":
            error, text = event.event_specific_data.error, []
            while error is not None:
                text.append(error.message)
                error = error.cause
            messages.append("\n".join(text))
    return messages


def test_warehouse_views_is_retried_while_an_analyst_holds_the_file_and_succeeds_once_closed(
    tmp_path, instance, monkeypatch
):
    import contextlib

    from ultraedit_dagster.lake import assets
    from ultraedit_dagster.lake.warehouse import WarehouseLocked

    lake, db = _warehouse(tmp_path)
    lake.write_table("captions", "a-00001", _table(3, "a-00001"))
    holder = _hold(db, 120)
    attempts = []

    @contextlib.contextmanager
    def analyst_closes_after_the_first_failure(path, lock_wait_s):
        attempts.append(path)
        try:
            with connect_writer(path, lock_wait_s) as con:
                yield con
        except WarehouseLocked:
            holder.kill()  # the analyst reads the message and closes the shell
            holder.wait()
            raise

    monkeypatch.setattr(assets, "connect_writer", analyst_closes_after_the_first_failure)
    try:
        result = _materialize_views(lake, db, instance)
    finally:
        holder.kill()
        holder.wait()
    assert result.success and len(attempts) == 2
    (retry,) = _retry_messages(result)
    assert f"process {holder.pid}" in retry and "is locked" in retry, retry
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM captions").fetchone() == (5,)
    con.close()


def test_dbt_on_a_locked_warehouse_fails_with_the_same_message(tmp_path, monkeypatch):
    """dbt's DuckDB connection goes through the profile's plugin (lake/dbt_duckdb_plugin.py): the same bounded wait
    and the same message naming the holder, instead of DuckDB's bare error; extension auto-install off."""
    import os

    from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR, dbt_executable

    lake, db = _warehouse(tmp_path)
    holder = _hold(db, 120)
    env = {
        **os.environ,
        "ULTRAEDIT_LAKE": lake.root,
        "ULTRAEDIT_WAREHOUSE": str(db),
        "ULTRAEDIT_WAREHOUSE_LOCK_WAIT_S": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    try:
        proc = subprocess.run(
            [dbt_executable(), "run", "--select", "shard_quality", "--project-dir", str(DBT_PROJECT_DIR)]
            + ["--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(tmp_path / "target")]
            + ["--log-path", str(tmp_path / "logs")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"is locked: process {holder.pid} (" in out, out[-3000:]
