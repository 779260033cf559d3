"""Per-candidate parameters, generation requests and mask loading: the torch-free part of editing.generation.

The row-building modules (editing.rows, editing.rounds) import these while the Dagster definitions load, which must
not import torch; editing.generation (the torch pipeline) re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ultraedit_dagster.core.ids import rng_for, seed_for

FREE_FORM = "free_form"
REGION = "region"

# Recipes (docs/method.md §12): "ultraedit" (img2img from the real image, region loop) and "ip2p" (InstructPix2Pix's
# text-to-image pairs, the baseline). A recipe's version changes whenever its defaults change, so rows made under other
# defaults stay distinguishable in the data; `recipe_options` on every edit_candidates row spells the choices out.
RECIPES = ("ultraedit", "ip2p")
RECIPE_VERSIONS = {"ultraedit": "2", "ip2p": "1"}
MASKED_STEP_ORDERS = ("end", "released")
SOFT_MASK_DRAWS = ("candidate", "triplet")


def recipe_version(recipe: str) -> str:
    """`<recipe>-v<n>`, the version recorded on every edit_candidates / metric_scores row."""
    if recipe not in RECIPE_VERSIONS:
        raise ValueError(f"unknown recipe {recipe!r}: one of {', '.join(RECIPES)}")
    return f"{recipe}-v{RECIPE_VERSIONS[recipe]}"


def recipe_options_text(options: dict) -> str:
    """The generator choices of a row as one stable `key=value;...` string (sorted keys)."""
    return ";".join(f"{k}={options[k]}" for k in sorted(options))


# -- per-candidate parameters ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateParams:
    seed: int
    steps: int
    strength: float
    guidance: float
    p: float


def _checked(steps: int, strength: float) -> None:
    if int(steps * strength) < 1:
        raise ValueError(f"num_inference_steps x strength = {steps} x {strength} < 1: no denoising step would run")


def draw_params(global_seed: int, candidate_uid: str, mode: str, settings) -> CandidateParams:
    """Parameters of one candidate, drawn from (global seed, candidate uid) only.

    `settings` is the profile's FreeFormGen (steps from steps_choices, guidance ~ U(guidance_range)) or RegionGen
    (steps from steps_choices, guidance from guidance_choices); p ~ U(p_range) for both.
    """
    rng = rng_for(global_seed, candidate_uid, "edit_params")
    steps = int(rng.choice(list(settings.steps_choices)))
    if mode == FREE_FORM:
        lo, hi = settings.guidance_range
        guidance = float(rng.uniform(lo, hi))
    else:
        guidance = float(rng.choice(list(settings.guidance_choices)))
    p_lo, p_hi = settings.p_range
    p = float(rng.uniform(p_lo, p_hi))
    strength = float(settings.strength)
    _checked(steps, strength)
    seed = seed_for(global_seed, candidate_uid, "noise") & ((1 << 62) - 1)
    return CandidateParams(seed=seed, steps=steps, strength=strength, guidance=guidance, p=p)


# -- requests and results --------------------------------------------------------------------------------------------


@dataclass
class PairRequest:
    """One candidate: an image (RGB, the working size), two captions, parameters; a soft mask for region mode."""

    uid: str
    mode: str
    image: Image.Image
    source_caption: str
    target_caption: str
    params: CandidateParams
    mask: np.ndarray | None = None  # float32 [H, W] in [0, 1] (region mode)
    image_key: str = ""  # requests with equal keys share one VAE encoding (e.g. the image uid)


def load_mask(png: Image.Image, size: int) -> np.ndarray:
    """A soft mask PNG ('L', v stored as round(v*255)) as float32 [size, size] in [0, 1]."""
    m = png.convert("L")
    if m.size != (size, size):
        m = m.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(m, dtype=np.float32) / 255.0
