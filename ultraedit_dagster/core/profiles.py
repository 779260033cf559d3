"""Profiles: one name picks the whole model set, generation parameters and thresholds.

`tiny` (default here and in CI): small seeded random-weight models built from configs, the template LLM, the
passthrough captioner. Its metric thresholds are its own (random CLIP weights do not produce UltraEdit-like
similarities) and say so. `ultraedit`: the published models and thresholds (docs/method.md §3-5).

Selected by the `ULTRAEDIT_PROFILE` environment variable. Every output row records the profile that made it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

DEFAULT_PROFILE = "tiny"


@dataclass(frozen=True)
class Thresholds:
    """Minimums a candidate must reach to pass (docs/method.md §5)."""

    clip_sim_image: float
    clip_sim_dir: float
    clip_sim_source: float
    clip_sim_target: float
    dinov2_sim: float
    note: str = ""
    # L1 band (docs/method.md §5): below min_l1 the pair shows no visible change (a no-op); above max_l1 the edit
    # changed everything. Candidates outside the band are not selected (issue 14).
    min_l1: float = 0.002
    max_l1: float = 0.5


@dataclass(frozen=True)
class FreeFormGen:
    strength: float = 0.6
    steps_choices: tuple[int, ...] = (3, 5, 8)
    guidance_range: tuple[float, float] = (0.4, 0.8)
    p_range: tuple[float, float] = (0.1, 0.9)
    candidates_per_triplet: int = 30
    source_mode: str = "regenerated"  # or "real": keep the real photo as the source image


@dataclass(frozen=True)
class RegionGen:
    strength: float = 0.3
    steps_choices: tuple[int, ...] = (10, 14)
    guidance_choices: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)
    p_range: tuple[float, float] = (0.1, 0.9)
    candidates_per_triplet: int = 100
    soft_mask_probability: float = 0.5
    soft_mask_values: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8)
    # whether the band is used, and its value, drawn per candidate (the released code draws them per pipeline call)
    # or once per triplet (region_masks' soft mask); docs/method.md §12
    soft_mask_draw: str = "candidate"

    def __post_init__(self) -> None:
        if self.soft_mask_draw not in ("candidate", "triplet"):
            raise ValueError(f"soft_mask_draw {self.soft_mask_draw!r}: 'candidate' or 'triplet'")


@dataclass(frozen=True)
class GeneratorOptions:
    """Generator choices where our defaults and the released code could differ (docs/method.md §12). Each is
    recorded on every edit_candidates row (`recipe_options`).

    - `cross_fraction`: None = cross-attention refine for the candidate's own p of the steps (released UltraEdit);
      a number fixes it for every candidate (0.8 was our earlier default).
    - `control_uncond`: also share self-attention in the unconditional CFG branch (P2P and the ip2p recipe: no).
    - `sdxl_added_cond`: SDXL's pooled-text + time-id conditioning (ours: on, as SDXL-Turbo was trained; the
      released pipeline turned it off).
    - `region_masked_steps`: "end" (ours: the last step is masked, the outside ends on the real image) or "released"
      (`i % 2 == 1`: a 3-step run is plain, masked, plain).
    - `self_max_tokens`: self-attention injection on layers with at most this many query positions (None: all, as
      InstructPix2Pix's code does); `refine`: cross-attention refine on aligned tokens (ip2p: off).
    """

    cross_fraction: float | None = None
    control_uncond: bool = False
    sdxl_added_cond: bool = True
    region_masked_steps: str = "end"
    self_max_tokens: int | None = 256
    refine: bool = True

    def __post_init__(self) -> None:
        if self.region_masked_steps not in ("end", "released"):
            raise ValueError(f"region_masked_steps {self.region_masked_steps!r}: 'end' or 'released'")


@dataclass(frozen=True)
class RegionMasking:
    """Tagging, object selection, grounding and mask QC for region_masks (docs/method.md §4)."""

    tag_min_score: float = 0.02  # softmax probability over the vocabulary
    max_tags: int = 20
    max_objects: int = 2
    box_threshold: float = 0.30
    text_threshold: float = 0.25
    max_boxes: int = 0  # 0: every box above the threshold (GroundingDINO's behaviour)
    min_area: float = 0.01
    max_area: float = 0.90
    max_contours: int = 500
    fine_hull_max_contours: int = 150
    max_qc_failure_rate: float = 0.5  # asset check (warn): share of region rows failing mask QC
    # free-form instructions of local edits must name an object the image shows (tags, else grounding), otherwise
    # they fail `object_not_in_image` before generation; off in `tiny`, whose random tagger would drop a random
    # share and change the calibrated demo counts (docs/method.md §4)
    free_form_presence: bool = False


@dataclass(frozen=True)
class SelectionRule:
    free_form_top_k: int = 4
    region_top_k: int = 3
    region_min_passing: int = 3
    # quality check (warn): a shard's pass_all rate among scored candidates should reach this
    min_pass_rate: float = 0.02


@dataclass(frozen=True)
class Rounds:
    """How a triplet's candidates are generated and which images the lake keeps (docs/method.md §8).

    Candidates are generated `round_size` at a time per triplet, batched across the unfinished triplets of a shard,
    and scored in memory right after generation. `policy`: `exhaustive` generates all N (the published behaviour);
    `early` stops a triplet once it has as many passing candidates as its selection keeps (free-form top k, region
    max(top k, min passing)) and `extra_rounds` more rounds have run (they can still raise the kept candidates'
    clip_sim_dir), or when all N are generated. `max_active_triplets` bounds the triplets in flight (memory);
    `audit_fraction` of the other generated candidates keep their images too, chosen from the candidate uid."""

    round_size: int = 10
    policy: str = "early"  # or "exhaustive"
    extra_rounds: int = 1
    max_active_triplets: int = 64
    audit_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.policy not in ("exhaustive", "early"):
            raise ValueError(f"unknown stopping policy {self.policy!r}: 'exhaustive' or 'early'")
        if self.round_size < 1 or self.extra_rounds < 0 or self.max_active_triplets < 1:
            raise ValueError("round_size and max_active_triplets must be >= 1, extra_rounds >= 0")
        if not 0.0 <= self.audit_fraction <= 1.0:
            raise ValueError("audit_fraction must be within [0, 1]")


@dataclass(frozen=True)
class Profile:
    name: str
    # models: "tiny" builds seeded random models from small configs; otherwise hub ids or local paths
    captioner_backend: str
    instruction_backend: str
    object_selector_backend: str
    editor_model: str
    clip_model: str
    clip_pretrained: str
    dinov2_model: str
    dinov2_size: int
    grounder_model: str
    sam_model_type: str
    sam_checkpoint: str
    tagger_clip_model: str
    tagger_clip_pretrained: str
    image_size: int = 512
    triplets_per_caption: int = 3
    region_fraction: float = 0.3
    # text stage: transformers captioner id / local path ("tiny": seeded random BLIP); OpenAI-compatible LLM
    captioner_model: str = "tiny"
    llm_model: str = "gpt-4o-mini"
    llm_base_url: str = ""  # empty: the OpenAI API; else any OpenAI-compatible server (vLLM, llama.cpp)
    # the generation recipe (docs/method.md §12): "ultraedit" or "ip2p" (InstructPix2Pix's text-to-image baseline)
    recipe: str = "ultraedit"
    generator: GeneratorOptions = field(default_factory=GeneratorOptions)
    free_form: FreeFormGen = field(default_factory=FreeFormGen)
    region: RegionGen = field(default_factory=RegionGen)
    region_masking: RegionMasking = field(default_factory=RegionMasking)
    selection: SelectionRule = field(default_factory=SelectionRule)
    rounds: Rounds = field(default_factory=Rounds)
    free_form_thresholds: Thresholds = field(
        default_factory=lambda: Thresholds(0.75, 0.22, 0.2, 0.2, 0.4, "UltraEdit free-form (docs/method.md §5)")
    )
    region_thresholds: Thresholds = field(
        default_factory=lambda: Thresholds(0.70, 0.22, 0.2, 0.2, 0.4, "UltraEdit region (docs/method.md §5)")
    )


TINY = Profile(
    name="tiny",
    captioner_backend="passthrough",
    instruction_backend="template",
    object_selector_backend="rules",
    editor_model="tiny",
    clip_model="tiny",
    clip_pretrained="random",
    dinov2_model="tiny",
    dinov2_size=56,
    grounder_model="tiny",
    sam_model_type="tiny",
    sam_checkpoint="",
    tagger_clip_model="tiny",
    tagger_clip_pretrained="random",
    image_size=512,
    # The real workload's shape at demo scale (docs/method.md §11): enough candidates per triplet that the early
    # stopping policy matters (rounds of 2), thresholds that reject most candidates, the published region rule.
    free_form=FreeFormGen(candidates_per_triplet=6),
    region=RegionGen(candidates_per_triplet=8),
    rounds=Rounds(round_size=2, policy="early", extra_rounds=0),
    # random tagger / grounder / SAM: keep the top tags and the 2 best boxes; QC failures are expected to be common
    region_masking=RegionMasking(tag_min_score=0.0, max_tags=8, max_boxes=2, max_qc_failure_rate=1.0),
    # free-form keeps 2 (not 4) so that a triplet can fill its selection within 6 candidates; region as published
    selection=SelectionRule(free_form_top_k=2, region_top_k=3, region_min_passing=3),
    # Calibrated to the tiny models' own score distributions (docs/method.md §11): random-weight CLIP / DINOv2 put
    # clip_sim_image and dinov2_sim near 1 and spread clip_sim_dir over about [-0.4, 0.4] and the caption
    # similarities over [0.05, 0.47]; these minimums pass roughly 10-30% of candidates per mode. They exercise
    # rejection, selection, early stopping and region drops; they say nothing about quality.
    free_form_thresholds=Thresholds(
        clip_sim_image=0.999,
        clip_sim_dir=0.0,
        clip_sim_source=0.15,
        clip_sim_target=0.15,
        dinov2_sim=0.999,
        note="tiny profile: random weights, thresholds calibrated to pass ~10-30% (docs/method.md §11)",
    ),
    region_thresholds=Thresholds(
        clip_sim_image=0.999,
        clip_sim_dir=0.1,
        clip_sim_source=0.15,
        clip_sim_target=0.15,
        dinov2_sim=0.999,
        note="tiny profile: random weights, thresholds calibrated to pass ~10-30% (docs/method.md §11)",
    ),
)

ULTRAEDIT = Profile(
    name="ultraedit",
    # DALL-E 3-style recaptioning through the shared OpenAI-compatible vision endpoint (docs/method.md §2)
    captioner_backend="openai",
    instruction_backend="openai",
    object_selector_backend="openai",
    editor_model="stabilityai/sdxl-turbo",
    clip_model="ViT-L-14",
    clip_pretrained="openai",
    dinov2_model="facebook/dinov2-with-registers-large",
    dinov2_size=518,
    grounder_model="IDEA-Research/grounding-dino-base",
    sam_model_type="vit_h",
    sam_checkpoint="sam_vit_h_4b8939.pth",
    tagger_clip_model="ViT-L-14",
    tagger_clip_pretrained="openai",
    region_masking=RegionMasking(free_form_presence=True),
)

# InstructPix2Pix's recipe (docs/method.md §12), as its released generate_img_dataset.py runs it: SD 1.5 from pure
# noise, 100 Euler-ancestral steps, CFG ~ U(7.5, 15), p ~ U(0.1, 0.9), 100 samples per caption pair, self-attention
# shared on every layer (conditional branch only, see GeneratorOptions), no cross-attention refine; CLIP filters
# image >= 0.70, directional >= 0.2, both captions >= 0.2, no DINOv2 or L1 filter; the top 4 by directional
# similarity. No region mode: every triplet is a free-form text-to-image pair (region instructions are generated the
# same way, their mask unused).
IP2P_GEN = GeneratorOptions(self_max_tokens=None, refine=False, control_uncond=False)
IP2P_FREE_FORM = FreeFormGen(
    strength=1.0, steps_choices=(100,), guidance_range=(7.5, 15.0), p_range=(0.1, 0.9), candidates_per_triplet=100
)
IP2P_THRESHOLDS = Thresholds(
    clip_sim_image=0.70,
    clip_sim_dir=0.2,
    clip_sim_source=0.2,
    clip_sim_target=0.2,
    dinov2_sim=-1.0,
    note="InstructPix2Pix released code: no DINOv2 filter, no L1 band (docs/method.md §12)",
    min_l1=0.0,
    max_l1=1.0,
)
IP2P = dataclasses.replace(
    ULTRAEDIT,
    name="ip2p",
    recipe="ip2p",
    editor_model="runwayml/stable-diffusion-v1-5",
    region_fraction=0.0,
    generator=IP2P_GEN,
    free_form=IP2P_FREE_FORM,
    region=RegionGen(candidates_per_triplet=100),
    selection=SelectionRule(free_form_top_k=4, region_top_k=4, region_min_passing=1),
    rounds=Rounds(policy="exhaustive"),
    free_form_thresholds=IP2P_THRESHOLDS,
    region_thresholds=IP2P_THRESHOLDS,
)
# The tiny variant for tests and the demo: the tiny SD 1.5-shaped editor, 4 steps instead of 100, the tiny
# profile's candidate economy and its calibrated thresholds (random-weight scorers, docs/method.md §11) without the
# DINOv2 filter InstructPix2Pix does not have; region rows (if any) are selected like free-form ones.
_TINY_IP2P_THRESHOLDS = dataclasses.replace(
    TINY.free_form_thresholds,
    dinov2_sim=-1.0,
    note="tiny-ip2p: the tiny calibrated CLIP minimums, no DINOv2 filter (docs/method.md §11-12)",
)
TINY_IP2P = dataclasses.replace(
    TINY,
    name="tiny-ip2p",
    recipe="ip2p",
    editor_model="tiny-sd15",
    region_fraction=0.0,
    generator=IP2P_GEN,
    free_form=dataclasses.replace(IP2P_FREE_FORM, steps_choices=(4,), candidates_per_triplet=6),
    selection=SelectionRule(free_form_top_k=2, region_top_k=2, region_min_passing=1),
    free_form_thresholds=_TINY_IP2P_THRESHOLDS,
    region_thresholds=_TINY_IP2P_THRESHOLDS,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (TINY, ULTRAEDIT, IP2P, TINY_IP2P)}


# The profile a shard registered with another recipe runs under, given the active profile (docs/method.md §12).
RECIPE_VARIANTS: dict[tuple[str, str], str] = {
    ("tiny", "ip2p"): "tiny-ip2p",
    ("tiny-ip2p", "ultraedit"): "tiny",
    ("ultraedit", "ip2p"): "ip2p",
    ("ip2p", "ultraedit"): "ultraedit",
}


def profile_for_recipe(profile: Profile, recipe: str | None) -> Profile:
    """`profile` itself when `recipe` is None or its own; else its variant for that recipe (tiny <-> tiny-ip2p,
    ultraedit <-> ip2p: the same scale of models, the recipe's parameters, filters and selection)."""
    if recipe is None or recipe == profile.recipe:
        return profile
    try:
        return PROFILES[RECIPE_VARIANTS[(profile.name, recipe)]]
    except KeyError:
        raise ValueError(f"profile {profile.name!r} has no variant for recipe {recipe!r}") from None


def get_profile(name: str | None = None) -> Profile:
    """The profile named, or the one in ULTRAEDIT_PROFILE, or `tiny`."""
    name = name or os.environ.get("ULTRAEDIT_PROFILE") or DEFAULT_PROFILE
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
