"""Upstream lake shards for the quality-stage tests: real photos (scikit-image) as tiny 64x64 edit pairs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image
from skimage import data as skdata

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.core.imaging import encode_png

SIZE = 64


def photo(name: str) -> np.ndarray:
    return np.asarray(
        Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    )


def _common(shard, status="ok", error=None):
    return {"shard": shard, "status": status, "error": error, "profile": "tiny"}


def write_upstream(lake, shard: str, all_failed: bool = False) -> dict:
    """Image A: free-form triplet F1 (3 candidates, one failed upstream) + region triplet R1 (3 candidates);
    image B: free-form triplet F2 whose 2 candidates all failed. With `all_failed`, every candidate failed."""
    imgs = {"A": photo("astronaut"), "B": photo("chelsea")}
    uids = {k: make_uid("img", shard, k) for k in imgs}
    lake.write_table(
        "source_images",
        shard,
        pa.Table.from_pylist(
            [
                {
                    "uid": uids[k],
                    "image": encode_png(v),
                    "width": 512,
                    "height": 512,
                    "uri": f"file:///photos/{k}.jpg",
                    "caption_gt": f"photo {k}",
                    "source": "skimage",
                    "license": "CC0" if k == "A" else "CC-BY-4.0",
                    **_common(shard),
                }
                for k, v in imgs.items()
            ]
        ),
    )
    lake.write_table(
        "captions",
        shard,
        pa.Table.from_pylist(
            [
                {
                    "uid": uids[k],
                    "caption_gt": f"photo {k}",
                    "caption_short": f"a photo {k}",
                    "caption_desc": f"a long photo {k}",
                    "caption_short_truncated": False,
                    "captioner_id": "passthrough",
                    **_common(shard),
                }
                for k in imgs
            ]
        ),
    )
    triplets = [
        ("F1", "A", "free_form", "Change Color"),
        ("R1", "A", "region", "Replace"),
        ("F2", "B", "free_form", "Add"),
    ]
    tuid = {t: make_uid("instr", shard, t) for t, *_ in triplets}
    lake.write_table(
        "edit_instructions",
        shard,
        pa.Table.from_pylist(
            [
                {
                    "instruction_uid": tuid[t],
                    "image_uid": uids[img],
                    "source_caption": f"a photo {img}",
                    "instruction": f"do {t} <b>&</b>",
                    "target_caption": f"an edited photo {img} {t}",
                    "edit_type": et,
                    "mode": mode,
                    "llm_id": "template",
                    "caption_desc": f"a long photo {img}",
                    "near_duplicate": False,
                    **_common(shard),
                }
                for t, img, mode, et in triplets
            ]
        ),
    )
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    lake.write_table(
        "region_masks",
        shard,
        pa.Table.from_pylist(
            [
                {
                    "instruction_uid": tuid["R1"],
                    "image_uid": uids["A"],
                    "edit_object": "face",
                    "fine_mask": encode_png(mask),
                    "tagger_id": "tagger-x",
                    "grounder_id": "grounder-y",
                    "segmenter_id": "sam-z",
                    "qc": "ok",
                    **_common(shard),
                }
            ]
        ),
    )
    rows = []
    for t, img, mode, et in triplets:
        for k in range(3 if t != "F2" else 2):
            src = imgs[img]
            tgt = src.copy()
            tgt[16:48, 16:48] = (tgt[16:48, 16:48].astype(int) * (0.5 + 0.2 * k)).clip(0, 255).astype(np.uint8)
            failed = all_failed or t == "F2" or (t == "F1" and k == 2)
            rows.append(
                {
                    "candidate_uid": make_uid("cand", tuid[t], k),
                    "instruction_uid": tuid[t],
                    "image_uid": uids[img],
                    "mode": mode,
                    "edit_type": et,
                    "instruction": f"do {t} <b>&</b>",
                    "source_caption": f"a photo {img}",
                    "target_caption": f"an edited photo {img} {t}",
                    "source_image": None if failed else encode_png(src),
                    "target_image": None if failed else encode_png(tgt),
                    "mask_image": encode_png(mask) if mode == "region" and not failed else None,
                    "seed": 1000 + k,
                    "p": 0.5,
                    "steps": 3,
                    "strength": 0.6,
                    "guidance": 0.5,
                    "soft_value": None,
                    "editor_id": "tiny-sdxl",
                    **_common(
                        shard,
                        "failed" if failed else "ok",
                        ("source_images: unreadable" if t == "F2" else "diffusion exploded") if failed else None,
                    ),
                }
            )
    lake.write_table("edit_candidates", shard, pa.Table.from_pylist(rows))
    return {"instruction_uids": tuid, "image_uids": uids}


def write_synthetic_scores_and_release(lake, shard: str, n_triplets: int = 3, seed: int = 0) -> None:
    """metric_scores + filtered_release shards without running any model (for card and dbt tests)."""
    from types import SimpleNamespace

    from ultraedit_dagster.core.profiles import SelectionRule, Thresholds
    from ultraedit_dagster.release.schema import release_row, release_table
    from ultraedit_dagster.release.selection import release_rule, select
    from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA

    rng = np.random.default_rng(seed)
    base = photo("coffee")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:40, 8:40] = 255
    scores, cands = [], {}
    for t in range(n_triplets):
        mode = "region" if t % 2 else "free_form"
        iuid = make_uid("instr", shard, t)
        for k in range(4):
            cuid = make_uid("cand", shard, t, k)
            failed = k == 3
            m = {
                "clip_sim_source": rng.uniform(0.2, 0.35),
                "clip_sim_target": rng.uniform(0.2, 0.35),
                "clip_sim_dir": rng.uniform(0.0, 0.4),
                "clip_sim_image": rng.uniform(0.6, 0.95),
                "dinov2_sim": rng.uniform(0.3, 0.9),
                "ssim": rng.uniform(0.3, 0.9),
                "l1": rng.uniform(0.01, 0.2),
            }
            passed = not failed and m["clip_sim_dir"] >= 0.1
            scores.append(
                {
                    "candidate_uid": cuid,
                    "instruction_uid": iuid,
                    "image_uid": "img",
                    "shard": shard,
                    "mode": mode,
                    "edit_type": ["Add", "Replace", "Change Color"][t % 3],
                    **({k2: None for k2 in m} if failed else m),
                    **{
                        f"pass_{x}": passed
                        for x in ("clip_sim_image", "clip_sim_dir", "clip_sim_source", "clip_sim_target", "dinov2_sim")
                    },
                    "pass_all": passed,
                    "thresholds": "synthetic",
                    "clip_model_id": "open_clip:tiny/random-seed0",
                    "dinov2_model_id": "transformers:tiny/random-seed0",
                    "scorer_input_sizes": "clip=32,dinov2=56,ssim=64",
                    "status": "failed" if failed else "ok",
                    "error": "edit_candidates: boom" if failed else None,
                    "profile": "tiny",
                }
            )
            tgt = base.copy()
            tgt[8:40, 8:40] = rng.integers(0, 256, 3, dtype=np.uint8)
            cands[cuid] = {
                "candidate_uid": cuid,
                "instruction_uid": iuid,
                "image_uid": "img",
                "shard": shard,
                "mode": mode,
                "edit_type": scores[-1]["edit_type"],
                "instruction": f"edit <{t}> & go",
                "source_caption": "a cup of coffee",
                "target_caption": f"a cup of coffee {t}",
                "source_image": encode_png(base),
                "target_image": encode_png(tgt),
                "mask_image": encode_png(mask) if mode == "region" else None,
                "seed": k,
                "p": 0.3,
                "steps": 3,
                "strength": 0.6,
                "guidance": 0.5,
                "editor_id": "tiny-sdxl",
                "profile": "tiny",
            }
    lake.write_table("metric_scores", shard, pa.Table.from_pylist(scores, schema=METRIC_SCORES_SCHEMA))
    rule_set = SelectionRule(free_form_top_k=2, region_top_k=2, region_min_passing=1)
    result = select(scores, rule_set)
    # the rule every row carries: the one that admitted it (passing = clip_sim_dir >= 0.1, the other minimums are
    # the synthetic ranges' floors, so the release reconciliation in dbt can check the rows against it)
    floors = Thresholds(0.6, 0.1, 0.2, 0.2, 0.3, min_l1=0.01, max_l1=0.2)
    rule = release_rule(SimpleNamespace(selection=rule_set, free_form_thresholds=floors, region_thresholds=floors))
    rows = [
        release_row(
            cands[r["candidate_uid"]],
            r,
            rank=r["rank"],
            source={"license": "CC0", "uri": "file:///coffee.jpg"},
            region={"edit_object": "cup"} if r["mode"] == "region" else None,
            rule=rule,
        )
        for r in result.selected
    ]
    lake.write_table("filtered_release", shard, release_table(rows))
