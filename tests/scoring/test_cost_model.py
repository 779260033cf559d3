"""The dbt model `cost_per_kept_sample` (docs/method.md §8) over metric_scores written by the fused step's runner:
its counts agree with the rows (its SQL run in DuckDB with the source rendered as the lake's Parquet glob)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import duckdb
import pyarrow as pa
import pytest
import torch

from tests.editing.test_editor_asset import SHARD, SIZE, _write_upstream
from ultraedit_dagster.core.profiles import TINY, Rounds, Thresholds
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rounds import RoundRunner
from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.scoring.resources import ScorerResource
from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    torch.set_num_threads(1)
    lk = Lake(str(tmp_path_factory.mktemp("cost") / "lake"))
    _write_upstream(lk, SHARD, with_masks=True)
    t = Thresholds(clip_sim_image=0.99, clip_sim_dir=0.0, clip_sim_source=0.1, clip_sim_target=0.15, dinov2_sim=0.99)
    profile = dataclasses.replace(
        TINY,
        free_form_thresholds=t,
        region_thresholds=t,
        rounds=Rounds(round_size=2, policy="early", extra_rounds=0),
        selection=dataclasses.replace(TINY.selection, region_min_passing=1),
    )
    runner = RoundRunner(
        lk,
        SHARD,
        profile=profile,
        global_seed=0,
        editor=EditorResource.from_profile(TINY, device="cpu", working_size=SIZE),
        scorer=ScorerResource.from_profile(TINY, device="cpu"),
        score_ids={"clip_model_id": "c", "dinov2_model_id": "d", "scorer_input_sizes": "s"},
    )
    scores = [s for _, batch in runner.run() for s in batch]
    lk.write_table("metric_scores", SHARD, pa.Table.from_pylist(scores, schema=METRIC_SCORES_SCHEMA))
    return lk, scores


def test_cost_model_counts_match_the_rows(lake):
    lk, scores = lake
    sql = (DBT_PROJECT_DIR / "models" / "cost_per_kept_sample.sql").read_text()
    sql = re.sub(
        r"\{\{\s*source\('lake', 'metric_scores'\)\s*\}\}", f"read_parquet('{lk.asset_glob('metric_scores')}')", sql
    )
    rows = duckdb.connect().execute(sql).fetch_arrow_table().to_pylist()
    by_mode = {r["mode"]: r for r in rows}
    for mode in ("free_form", "region"):
        made = [s for s in scores if s["mode"] == mode and not s["outcome"].startswith("upstream_failed")]
        kept = sum(s["outcome"] == "selected" for s in made)
        r = by_mode[mode]
        assert r["candidates_generated"] == len(made) and r["kept"] == kept
        assert r["unet_row_steps"] == sum(s["unet_row_steps"] for s in made) > 0
        if kept:
            assert r["candidates_per_kept_sample"] == pytest.approx(len(made) / kept)
        scored = [s for s in made if s["status"] == "ok"]
        assert r["pass_rate_clip_sim_dir"] == pytest.approx(sum(s["pass_clip_sim_dir"] for s in scored) / len(scored))
    outcomes = Counter(s["outcome"].split(":")[0] for s in scores)
    assert outcomes["selected"] == sum(r["kept"] for r in rows)
