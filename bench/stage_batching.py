"""Bench 2: per-stage throughput of the editor and the scorer at batch sizes 1 and 8 (tiny profile, this CPU).

Editor: free-form pairs from the demo images (512 px in, the tiny profile's 256 px working size) through
`EditorResource.generator().generate(...)`, with fixed steps / strength / guidance so every request can share a batch
(the generator groups requests by schedule) and a distinct seed per pair; one warm-up call first (model load, first
allocation). Scorer: the same number of distinct 512 px pairs through `ScorerResource.score(...)` in chunks of the
batch size, as the metric_scores asset calls it (one lake batch of `scorer.batch_size` rows per call), after a
warm-up. Throughput = pairs / seconds, median over the repeats; ratio = throughput at 8 / throughput at 1.
Target: the ratio is above 1 (batching pays).
"""

from __future__ import annotations

import time
import traceback

from .common import BenchResult, demo_rows, median, quick

BATCH_SIZES = (1, 8)


def _load_images(n: int, size: int = 512):
    """(PIL RGB size x size, caption) for n pairs, cycling over the demo images (prepared as source_images does)."""
    from PIL import Image

    from ultraedit_dagster.core.imaging import resize_center_crop, to_rgb

    rows = demo_rows()
    cache = {}
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        if r["image"] not in cache:
            cache[r["image"]] = resize_center_crop(to_rgb(Image.open(r["image"])), size)
        out.append((cache[r["image"]], r["caption"]))
    return out


def bench_editor(res: BenchResult, n_pairs: int, repeats: int) -> None:
    try:
        from ultraedit_dagster.core.profiles import get_profile
        from ultraedit_dagster.editing.generation import FREE_FORM, CandidateParams, PairRequest
        from ultraedit_dagster.editing.resources import EditorResource
    except Exception as exc:  # noqa: BLE001
        res.skipped.append(f"editor: resources/editor.py EditorResource not importable ({type(exc).__name__}: {exc})")
        return
    profile = get_profile("tiny")
    editor = EditorResource.from_profile(profile)
    t0 = time.perf_counter()
    gen = editor.generator()
    res.details["editor_load_seconds"] = time.perf_counter() - t0
    res.details["editor_id"] = editor.editor_id
    images = _load_images(n_pairs)
    steps = 5  # int(5 * 0.6) = 3 denoising steps run, the middle of the free-form choices {3, 5, 8}

    def requests(tag: str):
        return [
            PairRequest(
                uid=f"{tag}-{i}",
                mode=FREE_FORM,
                image=im,
                source_caption=cap,
                target_caption=cap.rstrip(".") + " with a small red ball next to it.",
                params=CandidateParams(
                    seed=1000 + i, steps=steps, strength=profile.free_form.strength, guidance=0.6, p=0.5
                ),
                image_key=f"img{i % 16}",
            )
            for i, (im, cap) in enumerate(images)
        ]

    for bs in BATCH_SIZES:  # warm-up at both batch sizes (first-call allocations and kernel selection per shape)
        gen.batch_size = bs
        gen.generate(requests(f"warm{bs}")[:bs])
    per_bs: dict[int, list[float]] = {}
    for rep in range(repeats):  # interleaved, so a burst of load from elsewhere hits both sizes alike
        for bs in BATCH_SIZES:
            gen.batch_size = bs
            reqs = requests(f"b{bs}r{rep}")
            t0 = time.perf_counter()
            out = gen.generate(reqs)
            dt = time.perf_counter() - t0
            failed = sum(1 for r in out if not r.ok)
            if failed:
                res.notes.append(f"editor batch {bs}: {failed}/{len(out)} pairs failed ({out[0].error})")
            per_bs.setdefault(bs, []).append(len(reqs) / dt)
    _report(
        res,
        "editor",
        "pairs/s",
        per_bs,
        n_pairs,
        repeats,
        f"tiny SDXL-shaped editor, {steps} steps x strength {profile.free_form.strength}, working size "
        f"{editor.working_size}, P2P on, CFG off",
    )


def bench_scorer(res: BenchResult, n_pairs: int, repeats: int) -> None:
    try:
        import numpy as np

        from ultraedit_dagster.core.profiles import get_profile
        from ultraedit_dagster.scoring.resources import ScorerResource
    except Exception as exc:  # noqa: BLE001
        res.skipped.append(f"scorer: resources/scorer.py ScorerResource not importable ({type(exc).__name__}: {exc})")
        return
    profile = get_profile("tiny")
    images = _load_images(n_pairs)
    rng = np.random.default_rng(0)
    per_bs: dict[int, list[float]] = {}
    t0 = time.perf_counter()
    scorers = {bs: ScorerResource.from_profile(profile, batch_size=bs) for bs in BATCH_SIZES}
    for s in scorers.values():  # warm-up (model load, first allocations)
        a = np.asarray(images[0][0])
        s.score([a], [a[::-1].copy()], ["a photo"], ["a photo of a cat"])
    res.details["scorer_load_seconds"] = time.perf_counter() - t0
    res.details["scorer_ids"] = {"clip": scorers[1].clip_model_id, "dinov2": scorers[1].dinov2_model_id}
    for rep in range(repeats):
        # fresh, distinct pixels each repeat: the scorer caches embeddings by image content within a call only,
        # but fresh arrays keep every repeat honest
        srcs = [
            np.clip(np.asarray(im, dtype=np.int16) + rng.integers(-3, 4, size=(1, 1, 3)), 0, 255).astype(np.uint8)
            for im, _ in images
        ]
        tgts = [
            np.clip(s.astype(np.int16) + rng.integers(-20, 21, size=s.shape, dtype=np.int16), 0, 255).astype(np.uint8)
            for s in srcs
        ]
        caps_s = [c for _, c in images]
        caps_t = [c.rstrip(".") + f" with a red ball (variant {rep})." for c in caps_s]
        for bs, scorer in scorers.items():
            t0 = time.perf_counter()
            for i in range(0, n_pairs, bs):
                scorer.score(srcs[i : i + bs], tgts[i : i + bs], caps_s[i : i + bs], caps_t[i : i + bs])
            per_bs.setdefault(bs, []).append(n_pairs / (time.perf_counter() - t0))
    _report(
        res,
        "scorer",
        "pairs/s",
        per_bs,
        n_pairs,
        repeats,
        f"tiny CLIP + tiny DINOv2 ({profile.dinov2_size} px) + SSIM/L1 at 512 px, one score() call per batch",
    )


def _report(res: BenchResult, stage: str, unit: str, per_bs: dict[int, list[float]], n: int, repeats: int, what: str):
    med = {bs: median(v) for bs, v in per_bs.items()}
    for bs in BATCH_SIZES:
        res.add(f"{stage} throughput, batch {bs}", med.get(bs), unit)
    ratio = (med[8] / med[1]) if med.get(1) and med.get(8) else None
    res.add(
        f"{stage} batching ratio (batch 8 / batch 1)",
        ratio,
        "x",
        "> 1 (batching pays)",
        None if ratio is None else ratio > 1.0,
    )
    res.details[stage] = {
        "what": what,
        "pairs_per_run": n,
        "repeats": repeats,
        "runs_pairs_per_s": {str(k): v for k, v in per_bs.items()},
    }


def run(context: dict | None = None) -> BenchResult:
    q = quick()
    res = BenchResult("stage_batching", "Per-stage throughput at batch sizes 1 and 8 (editor, scorer)", quick=q)
    n_editor, n_scorer, repeats = (8, 16, 1) if q else (16, 32, 3)
    for fn, n in ((bench_editor, n_editor), (bench_scorer, n_scorer)):
        try:
            fn(res, n, repeats)
        except Exception as exc:  # noqa: BLE001 - one stage failing leaves the other's figures
            res.notes.append(f"{fn.__name__} failed: {type(exc).__name__}: {exc}")
            res.details.setdefault("errors", []).append(traceback.format_exc()[-3000:])
    if repeats < 3:
        res.notes.append(f"{repeats} repeat(s) per batch size (quick run)")
    return res


if __name__ == "__main__":
    from .common import print_result

    print_result(run())
