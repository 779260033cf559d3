"""docs/analyst-guide.md runs as written: every SQL block against a warehouse built by dbt over a lake whose release
the release's own selection made, its `ultraedit sql` line, and its grid-override command (slow: a dbt build)."""

import os
import re
import shlex
import shutil
import subprocess

import duckdb
import pytest

from tests.conftest import REPO

GUIDE = REPO / "docs" / "analyst-guide.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guides_queries_answer_the_question(built):
    _, _, lake, warehouse, _ = built
    step1, step2, step3 = blocks("sql")
    con = duckdb.connect(str(warehouse), read_only=True)
    released = dict(con.execute("SELECT split, count(*) FROM filtered_release GROUP BY ALL").fetchall())

    now = {r[0]: r for r in con.execute(step1).fetchall()}
    assert set(now) == {"free_form", "region"}
    assert now["region"][6] == released["region"] and now["free_form"][6] == released["free_form"]

    moves = con.execute(step2).fetchall()
    assert [m[0] for m in moves] == ["clip_sim_caption", "clip_sim_dir", "clip_sim_image", "dinov2_sim"]
    reach = [m for m in moves if m[2] is not None]
    assert reach, "on this lake some single loosening on the grid reaches +20%"
    for _, kept_now, step, kept_then, loosest in reach:
        assert kept_now == released["region"] and step < 0 and kept_then >= 1.2 * kept_now and loosest >= kept_then

    cost = con.execute(step3).fetchall()
    assert [c[0] for c in cost] and {c[0] for c in cost} == {m[0] for m in reach}
    for _, current, new, kept_now, kept_then, pct, mean_dir in cost:
        assert new < current and kept_then >= 1.2 * kept_now and 0 < pct <= 100 and -1 <= mean_dir <= 1
    assert [c[5] for c in cost] == sorted(c[5] for c in cost)  # cheapest first


@pytest.mark.slow
def test_the_guides_commands_run_as_written(built, tmp_path):
    """`ultraedit sql` reads the warehouse; the ULTRAEDIT_SWEEP_GRID command rebuilds threshold_sweep with the
    given axis (plus the profile's thresholds) through the Dagster CLI."""
    _, root, lake, warehouse, _ = built
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    env = {
        **os.environ,
        "ULTRAEDIT_HOME": str(tmp_path / "home"),
        "ULTRAEDIT_LAKE": lake.root,
        "ULTRAEDIT_WAREHOUSE": str(copy),
        "ULTRAEDIT_PROFILE": "tiny",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    commands = [c for c in blocks("bash")[0].splitlines() if c.startswith(".venv/bin/ultraedit sql")]
    assert len(commands) == 1
    run = subprocess.run(shlex.split(commands[0]), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "region" in run.stdout and "free_form" in run.stdout

    [override] = [b for b in blocks("bash") if "ULTRAEDIT_SWEEP_GRID" in b]
    run = subprocess.run(["bash", "-c", override], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    con = duckdb.connect(str(copy), read_only=True)
    dino = [r[0] for r in con.execute("SELECT DISTINCT min_dinov2_sim FROM threshold_sweep ORDER BY 1").fetchall()]
    assert dino == [0.998, 0.9982, 0.9984, 0.9986, 0.9988, 0.999]  # the given axis plus the profile's 0.999
    assert con.execute("SELECT count(*) FROM threshold_sweep WHERE profile_thresholds").fetchone()[0] == 2


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
