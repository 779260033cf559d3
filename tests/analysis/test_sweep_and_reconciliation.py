"""threshold_sweep's configurable grid with the profile's own row, and the dbt tests that reconcile the release with
the scores (issue 14), on a lake whose filtered_release the release's own selection code made (scored_lake.py)."""

import json
import os
import shutil
import subprocess

import duckdb
import pytest

from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR, dbt_env, dbt_executable, selection_vars, sweep_vars
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.schema import release_row, release_table
from ultraedit_dagster.release.selection import release_rule, select, thresholds_by_mode

RECONCILIATION_TESTS = {
    "release_rows_meet_their_thresholds",
    "release_triplets_respect_top_k",
    "release_region_triplets_have_min_passing",
    "release_rows_match_their_scores",
}


def test_threshold_sweep_has_the_profiles_row_and_it_equals_the_release(built):
    result, root, lake, warehouse, _ = built
    assert result.success
    profile = get_profile("tiny")
    con = duckdb.connect(str(warehouse), read_only=True)
    released = dict(
        con.execute(
            f"select split, count(*) from read_parquet('{lake.root}/filtered_release/*/*.parquet') group by 1"
        ).fetchall()
    )
    triplets = dict(
        con.execute(
            "select split, count(distinct instruction_uid) "
            f"from read_parquet('{lake.root}/filtered_release/*/*.parquet') group by 1"
        ).fetchall()
    )
    assert released["free_form"] > 0 and released["region"] > 0
    for mode, t in thresholds_by_mode(profile).items():
        rows = con.execute(
            "select min_clip_sim_image, min_clip_sim_dir, min_clip_sim_caption, min_dinov2_sim, kept_samples, "
            "triplets_kept from threshold_sweep where profile_thresholds and mode = ?",
            [mode],
        ).fetchall()
        assert len(rows) == 1, f"{mode}: one row for the profile's thresholds"
        img, d, cap, dino, kept, kept_triplets = rows[0]
        assert (img, d, cap, dino) == (t.clip_sim_image, t.clip_sim_dir, t.clip_sim_source, t.dinov2_sim)
        # what the current profile keeps: exactly what the release's selection kept (NaN, out-of-range and no-op
        # candidates among the scores are excluded by both)
        assert (kept, kept_triplets) == (released[mode], triplets[mode])
    # the profile's grid: every default value is on it, and the grid is complete
    grid = sweep_vars(profile)["sweep_grid"]
    for axis, values in grid.items():
        on_grid = {r[0] for r in con.execute(f"select distinct min_{axis} from threshold_sweep").fetchall()}
        assert on_grid == set(values), axis
    n = 1
    for values in grid.values():
        n *= len(values)
    assert con.execute("select count(*), count(distinct combo) from threshold_sweep").fetchone() == (2 * n, 2 * n)


def test_threshold_sweep_loosening_a_threshold_never_keeps_fewer_free_form_samples(built):
    _, _, _, warehouse, _ = built
    con = duckdb.connect(str(warehouse), read_only=True)
    # free-form keeps min(passing, k) per triplet: monotone in every threshold (region's minimum is not)
    bad = con.execute(
        "select count(*) from threshold_sweep a join threshold_sweep b using (mode, min_clip_sim_image, "
        "min_clip_sim_caption, min_dinov2_sim) where mode = 'free_form' and a.min_clip_sim_dir < b.min_clip_sim_dir "
        "and a.kept_samples < b.kept_samples"
    ).fetchone()[0]
    assert bad == 0


def test_sweep_grid_overrides_still_contain_the_profiles_thresholds(monkeypatch):
    profile = get_profile("tiny")
    monkeypatch.setenv("ULTRAEDIT_SWEEP_GRID", json.dumps({"clip_sim_dir": [0.3, 0.25]}))
    vars_ = selection_vars(profile.selection)
    assert vars_["sweep_grid"]["clip_sim_dir"] == [0.25, 0.3]
    assert vars_["sweep_thresholds"]["region"]["clip_sim_dir"] == 0.1
    assert vars_["free_form_top_k"] == profile.selection.free_form_top_k
    monkeypatch.setenv("ULTRAEDIT_SWEEP_GRID", json.dumps({"clip_sim_bogus": [0.3]}))
    with pytest.raises(ValueError, match="unknown sweep axis"):
        selection_vars(profile.selection)


def dbt_cli(root, lake_root, args: list[str], vars_: dict | None = None) -> dict[str, dict]:
    """Run the dbt CLI on dbt_quality (its own target and log folders); returns run_results by node name."""
    target = root / "target"
    cmd = [dbt_executable(), *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    cmd += ["--target-path", str(target), "--log-path", str(root / "logs")]
    if vars_:
        cmd += ["--vars", json.dumps(vars_)]
    env = {
        **os.environ,
        **dbt_env(str(lake_root), str(root / "warehouse.duckdb")),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_VERSION_CHECK": "false",  # no lookup of pypi.org
    }
    proc = subprocess.run(cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
    results = json.loads((target / "run_results.json").read_text())["results"]
    out = {r["unique_id"].split(".")[2]: r for r in results}
    assert out, proc.stdout + proc.stderr
    return out


def test_a_grid_given_as_dbt_vars_gets_the_profiles_thresholds_added(built, tmp_path):
    """An analyst's own grid (dbt vars, no Dagster): the profile's thresholds are still on it, so the profile row
    is still there and still equals the release."""
    _, _, lake, _, _ = built
    profile = get_profile("tiny")
    vars_ = selection_vars(profile.selection)
    vars_["sweep_grid"] = {
        "clip_sim_image": [0.998],
        "clip_sim_dir": [0.3],
        "clip_sim_caption": [0.2],
        "dinov2_sim": [],
    }
    results = dbt_cli(tmp_path, lake.root, ["run", "-s", "threshold_sweep"], vars_)
    assert results["threshold_sweep"]["status"] == "success"
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    dirs = [r[0] for r in con.execute("select distinct min_clip_sim_dir from threshold_sweep order by 1").fetchall()]
    assert dirs == [0.0, 0.1, 0.3]
    assert con.execute("select count(*) from threshold_sweep where profile_thresholds").fetchone()[0] == 2


# --- the release reconciled with the scores: each dbt test fails on its own planted violation -------------------


def _plant(lake: Lake, scores: dict, how: str) -> str:
    """Change demo-00000's filtered_release as `how` says; returns the uid or triplet planted."""
    profile = get_profile("tiny")
    shard = "demo-00000"
    rows = lake.read_table("filtered_release", shard).to_pylist()
    rule = release_rule(profile)
    by_mode = thresholds_by_mode(profile)
    if how in ("below_threshold", "nan_metric", "no_rule"):
        row = next(r for r in rows if r["split"] == "region")
        if how == "below_threshold":
            row["clip_sim_dir"] = by_mode["region"].clip_sim_dir - 0.05
        elif how == "nan_metric":
            row["dinov2_sim"] = float("nan")
        else:
            row["thresholds"] = None
        planted = row["uid"]
    elif how == "over_top_k":
        # a free-form triplet with more passing candidates than the profile keeps: release one more of them
        wide = select(scores[shard], type(profile.selection)(free_form_top_k=99, region_top_k=99), by_mode)
        kept = {r["uid"] for r in rows}
        extra = next(
            r for r in wide.selected if r["mode"] == "free_form" and r["candidate_uid"] not in kept and r["rank"] > 2
        )
        rows.append(release_row({**extra, "instruction": "edit it"}, extra, rank=extra["rank"], rule=rule))
        planted = extra["instruction_uid"]
    elif how == "under_min_passing":
        # a region triplet dropped by the rule (fewer than 3 pass): release its passing candidates anyway
        loose = select(
            scores[shard], type(profile.selection)(free_form_top_k=2, region_top_k=3, region_min_passing=1), by_mode
        )
        kept_triplets = {r["instruction_uid"] for r in rows}
        dropped = [r for r in loose.selected if r["mode"] == "region" and r["instruction_uid"] not in kept_triplets]
        planted = dropped[0]["instruction_uid"]
        rows += [
            release_row({**r, "instruction": "edit it"}, r, rank=r["rank"], rule=rule, region={"edit_object": "x"})
            for r in dropped
            if r["instruction_uid"] == planted
        ]
    else:
        raise ValueError(how)
    lake.write_table("filtered_release", shard, release_table(rows))
    return planted


@pytest.mark.parametrize(
    ("how", "failing"),
    [
        ("below_threshold", "release_rows_meet_their_thresholds"),
        ("nan_metric", "release_rows_meet_their_thresholds"),
        ("no_rule", "release_rows_meet_their_thresholds"),
        ("over_top_k", "release_triplets_respect_top_k"),
        ("under_min_passing", "release_region_triplets_have_min_passing"),
    ],
)
def test_each_reconciliation_test_fails_on_its_planted_violation(built, tmp_path, how, failing):
    _, root, _, _, scores = built
    shutil.copytree(root / "lake", tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    _plant(lake, scores, how)
    results = dbt_cli(tmp_path, lake.root, ["build", "-s", "release_reconciliation+"])
    status = {name: r["status"] for name, r in results.items() if name in RECONCILIATION_TESTS}
    assert set(status) == RECONCILIATION_TESTS
    assert status[failing] == "fail" and results[failing]["failures"] >= 1
    others = {n: s for n, s in status.items() if n not in (failing, "release_rows_match_their_scores")}
    assert set(others.values()) == {"pass"}, others
    # a row that is not the scored candidate it claims to be is a warning (re-materialization can race it)
    assert status["release_rows_match_their_scores"] == ("warn" if how in ("below_threshold", "nan_metric") else "pass")


def test_the_reconciliation_tests_are_checks_that_pass_on_the_real_release(built):
    result, *_ = built
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert {n: evals.get(n) for n in RECONCILIATION_TESTS} == dict.fromkeys(RECONCILIATION_TESTS, True)
    assert all(evals.values()), [n for n, ok in evals.items() if not ok]
