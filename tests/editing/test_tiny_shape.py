"""The tiny profile has the real workload's shape (docs/method.md §11): on demo photos and captions some candidates
fail thresholds, some triplets stop early, region triplets with fewer than 3 passing are dropped, and the counts say
how many of each."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from bench.rounds_cost import build_shard
from ultraedit_dagster.core.profiles import TINY
from ultraedit_dagster.editing.resources import EditorResource
from ultraedit_dagster.editing.rounds import RoundRunner
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.scoring.resources import ScorerResource


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    lake = Lake(str(tmp_path_factory.mktemp("shape") / "lake"))
    build_shard(lake, "shape-00000", images=8, size=128)
    runner = RoundRunner(
        lake,
        "shape-00000",
        profile=TINY,
        global_seed=0,
        editor=EditorResource.from_profile(TINY, device="cpu", working_size=64),
        scorer=ScorerResource.from_profile(TINY, device="cpu"),
        score_ids={"clip_model_id": "c", "dinov2_model_id": "d", "scorer_input_sizes": "s"},
    )
    scores = [s for _, batch in runner.run() for s in batch]
    torch.set_num_threads(before)
    return runner, scores


def test_tiny_profile_rejects_stops_early_and_drops_regions(shard_run):
    runner, scores = shard_run
    outcomes = Counter(s["outcome"].split(":")[0] for s in scores)
    st = runner.stats
    assert sum(v for k, v in outcomes.items() if k.startswith("below_")) > 0  # thresholds reject
    assert outcomes["selected"] > 0
    assert st.stopped_early > 0  # the policy stopped triplets before all N
    assert st.region_dropped > 0 and outcomes["passed_triplet_dropped"] > 0  # region: top 3 with >= 3 passing
    ok = [s for s in scores if s["status"] == "ok"]
    rate = sum(s["pass_all"] for s in ok) / len(ok)
    assert 0.1 <= rate <= 0.3, rate  # the calibration target (docs/method.md §11)
