"""Analysts on the production lake (issue 18) and no outbound request (issue 15 item 13), end to end and offline:
a lake on S3 (moto's server on 127.0.0.1), one shard materialized with the tiny profile through the CLI, the release
(the `warehouse_views` asset, `dbt build` of dbt_quality, the release card) and `ultraedit summary`, then the README's
analyst commands and queries over that S3 warehouse.

Every CLI process (and its subprocesses: dbt, DuckDB's own HTTP client inside them) runs under strace, so a
connection anywhere but 127.0.0.1, or a DNS query, is recorded at the system-call level, below Python's socket module
(which tests/conftest.py's guard watches); DuckDB's httpfs, for one, does not go through Python."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_system_package
from tests.lake.test_readme_analyst import analyst_commands, analyst_queries
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.lake.warehouse import LAKE_VIEWS, connect_analyst, init_script_path

DEMO = REPO / "ultraedit_dagster" / "demo_data"
# connect / sendto with an IPv4 or IPv6 address, as strace prints them
_ADDRESS = re.compile(r'(?:inet_addr\("(?P<v4>[^"]+)"\)|inet_pton\(AF_INET6, "(?P<v6>[^"]+)")')


def outbound(strace_log_dir) -> list[str]:
    """Every recorded connect / send to an address that is not loopback (DNS servers included), with the program
    of the process that made it."""
    bad = []
    for log in strace_log_dir.iterdir():
        programs = {}
        for line in log.read_text(errors="replace").splitlines():
            if " execve(" in line:
                programs[line.split()[0]] = line.split(" execve(", 1)[1][:200]
                continue
            match = _ADDRESS.search(line)
            if not match:
                continue
            address = match["v4"] or match["v6"]
            if not (address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1", "0.0.0.0", "::")):
                pid = line.split()[0]
                bad.append(f"{log.name}: {line[:200]} <- {programs.get(pid, 'pid ' + pid)}")
    return bad


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 10 minutes on 2 busy cores: a shard through every stage, dbt, the release
def test_s3_lake_warehouse_dbt_analysts_and_release_with_no_outbound_connection(tmp_path, moto_server):
    require_system_package("/usr/bin/strace", "strace")
    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    home = tmp_path / ".ultraedit"
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # the README's `.venv/bin/...` from this folder
    env = {
        **os.environ,
        "ULTRAEDIT_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ULTRAEDIT_LAKE": "s3://lake/ue",
        "ULTRAEDIT_PROFILE": "tiny",
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "HOME": str(tmp_path / "home"),  # no ~/.duckdb/extensions to fall back on
    }
    env.pop("ULTRAEDIT_WAREHOUSE", None)
    traces = tmp_path / "strace"
    traces.mkdir()

    def run(argv: list[str], stdin: str | None = None, name: str = "cli") -> str:
        traced = [
            shutil.which("strace") or "/usr/bin/strace",
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-e",
            "trace=execve,connect,sendto,sendmsg,sendmmsg",
            "-o",
            str(traces / f"{name}-{len(list(traces.iterdir()))}"),
            *argv,
        ]
        proc = subprocess.run(traced, cwd=tmp_path, env=env, input=stdin, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{argv}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout + proc.stderr

    ultraedit = [sys.executable, "-m", "ultraedit_dagster.cli"]
    line = (DEMO / "manifest.jsonl").read_text().splitlines()[:2]
    manifest = tmp_path / "s3wh.jsonl"
    manifest.write_text("\n".join(x.replace('"images/', f'"{DEMO}/images/') for x in line) + "\n")
    run([*ultraedit, "init"], name="init")
    run([*ultraedit, "add-manifest", str(manifest), "--name", "s3wh", "--shard-size", "2"], name="add")
    run([*ultraedit, "materialize", "--shard", "s3wh-00000"], name="materialize")
    released = run([*ultraedit, "release"], name="release")
    assert "release: success" in released, released
    summary = run([*ultraedit, "summary"], name="summary")
    assert "filtered_release" in summary and "-init " in summary, summary

    lake = Lake("s3://lake/ue", s3_client=client)
    warehouse = home / "warehouse.duckdb"
    assert init_script_path(str(warehouse)).is_file()

    # The views (one per lake asset, seed_triplets included) over the S3 objects, and the dbt models.
    for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = env[name]
    try:
        con = connect_analyst(str(warehouse))
        for view in LAKE_VIEWS:
            n = con.execute(f'SELECT count(*) FROM "{view}"').fetchone()[0]
            if view == "seed_triplets":
                assert n > 0
            else:
                assert n == lake.num_rows(view, "s3wh-00000"), view
        models = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"shard_quality", "edit_type_quality", "metric_summary", "threshold_sweep"} <= models
        assert con.execute("SELECT count(*) FROM shard_quality WHERE shard = 's3wh-00000'").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM threshold_sweep").fetchone()[0] > 0
        released_rows = con.execute("SELECT count(*) FROM filtered_release").fetchone()[0]
        con.close()
    finally:
        for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.pop(name, None)

    # The release card, built from the S3 lake.
    release = json.loads(lake.read_bytes("release/release.json"))
    assert lake.has_bytes("release/README.md")
    assert release["rows"] <= released_rows

    # The README's analyst commands as written (the S3 forms too) and its five queries.
    queries = analyst_queries()
    for command in analyst_commands():
        argv = shlex.split(command)
        if argv[0] not in (".venv/bin/ultraedit", ".venv/bin/duckdb", ".venv/bin/python"):
            continue
        if argv[0] == ".venv/bin/duckdb" and "-init" not in argv:
            continue  # the local form: views over s3:// need the init script (tests/lake/test_readme_analyst.py)
        out = run(argv, stdin=";\n".join(queries) + ";\n" if argv[0] == ".venv/bin/duckdb" else None, name="readme")
        assert "Error" not in out, f"{command}:\n{out[-3000:]}"
    for query in queries:
        out = run([".venv/bin/ultraedit", "sql", query], name="sql")
        assert "Error" not in out and "\n" in out.strip(), f"{query}:\n{out[-3000:]}"
    # The shell over the S3 views (the init script's httpfs and getenv secret).
    out = run(
        [
            ".venv/bin/duckdb",
            "-readonly",
            "-csv",
            "-init",
            ".ultraedit/warehouse_init.sql",
            ".ultraedit/warehouse.duckdb",
        ],
        stdin="SELECT count(*) AS n FROM metric_scores;\n",
        name="shell",
    )
    assert f"n\n{lake.num_rows('metric_scores', 's3wh-00000')}\n" in out, out
    assert not (tmp_path / "home" / ".duckdb" / "extensions").exists(), "no extension was installed at run time"

    assert outbound(traces) == [], "a process tried to reach something other than 127.0.0.1"
