"""Fault injection: SIGKILL mid-write, the S3 endpoint vanishing mid-write, readers while the warehouse is written."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from tests.conftest import REPO, free_port
from ultraedit_dagster.lake.store import Lake, LakeError

KILL_SCRIPT = r"""
import sys, time
import pyarrow as pa
from ultraedit_dagster.lake.store import Lake
lake = Lake(sys.argv[1])
schema = pa.schema([("uid", pa.string()), ("n", pa.int64())])
with lake.open_writer("captions", "kill-00000", schema) as w:
    for i in range(10_000):
        w.write_table(pa.table({"uid": [f"new{i}"], "n": [i]}, schema=schema))
        if i == 5:
            print("writing", flush=True)
        time.sleep(0.01)
"""


def test_sigkill_during_a_write_never_exposes_a_partial_shard(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    old = pa.table({"uid": ["old0", "old1"], "n": [0, 1]})
    lake.write_table("captions", "kill-00000", old)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, lake.root], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # readers see exactly the previous shard; the killed writer's temporary is hidden and not a data file
    assert lake.read_table("captions", "kill-00000").equals(old)
    assert lake.list_shards("captions") == ["kill-00000"]
    con = duckdb.connect()
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [lake.asset_glob("captions")]).fetchone()[0] == 2
    # the next successful write replaces the shard and clears the dead writer's garbage
    lake.write_table("captions", "kill-00000", pa.table({"uid": ["n0"], "n": [7]}))
    assert lake.list_files("captions") == ["shard=kill-00000/data.parquet"]


def test_sigkill_mid_materialization_then_rerun_equals_a_clean_run(tmp_path):
    """Kill a real `ultraedit demo`-style materialization of source_images, re-run it, compare with a clean run."""
    images = tmp_path / "imgs"
    images.mkdir()
    rows = []
    for i in range(40):  # 2 write batches of 32: the kill lands between them
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
            images / f"{i}.png"
        )
        rows.append({"id": str(i), "image": str(images / f"{i}.png"), "caption": f"random picture {i}"})
    manifest = tmp_path / "k.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))

    def env(home):
        return {**os.environ, "ULTRAEDIT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}

    def run(home, *args, **kw):
        return subprocess.run(
            [sys.executable, "-m", "ultraedit_dagster.cli", *args],
            env=env(home),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            **kw,
        )

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    for home in (clean, crashed):
        assert run(home, "add-manifest", str(manifest), "--name", "k", "--shard-size", "100").returncode == 0
    assert run(clean, "materialize", "--shard", "k-00000", "--asset", "source_images").returncode == 0

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ultraedit_dagster.cli",
            "materialize",
            "--shard",
            "k-00000",
            "--asset",
            "source_images",
        ],
        env=env(crashed),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shard_dir = crashed / "lake" / "source_images" / "shard=k-00000"
    deadline = time.time() + 120
    while time.time() < deadline and not (shard_dir.exists() and any(shard_dir.glob(".data.parquet.*.tmp"))):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (shard_dir / "data.parquet").exists(), "a killed first write must leave no visible shard"

    assert run(crashed, "materialize", "--shard", "k-00000", "--asset", "source_images").returncode == 0
    a = Lake(str(clean / "lake")).read_table("source_images", "k-00000")
    b = Lake(str(crashed / "lake")).read_table("source_images", "k-00000")
    assert a.num_rows == b.num_rows == 40
    assert a.equals(b), "the re-run after a crash gives exactly the rows of a clean run"
    assert Lake(str(crashed / "lake")).list_files("source_images") == ["shard=k-00000/data.parquet"]


class FlakyProxy:
    """A TCP proxy in front of moto's server that can be taken down and brought back: the S3 endpoint 'going away'."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        if self._server:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
            self._server.close()
            self._server = None
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def test_s3_endpoint_vanishing_mid_write_fails_cleanly_and_retry_succeeds(moto_server):
    import boto3
    from botocore.config import Config

    proxy = FlakyProxy(moto_server.port)
    proxy.up()
    client = boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    client.create_bucket(Bucket="lake")
    lake = Lake("s3://lake", s3_client=client)
    old = pa.table({"uid": ["old"]})
    lake.write_table("captions", "s3f-00000", old)

    schema = pa.schema([("uid", pa.string())])
    with pytest.raises(LakeError, match="S3 upload of s3://lake/captions/shard=s3f-00000/data.parquet failed"):
        with lake.open_writer("captions", "s3f-00000", schema) as w:
            w.write_table(pa.table({"uid": ["new0", "new1"]}, schema=schema))
            proxy.down()  # the endpoint disappears before the finished object is uploaded
    proxy.up()
    assert lake.read_table("captions", "s3f-00000").equals(old), "the previous object is intact"
    lake.write_table("captions", "s3f-00000", pa.table({"uid": ["new0", "new1"]}, schema=schema))
    assert lake.read_table("captions", "s3f-00000").column("uid").to_pylist() == ["new0", "new1"]
    proxy.down()


def test_readers_while_the_warehouse_is_being_written(tmp_path):
    """Documented behaviour: while a writer holds the DuckDB file, a reader gets an immediate, clear lock error
    (no crash of the writer, no corruption); once the writer is done, reads see the new views."""
    from ultraedit_dagster.lake.warehouse import WarehouseError, connect_writer, refresh_views

    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("source_images", "r-00000", pa.table({"uid": ["a"], "shard": ["r-00000"], "status": ["ok"]}))
    db = str(tmp_path / "wh.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(30)",
            db,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(duckdb.IOException, match="lock"):
        duckdb.connect(db, read_only=True)
    with pytest.raises(WarehouseError, match=rf"is locked: process {holder.pid} "):
        with connect_writer(db, lock_wait_s=0.05):
            pass
    holder.kill()
    holder.wait()
    with connect_writer(db) as con:
        assert refresh_views(con, lake)["source_images"] == 1
    ro = duckdb.connect(db, read_only=True)
    assert ro.execute("SELECT uid FROM source_images").fetchall() == [("a",)]
