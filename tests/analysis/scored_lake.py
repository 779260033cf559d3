"""A lake with metric_scores shaped like the tiny profile's (scores around its thresholds, NaN / out-of-range /
no-op / failed rows among them) and the filtered_release that the release's own selection code
(`release.selection.select`, `release_row`, `release_rule`, as the filtered_release asset calls them) keeps from it."""

import math

import numpy as np
import pyarrow as pa

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.release.schema import release_row, release_table
from ultraedit_dagster.release.selection import release_rule, select, thresholds_by_mode
from ultraedit_dagster.scoring.metrics import pass_flags
from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA, thresholds_for


def scored_rows(shard: str, n_triplets: int, seed: int, profile) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_triplets):
        mode = "region" if t % 5 in (1, 3) else "free_form"
        iuid = make_uid("instr", shard, t)
        offset = rng.uniform(-0.15, 0.25)  # some triplets edit well, some do not
        n = profile.region.candidates_per_triplet if mode == "region" else profile.free_form.candidates_per_triplet
        for k in range(n):
            m = {
                "clip_sim_source": rng.uniform(0.1, 0.4),
                "clip_sim_target": rng.uniform(0.1, 0.4),
                "clip_sim_dir": float(np.clip(rng.normal(0.05 + offset, 0.12), -1, 1)),
                "clip_sim_image": rng.uniform(0.9987, 1.0),
                "dinov2_sim": rng.uniform(0.9987, 1.0),
                "ssim": rng.uniform(0.3, 0.95),
                "l1": rng.uniform(0.0, 0.3),
            }
            pathology = rng.random()
            status, error = "ok", None
            if pathology < 0.03:
                m["clip_sim_dir"] = math.nan  # NaN sorts above every number in DuckDB: it must not pass
            elif pathology < 0.05:
                m["ssim"] = 1.5  # outside the valid range
            elif pathology < 0.08:
                status, error = "failed", "edit_candidates: diffusion exploded"
                m = dict.fromkeys(m)
            flags = (
                pass_flags(m, thresholds_for(profile, mode))
                if status == "ok"
                else dict.fromkeys(["pass_all", "pass_clip_sim_dir"], False)
            )
            rows.append(
                {
                    "candidate_uid": make_uid("cand", shard, t, k),
                    "instruction_uid": iuid,
                    "image_uid": make_uid("img", shard, t // 3),
                    "shard": shard,
                    "mode": mode,
                    "edit_type": ["Add", "Replace", "Change Color", "Remove"][t % 4],
                    **m,
                    **flags,
                    "thresholds": "profile",
                    "status": status,
                    "error": error,
                    "profile": profile.name,
                    "outcome": "scored" if status == "ok" else "failed",
                    "round": k // 2,
                }
            )
    return rows


def write_scored_lake(lake, shards=("demo-00000", "demo-00001"), n_triplets: int = 40, profile_name: str = "tiny"):
    """metric_scores and filtered_release for each shard; returns {shard: metric_scores rows}."""
    profile = get_profile(profile_name)
    out = {}
    for i, shard in enumerate(shards):
        scores = scored_rows(shard, n_triplets, seed=100 + i, profile=profile)
        lake.write_table("metric_scores", shard, pa.Table.from_pylist(scores, schema=METRIC_SCORES_SCHEMA))
        result = select(scores, profile.selection, thresholds_by_mode(profile))
        rule = release_rule(profile)
        rows = [
            release_row({**r, "instruction": "edit it"}, r, rank=r["rank"], rule=rule, region={"edit_object": "cup"})
            for r in result.selected
        ]
        lake.write_table("filtered_release", shard, release_table(rows))
        out[shard] = scores
    return out
