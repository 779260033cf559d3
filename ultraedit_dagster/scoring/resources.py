"""The scorer: CLIP (open_clip) + DINOv2 (transformers) + SSIM / L1 (torch), loaded lazily once per process."""

import hashlib
from collections.abc import Sequence
from typing import Any

import dagster as dg
import numpy as np
from pydantic import PrivateAttr

from ultraedit_dagster.core.devices import resolve_device, resolve_dtype
from ultraedit_dagster.core.profiles import Profile


class ScorerResource(dg.ConfigurableResource):
    """Scores edit pairs (docs/method.md §5). `clip_model` / `clip_pretrained`: an open_clip name and a pretrained tag
    or checkpoint file (`tiny` / `random` builds a seeded random model); `dinov2_model`: a hub id, a local
    `save_pretrained` folder, or `tiny`; `dinov2_size`: DINOv2 input size (518 for UltraEdit).

    Every image's CLIP and DINOv2 embeddings are computed once (keyed by the hash of its bytes) and reused for all
    the metrics that need them; every caption's CLIP text embedding likewise."""

    clip_model: str = "tiny"
    clip_pretrained: str = "random"
    dinov2_model: str = "tiny"
    dinov2_size: int = 56
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 32
    seed: int = 0

    _clip: Any = PrivateAttr(default=None)
    _dino: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "ScorerResource":
        return cls(
            clip_model=profile.clip_model,
            clip_pretrained=profile.clip_pretrained,
            dinov2_model=profile.dinov2_model,
            dinov2_size=profile.dinov2_size,
            **overrides,
        )

    # -- ids -------------------------------------------------------------------------------------------------

    @property
    def clip_model_id(self) -> str:
        from ultraedit_dagster.models.clip import clip_model_id

        return clip_model_id(self.clip_model, self.clip_pretrained)

    @property
    def dinov2_model_id(self) -> str:
        from ultraedit_dagster.models.dinov2 import dinov2_model_id

        return dinov2_model_id(self.dinov2_model)

    def input_sizes(self, image_size: int | None = None) -> str:
        from ultraedit_dagster.models.clip import model_input_size

        clip_size = model_input_size(self._load_clip()[0])[0]
        ssim_part = f",ssim={image_size}" if image_size else ",ssim=native"
        return f"clip={clip_size},dinov2={self.dinov2_size}{ssim_part}"

    # -- lazy models -----------------------------------------------------------------------------------------

    def _device(self) -> str:
        return resolve_device(self.device)

    def _load_clip(self) -> tuple[Any, Any, Any]:
        if self._clip is None:
            from ultraedit_dagster.models.clip import load_clip

            device = self._device()
            self._clip = load_clip(
                self.clip_model, self.clip_pretrained, device, resolve_dtype(self.dtype, device), seed=self.seed
            )
        return self._clip

    def _load_dino(self) -> Any:
        if self._dino is None:
            from ultraedit_dagster.models.dinov2 import load_dinov2

            device = self._device()
            self._dino = load_dinov2(
                self.dinov2_model,
                device,
                resolve_dtype(self.dtype, device),
                seed=self.seed,
                image_size=self.dinov2_size,
            )
        return self._dino

    # -- scoring ---------------------------------------------------------------------------------------------

    def score(
        self,
        source_images: Sequence[np.ndarray],
        target_images: Sequence[np.ndarray],
        source_captions: Sequence[str],
        target_captions: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """Metrics for N pairs of HxWx3 uint8 arrays (each pair the same size): the columns of docs/method.md §5
        plus `l1`, as float64 arrays of length N."""
        # torch and the models are imported here, never while the definitions load
        import torch

        from ultraedit_dagster.models import clip as clip_mod
        from ultraedit_dagster.models import dinov2 as dino_mod
        from ultraedit_dagster.scoring.metrics import clip_similarities, cosine, l1, ssim

        n = len(source_images)
        if not (n == len(target_images) == len(source_captions) == len(target_captions)):
            raise ValueError("score() needs equally long inputs")
        if n == 0:
            return {
                k: np.zeros(0)
                for k in (
                    "clip_sim_source",
                    "clip_sim_target",
                    "clip_sim_dir",
                    "clip_sim_image",
                    "dinov2_sim",
                    "ssim",
                    "l1",
                )
            }
        model, _, tokenizer = self._load_clip()
        dino = self._load_dino()

        # unique images (by content) -> one embedding each
        keys: list[str] = []
        unique: dict[str, np.ndarray] = {}
        for im in list(source_images) + list(target_images):
            arr = np.ascontiguousarray(im)
            key = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()
            keys.append(key)
            unique.setdefault(key, arr)
        by_size: dict[tuple, list[str]] = {}
        for k, arr in unique.items():
            by_size.setdefault(arr.shape, []).append(k)
        clip_emb: dict[str, torch.Tensor] = {}
        dino_emb: dict[str, torch.Tensor] = {}
        for group in by_size.values():
            arrays = [unique[k] for k in group]
            ce = clip_mod.encode_images(model, arrays, batch_size=self.batch_size)
            de = dino_mod.encode_images(dino, arrays, size=self.dinov2_size, batch_size=self.batch_size)
            for i, k in enumerate(group):
                clip_emb[k], dino_emb[k] = ce[i], de[i]
        texts = list(dict.fromkeys(list(source_captions) + list(target_captions)))
        te = clip_mod.encode_texts(model, tokenizer, texts, batch_size=max(self.batch_size, 64))
        text_emb = {t: te[i] for i, t in enumerate(texts)}

        src_keys, tgt_keys = keys[:n], keys[n:]
        img_s = torch.stack([clip_emb[k] for k in src_keys])
        img_t = torch.stack([clip_emb[k] for k in tgt_keys])
        txt_s = torch.stack([text_emb[t] for t in source_captions])
        txt_t = torch.stack([text_emb[t] for t in target_captions])
        out = {k: v.numpy() for k, v in clip_similarities(img_s, img_t, txt_s, txt_t).items()}
        out["dinov2_sim"] = cosine(
            torch.stack([dino_emb[k] for k in src_keys]), torch.stack([dino_emb[k] for k in tgt_keys])
        ).numpy()

        device = self._device()
        ssim_vals = np.empty(n)
        l1_vals = np.empty(n)
        for i in range(0, n, self.batch_size):  # pixel metrics, batched per equal size
            chunk = range(i, min(i + self.batch_size, n))
            shapes = {source_images[j].shape for j in chunk}
            for shape in shapes:
                idx = [j for j in chunk if source_images[j].shape == shape]
                a = torch.from_numpy(np.stack([source_images[j] for j in idx])).to(device)
                b = torch.from_numpy(np.stack([target_images[j] for j in idx])).to(device)
                ssim_vals[idx] = ssim(a, b).cpu().numpy()
                l1_vals[idx] = l1(a, b).cpu().numpy()
        out["ssim"] = ssim_vals
        out["l1"] = l1_vals
        return out
