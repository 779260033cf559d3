"""The editor: an SDXL-family (or SD 1.5) img2img pipeline with Prompt-to-Prompt control, loaded lazily."""

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ultraedit_dagster.core.devices import resolve_device, resolve_dtype
from ultraedit_dagster.core.profiles import Profile

# models.editor's TINY_EDITOR / TINY_SD15 / TINY_WORKING_SIZE, repeated here because models.editor imports torch and
# this module is imported while the definitions load (tests/ops/test_definitions_load.py checks they agree).
TINY_EDITORS = ("tiny", "tiny-sd15")
TINY_WORKING_SIZE = 256


class EditorResource(dg.ConfigurableResource):
    """Source/target pair generator (docs/method.md §3-4), resource key `editor`.

    `model`: `tiny` (seeded random SDXL-shaped models, the real CLIP tokenizer), `tiny-sd15`, or an SDXL-family /
    SD 1.5 checkpoint by hub id or local folder (`stabilityai/sdxl-turbo` in the `ultraedit` profile).
    `batch_size` counts candidate *pairs* per UNet call (2 rows each, 4 with CFG); on out-of-memory a batch is retried
    at half size, then its rows fail. `working_size` 0 generates at the input size (512); the tiny profile uses 256 to
    keep the CPU demo fast (outputs are resized back to the input size). P2P: self-attention injection on layers with
    at most `self_max_tokens` query positions (256 = 16x16 and smaller; null = all layers) for the first p of the
    steps, cross-attention refine on aligned tokens for the candidate's own p of the steps (`cross_fraction` null, the
    released code) or a fixed fraction. `recipe` (`ultraedit` / `ip2p`) and the generator choices come from the
    profile's `GeneratorOptions` (docs/method.md §12) and are recorded on every row (`recipe_options`).
    """

    model: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    working_size: int = 0
    seed: int = 0  # weights of the tiny models
    self_max_tokens: int | None = 256
    cross_fraction: float | None = None  # None: each candidate's own p (released UltraEdit); docs/method.md §12
    refine: bool = True
    # recipe and generator choices (core.profiles.GeneratorOptions, docs/method.md §12)
    recipe: str = "ultraedit"
    control_uncond: bool = False
    sdxl_added_cond: bool = True
    region_masked_steps: str = "end"
    blank_std: float = 0.5
    # torch CPU threads for this process when running on CPU (0: leave torch's default). The tiny profile uses 1:
    # its models are too small to gain from threads, and on a small shared machine (dagster runs one process per
    # step) extra threads oversubscribe the cores: measured 6.1 vs 1.1 candidates/s on the 2-core demo machine.
    cpu_threads: int = 0

    _generator: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "EditorResource":
        tiny = profile.editor_model in TINY_EDITORS
        g = profile.generator
        kwargs: dict[str, Any] = dict(
            model=profile.editor_model,
            working_size=TINY_WORKING_SIZE if tiny else 0,
            cpu_threads=1 if tiny else 0,
            recipe=profile.recipe,
            self_max_tokens=g.self_max_tokens,
            cross_fraction=g.cross_fraction,
            refine=g.refine,
            control_uncond=g.control_uncond,
            sdxl_added_cond=g.sdxl_added_cond,
            region_masked_steps=g.region_masked_steps,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def generator(self):
        """The process-wide PairGenerator (pipeline loaded on first use)."""
        if self._generator is None:
            import torch  # heavy: imported when the model loads, never while the definitions load

            from ultraedit_dagster.editing.generation import PairGenerator
            from ultraedit_dagster.editing.p2p import P2PConfig
            from ultraedit_dagster.models.editor import load_editor

            device = resolve_device(self.device)
            if device.startswith("cpu") and self.cpu_threads > 0:
                torch.set_num_threads(self.cpu_threads)
            pipe = load_editor(self.model, device=device, dtype=resolve_dtype(self.dtype, device), seed=self.seed)
            self._generator = PairGenerator(
                pipe,
                batch_size=self.batch_size,
                p2p=P2PConfig(
                    self_max_tokens=self.self_max_tokens,
                    cross_fraction=self.cross_fraction,
                    control_uncond=self.control_uncond,
                ),
                refine=self.refine,
                blank_std=self.blank_std,
                working_size=self.working_size,
                recipe=self.recipe,
                sdxl_added_cond=self.sdxl_added_cond,
                region_masked_steps=self.region_masked_steps,
            )
        return self._generator

    def recipe_options(self) -> dict[str, Any]:
        """The generator choices this editor runs with, as recorded on every edit_candidates row."""
        return {
            "cross_fraction": "p" if self.cross_fraction is None else self.cross_fraction,
            "control_uncond": self.control_uncond,
            "sdxl_added_cond": self.sdxl_added_cond,
            "region_masked_steps": self.region_masked_steps,
            "self_max_tokens": "all" if self.self_max_tokens is None else self.self_max_tokens,
            "refine": self.refine,
        }

    @property
    def editor_id(self) -> str:
        from ultraedit_dagster.models.editor import editor_id

        return editor_id(self.model, self.seed)
