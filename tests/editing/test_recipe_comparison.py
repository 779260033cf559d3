"""Both recipes on the same captions in one lake, and the dbt model `recipe_comparison` over them (docs/method.md §12):
its SQL run in DuckDB with the source rendered as the lake's Parquet glob."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pytest
import torch

from bench.rounds_cost import build_shard
from ultraedit_dagster.core.profiles import TINY, TINY_IP2P
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rounds import RoundRunner
from ultraedit_dagster.editing.rows import EDIT_CANDIDATES_SCHEMA
from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA

# the same demo captions registered twice, once per recipe (a shard's files hold one recipe's rows)
SHARDS = {"cmp-00000": TINY, "cmpip2p-00000": TINY_IP2P}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    lk = Lake(str(tmp_path_factory.mktemp("recipes") / "lake"))
    scores = {}
    for shard, profile in SHARDS.items():
        build_shard(lk, shard, images=2, size=64)
        runner = RoundRunner(
            lk,
            shard,
            profile=profile,
            global_seed=0,
            editor=EditorResource.from_profile(profile, device="cpu", working_size=64),
            scorer=ScorerResource.from_profile(profile, device="cpu"),
            score_ids={"clip_model_id": "c", "dinov2_model_id": "d", "scorer_input_sizes": "s"},
        )
        out = list(runner.run())
        cands = [c for batch, _ in out for c in batch]
        scores[shard] = [s for _, batch in out for s in batch]
        lk.write_table("edit_candidates", shard, pa.Table.from_pylist(cands, schema=EDIT_CANDIDATES_SCHEMA))
        lk.write_table("metric_scores", shard, pa.Table.from_pylist(scores[shard], schema=METRIC_SCORES_SCHEMA))
    torch.set_num_threads(before)
    return lk, scores


def _model(lk: Lake) -> dict[str, dict]:
    sql = (DBT_PROJECT_DIR / "models" / "recipe_comparison.sql").read_text()
    glob = f"read_parquet('{lk.asset_glob('metric_scores')}', union_by_name = true)"
    sql = re.sub(r"\{\{\s*source\('lake', 'metric_scores'\)\s*\}\}", glob, sql)
    rows = duckdb.connect().execute(sql).fetch_arrow_table().to_pylist()
    return {r["recipe_mode_edit_type"]: r for r in rows}


def test_both_recipes_side_by_side(lake):
    lk, scores = lake
    rows = _model(lk)
    versions = {"ultraedit": "ultraedit-v2", "ip2p": "ip2p-v1"}
    for shard, profile in SHARDS.items():
        recipe = profile.recipe
        assert {(s["recipe"], s["recipe_version"]) for s in scores[shard]} == {(recipe, versions[recipe])}
        for mode in ("free_form", "region"):
            made = [s for s in scores[shard] if s["mode"] == mode and not s["outcome"].startswith("upstream_failed")]
            r = rows[f"{recipe}/{mode}/all"]  # a row per recipe and mode
            assert r["recipe"] == recipe and r["edit_type"] == "all" and r["recipe_versions"] == versions[recipe]
            assert r["candidates_generated"] == len(made) > 0
            kept = sum(s["outcome"] == "selected" for s in made)
            assert r["kept"] == kept
            if kept:
                assert r["candidates_per_kept_sample"] == pytest.approx(len(made) / kept)
                assert r["unet_row_steps_per_kept_sample"] == pytest.approx(
                    sum(s["unet_row_steps"] for s in made) / kept
                )
            ok = [s for s in made if s["status"] == "ok"]
            assert r["pass_rate_all"] == pytest.approx(sum(s["pass_all"] for s in ok) / len(ok))
            assert r["pass_rate_clip_sim_dir"] == pytest.approx(sum(s["pass_clip_sim_dir"] for s in ok) / len(ok))
            dirs = sorted(s["clip_sim_dir"] for s in ok)
            assert r["mean_clip_sim_dir"] == pytest.approx(sum(dirs) / len(dirs))
            assert min(dirs) <= r["p10_clip_sim_dir"] <= r["p50_clip_sim_dir"] <= r["p90_clip_sim_dir"] <= max(dirs)
            per_type = [v for k, v in rows.items() if k.startswith(f"{recipe}/{mode}/") and v["edit_type"] != "all"]
            assert sum(v["candidates_generated"] for v in per_type) == len(made)
    # ip2p is the costlier recipe per candidate: 4 UNet rows (CFG) x 4 steps against at most 2 x 4
    assert rows["ip2p/free_form/all"]["unet_row_steps"] / rows["ip2p/free_form/all"]["candidates_generated"] == 16
    assert (
        rows["ultraedit/free_form/all"]["unet_row_steps"] / rows["ultraedit/free_form/all"]["candidates_generated"] < 16
    )


def test_rows_without_a_recipe_count_as_ultraedit_v1(lake, tmp_path):
    lk, scores = lake
    old = Lake(str(tmp_path / "lake"))
    legacy = [{k: v for k, v in s.items() if k not in ("recipe", "recipe_version")} for s in scores["cmp-00000"]]
    schema = pa.schema([f for f in METRIC_SCORES_SCHEMA if f.name not in ("recipe", "recipe_version")])
    old.write_table("metric_scores", "old-00000", pa.Table.from_pylist(legacy, schema=schema))
    old.write_table("metric_scores", "cmpip2p-00000", lk.read_table("metric_scores", "cmpip2p-00000"))
    rows = _model(old)
    assert rows["ultraedit/free_form/all"]["recipe_versions"] == "ultraedit-v1"
    assert rows["ip2p/free_form/all"]["recipe_versions"] == "ip2p-v1"
