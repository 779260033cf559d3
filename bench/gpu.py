"""Bench 7 (not run by run_all): GPU figures with the `ultraedit` profile, when a GPU and local weights are present.

    python -m bench.gpu [--pairs 64] [--batch 8]

Candidate pairs/s: `EditorResource.from_profile(ultraedit)` (SDXL-Turbo img2img with Prompt-to-Prompt, 512 px,
free-form parameters: strength 0.6, steps from {3, 5, 8}) over the demo images, after a warm-up batch.
Metric pairs/s: `ScorerResource.from_profile(ultraedit)` (CLIP ViT-L/14 + DINOv2-L at 518 + SSIM/L1) over pairs of
512 px images in batches of the scorer's batch size, after a warm-up.
Weights are never downloaded here: set HF_HUB_OFFLINE=1 (done below) and have them in the Hugging Face / open_clip
caches or give local folders through the profile. Whatever cannot run is printed with the reason, and the figures
that could be measured are written to bench/results/gpu.json.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback

from .common import RESULTS_DIR, BenchResult, machine, machine_line, median, print_result, write_json


def _requests(n: int, profile):
    from ultraedit_dagster.editing.generation import FREE_FORM, PairRequest, draw_params

    from .stage_batching import _load_images

    images = _load_images(n)
    out = []
    for i, (im, cap) in enumerate(images):
        uid = f"gpu-bench-{i}"
        out.append(
            PairRequest(
                uid=uid,
                mode=FREE_FORM,
                image=im,
                source_caption=cap,
                target_caption=cap.rstrip(".") + " with a small red ball next to it.",
                params=draw_params(0, uid, FREE_FORM, profile.free_form),
                image_key=f"img{i % 16}",
            )
        )
    return out


def bench_editor(res: BenchResult, profile, n: int, batch: int) -> None:
    import torch

    from ultraedit_dagster.editing.resources import EditorResource

    editor = EditorResource.from_profile(profile, batch_size=batch)
    t0 = time.perf_counter()
    try:
        gen = editor.generator()
    except Exception as exc:  # noqa: BLE001 - most often: weights not in the local cache
        res.skipped.append(f"editor ({profile.editor_model}): could not load: {type(exc).__name__}: {str(exc)[:300]}")
        return
    res.details["editor_load_s"] = time.perf_counter() - t0
    gen.generate(_requests(batch, profile))  # warm-up
    rates = []
    for rep in range(3):
        reqs = _requests(n, profile)
        for r in reqs:
            r.uid += f"-{rep}"
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = gen.generate(reqs)
        torch.cuda.synchronize()
        rates.append(len(reqs) / (time.perf_counter() - t0))
        failed = [r.error for r in out if not r.ok]
        if failed:
            res.notes.append(f"editor: {len(failed)} of {len(out)} pairs failed ({failed[0]})")
    res.add(
        "candidate pairs/s (ultraedit editor)",
        median(rates),
        "pairs/s",
        ">= 6 per H100 (docs/method.md §8)",
        median(rates) >= 6.0,
        note=f"batch {batch}, {n} pairs x 3, steps drawn from the profile",
    )
    res.details["editor_runs_pairs_per_s"] = rates
    res.details["editor_id"] = editor.editor_id


def bench_scorer(res: BenchResult, profile, n: int) -> None:
    import numpy as np
    import torch

    from ultraedit_dagster.scoring.resources import ScorerResource

    from .stage_batching import _load_images

    scorer = ScorerResource.from_profile(profile)
    images = _load_images(n)
    rng = np.random.default_rng(0)
    src = [np.asarray(im) for im, _ in images]
    caps = [c for _, c in images]
    try:
        scorer.score(src[:2], [s[::-1].copy() for s in src[:2]], caps[:2], caps[:2])  # load + warm-up
    except Exception as exc:  # noqa: BLE001
        res.skipped.append(
            f"scorer ({profile.clip_model}/{profile.clip_pretrained}, {profile.dinov2_model}): "
            f"could not load: {type(exc).__name__}: {str(exc)[:300]}"
        )
        return
    rates = []
    for rep in range(3):
        tgt = [
            np.clip(s.astype(np.int16) + rng.integers(-20, 21, size=s.shape, dtype=np.int16), 0, 255).astype(np.uint8)
            for s in src
        ]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, n, scorer.batch_size):
            scorer.score(
                src[i : i + scorer.batch_size],
                tgt[i : i + scorer.batch_size],
                caps[i : i + scorer.batch_size],
                [c + f" ({rep})" for c in caps[i : i + scorer.batch_size]],
            )
        torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    res.add(
        "metric pairs/s (ultraedit scorer)",
        median(rates),
        "pairs/s",
        note=f"CLIP {profile.clip_model} + DINOv2 {profile.dinov2_model} at {profile.dinov2_size} + SSIM/L1; "
        f"batch {scorer.batch_size}",
    )
    res.details["scorer_runs_pairs_per_s"] = rates


def bench_rounds(res: BenchResult, profile, images: int) -> None:
    """The candidate-economy table of bench/rounds_cost.py (exhaustive vs early at the published 30 / 100 candidates
    per triplet: candidates, model and wall seconds, lake bytes per kept sample, selection quality, peak RSS,
    orchestration overhead) with the `ultraedit` profile's real models on the GPU, at its own working size."""
    from .rounds_cost import side_by_side

    out = side_by_side(images=images, working_size=0, profile=profile.name, device="cuda", rss=True)
    goals = {"lake_to_release_ratio": ("<= 2.5", 2.5), "overhead_wall_over_model": ("<= 1.2", 1.2)}
    for r in out["policies"]:
        for key, unit in (
            ("candidates_per_kept", ""),
            ("model_s_per_kept", "s"),
            ("wall_s_per_kept", "s"),
            ("lake_bytes_per_kept", "B"),
            ("lake_to_release_ratio", "x"),
            ("mean_selected_clip_sim_dir", ""),
            ("overhead_wall_over_model", "x"),
        ):
            target, limit = goals.get(key, ("", None))
            value = r[key]
            met = None if limit is None or value is None or r["policy"] != "exhaustive" else value <= limit
            res.add(f"{r['policy']}: {key}", value, unit, target if r["policy"] == "exhaustive" else "", met)
    ratio = out.get("peak_rss_ratio")
    met = None if ratio is None else ratio <= 1.2
    res.add("peak RSS 30/100 vs 10 candidates per triplet", ratio, "x", "<= 1.2", met)
    res.details["rounds"] = out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds-images", type=int, default=32, help="images of the exhaustive-vs-early shard (0: skip)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights from a bench
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    res = BenchResult("gpu", "GPU figures (ultraedit profile)")
    m = machine()
    print(machine_line(m))
    try:
        import torch

        if not torch.cuda.is_available():
            res.skipped.append("no CUDA GPU visible to torch: candidate pairs/s and metric pairs/s need one")
    except Exception as exc:  # noqa: BLE001
        res.skipped.append(f"torch unavailable: {exc}")
    if not res.skipped:
        from ultraedit_dagster.core.profiles import get_profile

        profile = get_profile("ultraedit")
        benches = [(bench_editor, {"n": args.pairs, "batch": args.batch}), (bench_scorer, {"n": args.pairs})]
        if args.rounds_images:
            benches.append((bench_rounds, {"images": args.rounds_images}))
        for fn, kwargs in benches:
            try:
                fn(res, profile, **kwargs)
            except Exception as exc:  # noqa: BLE001
                res.skipped.append(f"{fn.__name__}: {type(exc).__name__}: {str(exc)[:300]}")
                res.details.setdefault("errors", []).append(traceback.format_exc()[-2000:])
    out = res.to_json()
    out["machine"] = m
    if res.figures:  # a machine without a GPU does not overwrite figures from one that had it
        write_json(RESULTS_DIR / "gpu.json", out)
    print_result(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
