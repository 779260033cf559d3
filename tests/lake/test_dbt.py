"""dbt_quality through dagster-dbt: lineage to our assets, models built into DuckDB from the lake, tests as checks."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from tests.quality_fixtures import write_synthetic_scores_and_release
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.store import Lake


def dbt_resources() -> dict:
    from ultraedit_dagster.lake.dbt_assets import dbt_resource

    return {"dbt": dbt_resource(), "pipeline": PipelineResource(profile_name="tiny")}


@pytest.fixture(scope="module")
def dbt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dbt")
    lake = Lake(str(root / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=3, seed=0)
    write_synthetic_scores_and_release(lake, "demo-00001", n_triplets=4, seed=1)
    warehouse = root / "warehouse.duckdb"
    mp = pytest.MonkeyPatch()
    mp.setenv("ULTRAEDIT_LAKE", str(root / "lake"))
    mp.setenv("ULTRAEDIT_WAREHOUSE", str(warehouse))
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [dbt_quality_models],
            instance=inst,
            resources=dbt_resources(),
        )
    mp.undo()
    return result, warehouse, lake, dbt_quality_models


def test_lineage_maps_sources_to_dagster_assets():
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models

    deps = dbt_quality_models.asset_deps
    assert deps[dg.AssetKey("shard_quality")] == {dg.AssetKey("metric_scores"), dg.AssetKey("filtered_release")}
    assert deps[dg.AssetKey("threshold_sweep")] == {dg.AssetKey("metric_scores")}
    assert {k.asset_key for k in dbt_quality_models.check_keys} == {
        dg.AssetKey(n)
        for n in (
            "shard_quality",
            "edit_type_quality",
            "metric_summary",
            "threshold_sweep",
            "release_reconciliation",
            "recipe_comparison",
        )
    }
    assert dbt_quality_models.op.pool == "duckdb_writer"


def test_models_built_and_tests_pass_as_checks(dbt_run):
    result, warehouse, lake, assets_def = dbt_run
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(assets_def.keys)
    evals = result.get_asset_check_evaluations()
    assert len(evals) == len(assets_def.check_keys) and all(e.passed for e in evals)
    con = duckdb.connect(str(warehouse), read_only=True)
    shards = con.execute("SELECT shard, candidates, failed, scored, kept FROM shard_quality ORDER BY shard").fetchall()
    kept = {s: lake.num_rows("filtered_release", s) for s in ("demo-00000", "demo-00001")}
    assert shards == [("demo-00000", 12, 3, 9, kept["demo-00000"]), ("demo-00001", 16, 4, 12, kept["demo-00001"])]
    modes = dict(con.execute("SELECT mode, sum(candidates) FROM edit_type_quality GROUP BY 1").fetchall())
    assert modes == {"free_form": 16, "region": 12}
    n, mean = con.execute(
        "SELECT n, mean FROM metric_summary WHERE population = 'scored' AND mode = 'free_form' "
        "AND metric = 'clip_sim_dir'"
    ).fetchone()
    ref = con.execute(
        f"SELECT count(clip_sim_dir), avg(clip_sim_dir) FROM read_parquet('{lake.root}/metric_scores/*/*.parquet') "
        "WHERE status = 'ok' AND mode = 'free_form'"
    ).fetchone()
    assert n == ref[0] and mean == pytest.approx(ref[1])
    # sweep: the profile's grid, complete; looser thresholds never keep fewer samples
    from ultraedit_dagster.core.profiles import get_profile
    from ultraedit_dagster.lake.dbt_project import sweep_vars

    grid = sweep_vars(get_profile("tiny"))["sweep_grid"]
    size = len(grid["clip_sim_image"]) * len(grid["clip_sim_dir"]) * len(grid["clip_sim_caption"])
    size *= len(grid["dinov2_sim"])
    rows = con.execute("SELECT count(*), count(DISTINCT combo) FROM threshold_sweep").fetchone()
    assert rows[0] == rows[1] == size * 2
    lo = {axis: min(values) for axis, values in grid.items()}
    hi = {axis: max(values) for axis, values in grid.items()}
    where = "min_clip_sim_image = ? AND min_clip_sim_dir = ? AND min_clip_sim_caption = ? AND min_dinov2_sim = ?"
    loose = con.execute(f"SELECT max(kept_samples) FROM threshold_sweep WHERE {where}", list(lo.values())).fetchone()
    strict = con.execute(f"SELECT min(kept_samples) FROM threshold_sweep WHERE {where}", list(hi.values())).fetchone()
    assert loose[0] >= strict[0]


def test_a_failing_dbt_test_shows_as_failed_check(tmp_path):
    """A metric_scores row with an unknown mode is caught by edit_type_quality's accepted_values test."""
    import pyarrow as pa

    lake = Lake(str(tmp_path / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=2)
    table = lake.read_table("metric_scores", "demo-00000")
    rows = table.to_pylist()
    rows[0]["mode"] = "bogus"
    lake.write_table("metric_scores", "demo-00000", pa.Table.from_pylist(rows, schema=table.schema))
    mp = pytest.MonkeyPatch()
    mp.setenv("ULTRAEDIT_LAKE", str(tmp_path / "lake"))
    mp.setenv("ULTRAEDIT_WAREHOUSE", str(tmp_path / "w.duckdb"))
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models

    try:
        with dg.DagsterInstance.ephemeral() as inst:
            result = dg.materialize(
                [dbt_quality_models],
                instance=inst,
                resources=dbt_resources(),
                raise_on_error=False,
            )
    finally:
        mp.undo()
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals["accepted_values_edit_type_quality_mode__free_form__region__unassigned"] is False
    assert evals["unique_shard_quality_shard"] is True


def test_a_failed_row_without_a_mode_does_not_fail_the_release_job(tmp_path):
    """An image whose triplets all failed gives metric_scores rows with no mode; edit_type_quality counts them under
    'unassigned' and every dbt test still passes (before, its not_null test failed the release job)."""
    import pyarrow as pa

    lake = Lake(str(tmp_path / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=2)
    table = lake.read_table("metric_scores", "demo-00000")
    rows = table.to_pylist()
    failed = {**rows[0], "candidate_uid": "failed-upstream", "mode": None, "edit_type": None, "status": "failed"}
    failed.update(error="edit_instructions: no valid triplet", pass_all=False)
    lake.write_table("metric_scores", "demo-00000", pa.Table.from_pylist([*rows, failed], schema=table.schema))
    mp = pytest.MonkeyPatch()
    mp.setenv("ULTRAEDIT_LAKE", str(tmp_path / "lake"))
    mp.setenv("ULTRAEDIT_WAREHOUSE", str(tmp_path / "w.duckdb"))
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models

    try:
        with dg.DagsterInstance.ephemeral() as inst:
            result = dg.materialize(
                [dbt_quality_models],
                instance=inst,
                resources=dbt_resources(),
                raise_on_error=False,
            )
    finally:
        mp.undo()
    failing = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert result.success and failing == []
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    modes = dict(con.execute("select mode, sum(failed) from edit_type_quality group by 1").fetchall())
    assert modes.get("unassigned") == 1


def test_threshold_sweep_applies_the_active_profiles_selection_rule(tmp_path):
    """threshold_sweep keeps at most the profile's top k per free-form triplet: with a profile keeping 1, every
    free-form row keeps exactly one sample per kept triplet (it used to apply a fixed top 4 from dbt_project.yml)."""
    import dataclasses

    from ultraedit_dagster.core.profiles import PROFILES, SelectionRule, Thresholds, get_profile

    lake = Lake(str(tmp_path / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=4, seed=3)
    # thresholds at the synthetic scores' scale, so that the sweep's grid (around them) has passing candidates
    floors = Thresholds(0.6, 0.1, 0.2, 0.2, 0.3, min_l1=0.01, max_l1=0.2)
    top1 = dataclasses.replace(
        get_profile("tiny"),
        name="top1",
        selection=SelectionRule(free_form_top_k=1, region_top_k=1, region_min_passing=1),
        free_form_thresholds=floors,
        region_thresholds=floors,
    )
    mp = pytest.MonkeyPatch()
    mp.setitem(PROFILES, "top1", top1)
    mp.setenv("ULTRAEDIT_LAKE", str(tmp_path / "lake"))
    mp.setenv("ULTRAEDIT_WAREHOUSE", str(tmp_path / "w.duckdb"))
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models, dbt_resource

    try:
        with dg.DagsterInstance.ephemeral() as inst:
            resources = {"dbt": dbt_resource(), "pipeline": PipelineResource(profile_name="top1")}
            assert dg.materialize([dbt_quality_models], instance=inst, resources=resources).success
    finally:
        mp.undo()
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    rows = con.execute(
        "select passing_candidates, kept_samples, triplets_kept from threshold_sweep where mode = 'free_form'"
    ).fetchall()
    assert rows and all(kept == triplets for _, kept, triplets in rows)
    # the rule matters here: somewhere more candidates pass than one per triplet
    assert any(passing > kept for passing, kept, _ in rows)
