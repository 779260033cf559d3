"""The README's analyst guide runs exactly as written (issue 18): its shell commands (the venv's `ultraedit`, `duckdb`
and `python`, named as the README names them, from the repository root as after `make setup`) and its SQL queries,
parsed out of README.md so that this test breaks when the README drifts, against a warehouse built from a small lake
(views by the warehouse refresh, models by a real `dbt build`). tests/lake/test_s3_warehouse.py runs the same queries
over an S3 lake."""

import os
import re
import shlex
import subprocess

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.quality_fixtures import write_synthetic_scores_and_release, write_upstream
from ultraedit_dagster.cli import ANALYST_QUERIES
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.lake.warehouse import LAKE_VIEWS, SINGLE_FILE_ASSETS, connect_writer, refresh_views

README = REPO / "README.md"
SHELL_COMMANDS = (".venv/bin/ultraedit", ".venv/bin/duckdb", ".venv/bin/python")


def analyst_guide() -> str:
    """The README's `## Analyst guide` section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Analyst guide")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def analyst_commands() -> list[str]:
    """Every command line of the guide's bash blocks (comments after `  #` dropped)."""
    lines = []
    for block in _blocks(analyst_guide(), "bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def analyst_queries() -> list[str]:
    """Every SQL statement of the guide's sql blocks."""
    statements = []
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    for block in _blocks(analyst_guide(), "sql"):
        statements += [s.query for s in con.extract_statements(block)]
    return statements


def test_the_guide_is_parsed():
    """The parser finds what the guide shows: one command per venv tool at least, and the five queries."""
    commands = analyst_commands()
    for tool in SHELL_COMMANDS:
        assert any(c.startswith(tool + " ") for c in commands), (tool, commands)
    assert len(analyst_queries()) == 5


def build_small_warehouse(root, shards=("rd-00000", "rd-00001")) -> Lake:
    """A small lake (every lake asset, two shards) under `root/.ultraedit`, its views and its dbt models."""
    from ultraedit_dagster.core.resources import PipelineResource
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models, dbt_resource
    from ultraedit_dagster.text.seeds import load_seeds, seeds_to_table

    home = root / ".ultraedit"
    lake = Lake(str(home / "lake"))
    for i, shard in enumerate(shards):
        write_upstream(lake, shard)
        write_synthetic_scores_and_release(lake, shard, n_triplets=3 + i, seed=i)
    seed = home / "lake" / SINGLE_FILE_ASSETS["seed_triplets"]
    seed.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(seeds_to_table(load_seeds()), seed)
    warehouse = home / "warehouse.duckdb"
    with connect_writer(str(warehouse)) as con:
        refresh_views(con, lake)
    mp = pytest.MonkeyPatch()
    mp.setenv("ULTRAEDIT_LAKE", lake.root)
    mp.setenv("ULTRAEDIT_WAREHOUSE", str(warehouse))
    try:
        with dg.DagsterInstance.ephemeral() as inst:
            result = dg.materialize(
                [dbt_quality_models],
                instance=inst,
                resources={"dbt": dbt_resource(), "pipeline": PipelineResource(profile_name="tiny")},
            )
        assert result.success
    finally:
        mp.undo()
    return lake


@pytest.mark.slow
def test_readme_analyst_commands_and_queries_run_as_written(tmp_path):
    # As after `make setup` in a checkout: the venv at `.venv`, the warehouse at `.ultraedit/warehouse.duckdb`.
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    lake = build_small_warehouse(tmp_path)
    env = {**os.environ, "ULTRAEDIT_HOME": str(tmp_path / ".ultraedit")}
    for name in ("ULTRAEDIT_LAKE", "ULTRAEDIT_WAREHOUSE", "DAGSTER_HOME"):
        env.pop(name, None)
    queries = analyst_queries()

    def run(argv: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(argv, cwd=tmp_path, env=env, input=stdin, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{argv}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        assert "Error" not in proc.stderr, f"{argv}: {proc.stderr[-2000:]}"
        return proc.stdout

    ran = set()
    for command in analyst_commands():
        argv = shlex.split(command)
        if argv[0] not in SHELL_COMMANDS:
            continue
        if argv[0] == ".venv/bin/duckdb" and "-init" in argv:
            continue  # the S3 form: tests/lake/test_s3_warehouse.py runs it over an S3 lake
        # The DuckDB shell: the README's queries pasted into it, as the guide says.
        out = run(argv, stdin=";\n".join(queries) + ";\n" if argv[0] == ".venv/bin/duckdb" else None)
        assert out.strip(), command
        ran.add(argv[0])
    assert ran == set(SHELL_COMMANDS), "every venv tool the guide names was run"

    # Each query through `ultraedit sql` (as the guide's first command does), with the rows it should show.
    expected = {view: Lake(lake.root).list_shards(view) for view in ("source_images",)}
    for query in queries:
        run([".venv/bin/ultraedit", "sql", query])
    # ... and every one of them shows rows on this warehouse (a query whose filter left the grid shows none)
    reader = duckdb.connect(str(tmp_path / ".ultraedit" / "warehouse.duckdb"), read_only=True)
    for query in queries + list(ANALYST_QUERIES):
        assert reader.execute(query).fetchall(), f"no rows for {query}"
    reader.close()
    assert all(s in run([".venv/bin/ultraedit", "sql", queries[0]]) for s in expected["source_images"])
    # every lake asset has a view, seed_triplets included
    tables = run([".venv/bin/ultraedit", "sql", "SELECT table_name FROM information_schema.tables"])
    assert all(view in tables for view in LAKE_VIEWS), tables
