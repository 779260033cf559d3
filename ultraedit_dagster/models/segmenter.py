"""SAM (segment-anything) prompted with all of an image's boxes at once; masks merged by max (docs/method.md §4).

`build_sam(model_type, checkpoint)` builds vit_h / vit_l / vit_b exactly like segment_anything's own builders, and
"tiny" (a small config of the same modelling classes: ImageEncoderViT, PromptEncoder, MaskDecoder,
TwoWayTransformer) for tests and the `tiny` profile. Checkpoints of every type go through the same path and are
loaded with `torch.load(weights_only=True)` (a pickled checkpoint cannot run code), then `load_state_dict(strict)`.
No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

TINY_TYPE = "tiny"


@dataclass(frozen=True)
class SamSpec:
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    window_size: int = 14
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    decoder_depth: int = 2
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


# The real configurations are those of segment_anything.build_sam; "tiny" keeps the architecture, shrinks everything.
SAM_SPECS: dict[str, SamSpec] = {
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    TINY_TYPE: SamSpec(
        encoder_embed_dim=16,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        image_size=64,
        patch_size=16,
        prompt_embed_dim=32,
        window_size=2,
        decoder_mlp_dim=32,
        decoder_heads=2,
        decoder_depth=1,
        iou_head_hidden_dim=16,
        mask_in_chans=4,
    ),
}


def build_sam(model_type: str, checkpoint: str | None = None, seed: int = 0):
    """A `segment_anything.modeling.Sam` of `model_type`, with weights from `checkpoint` (weights only) when given.

    Without a checkpoint the weights are random, seeded by `seed` (only sensible for "tiny").
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    try:
        spec = SAM_SPECS[model_type]
    except KeyError:
        raise ValueError(f"unknown SAM model_type {model_type!r}; known: {', '.join(SAM_SPECS)}") from None
    embedding_size = spec.image_size // spec.patch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=spec.encoder_depth,
                embed_dim=spec.encoder_embed_dim,
                img_size=spec.image_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=spec.encoder_num_heads,
                patch_size=spec.patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=spec.encoder_global_attn_indexes,
                window_size=spec.window_size,
                out_chans=spec.prompt_embed_dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=spec.prompt_embed_dim,
                image_embedding_size=(embedding_size, embedding_size),
                input_image_size=(spec.image_size, spec.image_size),
                mask_in_chans=spec.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=spec.decoder_depth,
                    embedding_dim=spec.prompt_embed_dim,
                    mlp_dim=spec.decoder_mlp_dim,
                    num_heads=spec.decoder_heads,
                ),
                transformer_dim=spec.prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=spec.iou_head_hidden_dim,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    if checkpoint:
        state_dict = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state_dict, dict) and "model" in state_dict and isinstance(state_dict["model"], dict):
            state_dict = state_dict["model"]
        sam.load_state_dict(state_dict, strict=True)
    return sam.eval()


@dataclass
class Segmenter:
    sam: torch.nn.Module
    model_id: str
    device: str = "cpu"
    autocast_fp16: bool = False

    def __post_init__(self) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(self.sam)

    @torch.inference_mode()
    def segment(self, image_rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """The fine mask (bool, image size): SAM prompted with all boxes at once, single-mask output, merged by max."""
        image_rgb = np.ascontiguousarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
        height, width = image_rgb.shape[:2]
        if len(boxes) == 0:
            return np.zeros((height, width), dtype=bool)
        use_amp = self.autocast_fp16 and self.device.startswith("cuda")
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            self.predictor.set_image(image_rgb, image_format="RGB")
            boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), device=self.predictor.device)
            transformed = self.predictor.transform.apply_boxes_torch(boxes_t, (height, width))
            masks, _, _ = self.predictor.predict_torch(
                point_coords=None, point_labels=None, boxes=transformed, multimask_output=False
            )
        self.predictor.reset_image()
        # masks: (n_boxes, 1, H, W) bool; merged by max over boxes
        return torch.max(masks, dim=0)[0][0].cpu().numpy().astype(bool)


def load_segmenter(
    model_type: str = TINY_TYPE, checkpoint: str | None = None, device: str = "cpu", fp16: bool = False, seed: int = 0
) -> Segmenter:
    sam = build_sam(model_type, checkpoint or None, seed=seed).to(device)
    model_id = f"sam-{model_type}:{checkpoint}" if checkpoint else f"sam-{model_type}(random seed={seed})"
    return Segmenter(sam=sam, model_id=model_id, device=device, autocast_fp16=fp16)
