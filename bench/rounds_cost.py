"""What a kept sample costs with the fused generate-and-score step, `exhaustive` vs `early`, side by side (issue 16,
docs/method.md §8). Prints figures; times nothing in the unit tests.

A synthetic shard from the embedded demo photos (their captions, a one-word edit of each, one region triplet per
image with a box mask), the tiny editor and scorer at a small working size, the tiny profile's calibrated thresholds,
the published candidate counts (30 free-form, 100 region) unless told otherwise. Each configuration runs in its own
process so its peak RSS is its own. Per policy:

- candidates generated, model seconds and wall seconds per kept sample;
- lake bytes per kept sample (both shard files) and their ratio to the released sample's own bytes (its source,
  edited and mask PNGs);
- mean clip_sim_dir of the selected candidates (what early stopping costs in selection quality);
- peak RSS at 10 and at the full count of candidates per triplet (goal: within 1.2x);
- orchestration overhead: step wall seconds / model seconds (generation + scoring).

    .venv/bin/python -m bench.rounds_cost [--images 32] [--free-form 30] [--region 100] [--working-size 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "ultraedit_dagster" / "demo_data"
EDITS = [("a ", "a red "), ("cat", "dog"), ("black", "white"), ("man", "woman"), ("orange", "blue")]


def _target(caption: str) -> tuple[str, str]:
    for old, new in EDITS:
        if old in caption:
            return f"change {old.strip()} to {new.strip()}", caption.replace(old, new, 1)
    return "make it snowy", caption.rstrip(".") + " in the snow."


def build_shard(lake, shard: str, images: int, size: int = 512) -> None:
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    from ultraedit_dagster.core.imaging import encode_png

    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines() if line.strip()]
    src, ins, masks = [], [], []
    for i in range(images):
        r = rows[i % len(rows)]
        uid = f"img{i:03d}"
        im = Image.open(DEMO / r["image"]).convert("RGB").resize((size, size))
        src.append({"uid": uid, "image": encode_png(im), "status": "ok", "error": None})
        instruction, target = _target(r["caption"])
        for j, mode in enumerate(("free_form", "free_form", "region")):
            iu = f"{uid}-{j}"
            ins.append(
                dict(
                    instruction_uid=iu,
                    image_uid=uid,
                    instruction=instruction,
                    source_caption=r["caption"],
                    target_caption=target,
                    edit_type="Replace",
                    mode=mode,
                    status="ok",
                    error=None,
                )
            )
            if mode == "region":
                m = np.zeros((size, size), np.uint8)
                m[size // 4 : 3 * size // 4, size // 5 : 4 * size // 5] = 255
                masks.append(
                    dict(
                        instruction_uid=iu,
                        soft_mask=encode_png(Image.fromarray(m, mode="L")),
                        soft_value=0.0,
                        inner_mask=encode_png(Image.fromarray(m, mode="L")),  # no band: inner = outer = the box
                        outer_mask=encode_png(Image.fromarray(m, mode="L")),
                        qc="ok",
                        status="ok",
                        error=None,
                    )
                )
    lake.write_table("source_images", shard, pa.Table.from_pylist(src))
    lake.write_table("edit_instructions", shard, pa.Table.from_pylist(ins))
    lake.write_table("region_masks", shard, pa.Table.from_pylist(masks))


def one(
    policy: str,
    images: int,
    ff: int,
    rg: int,
    working_size: int,
    round_size: int,
    profile_name: str = "tiny",
    device: str = "cpu",
) -> dict:
    """One configuration in this process: run the fused step's runner, write both shard files, measure.
    `profile_name` / `device`: `tiny` on the CPU here; `bench/gpu.py` runs the `ultraedit` profile on CUDA with local
    weights (working_size 0 = the profile's own)."""
    import pyarrow as pa
    import torch

    from ultraedit_dagster.core.profiles import get_profile
    from ultraedit_dagster.editing.resources import EditorResource
    from ultraedit_dagster.editing.rounds import RoundRunner
    from ultraedit_dagster.editing.rows import EDIT_CANDIDATES_SCHEMA, shard_bytes
    from ultraedit_dagster.lake.store import Lake
    from ultraedit_dagster.scoring.resources import ScorerResource
    from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA

    base = get_profile(profile_name)
    if device == "cpu":
        torch.set_num_threads(1)
    profile = dataclasses.replace(
        base,
        free_form=dataclasses.replace(base.free_form, candidates_per_triplet=ff),
        region=dataclasses.replace(base.region, candidates_per_triplet=rg),
        rounds=dataclasses.replace(base.rounds, policy=policy, round_size=round_size, extra_rounds=1),
        selection=dataclasses.replace(base.selection, free_form_top_k=4),  # published
    )
    tmp = tempfile.mkdtemp(prefix="bench-rounds-")
    lake, shard = Lake(f"{tmp}/lake"), "bench-00000"
    build_shard(lake, shard, images)
    sizing = {"working_size": working_size} if working_size else {}
    editor = EditorResource.from_profile(base, device=device, batch_size=8, **sizing)
    scorer = ScorerResource.from_profile(base, device=device)
    ids = {"clip_model_id": scorer.clip_model_id, "dinov2_model_id": scorer.dinov2_model_id, "scorer_input_sizes": "-"}
    editor.generator()
    scorer._load_clip(), scorer._load_dino()  # models load before the clock starts
    runner = RoundRunner(lake, shard, profile=profile, global_seed=0, editor=editor, scorer=scorer, score_ids=ids)
    t0 = time.perf_counter()
    kept_bytes = 0
    dirs = []
    with (
        lake.open_writer("edit_candidates", shard, EDIT_CANDIDATES_SCHEMA) as cw,
        lake.open_writer("metric_scores", shard, METRIC_SCORES_SCHEMA) as sw,
    ):
        for cands, scores in runner.run():
            cw.write_table(pa.Table.from_pylist(cands, schema=EDIT_CANDIDATES_SCHEMA))
            sw.write_table(pa.Table.from_pylist(scores, schema=METRIC_SCORES_SCHEMA))
            for c, s in zip(cands, scores, strict=True):
                if c["outcome"] == "selected":
                    kept_bytes += len(c["source_image"]) + len(c["target_image"])
                    kept_bytes += len(c["mask_image"]) if c["mode"] == "region" else 0
                    dirs.append(s["clip_sim_dir"])
    wall = time.perf_counter() - t0
    st = runner.stats
    kept = st.kept_samples
    lake_bytes = shard_bytes(lake, "edit_candidates", shard) + shard_bytes(lake, "metric_scores", shard)
    model = st.generation_seconds + st.scoring_seconds
    return {
        "policy": policy,
        "profile": profile_name,
        "device": device,
        "images": images,
        "candidates": [ff, rg],
        "generated": st.generated,
        "kept": kept,
        "triplets": st.triplets,
        "stopped_early": st.stopped_early,
        "region_dropped": st.region_dropped,
        "candidates_per_kept": st.generated / kept if kept else None,
        "model_s_per_kept": model / kept if kept else None,
        "wall_s_per_kept": wall / kept if kept else None,
        "lake_bytes_per_kept": lake_bytes / kept if kept else None,
        "lake_to_release_ratio": lake_bytes / kept_bytes if kept_bytes else None,
        "mean_selected_clip_sim_dir": sum(dirs) / len(dirs) if dirs else None,
        "overhead_wall_over_model": wall / model if model else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vae_encodings": runner._gen.vae_encodings,
    }


def child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.rounds_cost", "--child", *args], cwd=REPO, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def side_by_side(
    images: int = 32,
    free_form: int = 30,
    region: int = 100,
    working_size: int = 64,
    round_size: int = 10,
    profile: str = "tiny",
    device: str = "cpu",
    rss: bool = True,
) -> dict:
    """`exhaustive` and `early` on the same shard, each in its own process; prints the table and returns it."""
    common = ["--images", str(images), "--working-size", str(working_size), "--round-size", str(round_size)]
    common += ["--profile", profile, "--device", device]
    results = []
    for policy in ("exhaustive", "early"):
        results.append(child([*common, "--policy", policy, "--free-form", str(free_form), "--region", str(region)]))
    keys = [k for k in results[0] if k not in ("policy",)]
    print(f"{'figure':<30}" + "".join(f"{r['policy']:>16}" for r in results))
    for k in keys:
        vals = [r[k] for r in results]
        print(f"{k:<30}" + "".join(f"{v:>16.4g}" if isinstance(v, float) else f"{v!s:>16}" for v in vals))
    out = {"policies": results}
    if rss:
        small = child([*common, "--policy", "exhaustive", "--free-form", "10", "--region", "10"])
        big = results[0]
        out["peak_rss_mb_at_10"] = small["peak_rss_mb"]
        out["peak_rss_ratio"] = big["peak_rss_mb"] / small["peak_rss_mb"]
        print(
            f"peak RSS exhaustive: {small['peak_rss_mb']:.0f} MB at 10 candidates/triplet, "
            f"{big['peak_rss_mb']:.0f} MB at {free_form}/{region}: ratio {out['peak_rss_ratio']:.2f}"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--free-form", type=int, default=30)
    p.add_argument("--region", type=int, default=100)
    p.add_argument("--working-size", type=int, default=64)
    p.add_argument("--round-size", type=int, default=10)
    p.add_argument("--policy", default="exhaustive")
    p.add_argument("--child", action="store_true")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.child:
        figures = one(a.policy, a.images, a.free_form, a.region, a.working_size, a.round_size, a.profile, a.device)
        print(json.dumps(figures))
        return
    out = side_by_side(
        a.images, a.free_form, a.region, a.working_size, a.round_size, a.profile, a.device, rss=not a.skip_rss
    )
    (REPO / "bench" / "results" / f"rounds_cost-{a.profile}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
