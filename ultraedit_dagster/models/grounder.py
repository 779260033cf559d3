"""GroundingDINO through transformers: text phrase -> boxes (docs/method.md §4: box threshold 0.30, text 0.25).

`load_grounder(model)` takes a hub id or a local folder written by `save_pretrained` (the processor is saved beside
the model), or "tiny": a seeded random GroundingDINO built from a small config (Swin backbone, 1-layer BERT text
tower) with a WordPiece vocabulary built in code (`tiny_wordpiece_vocab`), so tests and the `tiny` profile need no
hub. No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

DEFAULT_BOX_THRESHOLD = 0.30
DEFAULT_TEXT_THRESHOLD = 0.25
TINY_ID = "tiny"
TINY_IMAGE_SIZE = 128
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Detection:
    """Boxes (xyxy pixels in the input image), their scores and matched phrases, best first."""

    boxes: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32
    labels: list[str]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class Grounder:
    model: torch.nn.Module
    processor: object
    model_id: str
    device: str = "cpu"
    autocast_fp16: bool = False

    @torch.inference_mode()
    def detect(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        box_threshold: float = DEFAULT_BOX_THRESHOLD,
        text_threshold: float = DEFAULT_TEXT_THRESHOLD,
        max_boxes: int = 0,
    ) -> list[Detection]:
        """Detect `texts[i]` ("dog. cat.") in `images[i]`; keep boxes whose best token score > box_threshold.

        max_boxes > 0 keeps only the highest-scoring boxes (0 = all, as GroundingDINO does).
        """
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        if not images:
            return []
        images = [im.convert("RGB") for im in images]
        inputs = self.processor(images=list(images), text=list(texts), padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast_fp16 and self.device.startswith("cuda")):
            outputs = self.model(**inputs)
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        results = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=box_threshold,
            text_threshold=text_threshold,
            target_sizes=[(im.height, im.width) for im in images],
        )
        out: list[Detection] = []
        for res, im in zip(results, images, strict=True):
            scores = res["scores"].detach().float().cpu().numpy().astype(np.float32)
            boxes = res["boxes"].detach().float().cpu().numpy().astype(np.float32).reshape(-1, 4)
            labels = [_clean_label(t) for t in res["text_labels"]]
            order = np.argsort(-scores, kind="stable")
            if max_boxes > 0:
                order = order[:max_boxes]
            boxes = boxes[order]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, im.width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, im.height)
            out.append(Detection(boxes=boxes, scores=scores[order], labels=[labels[i] for i in order]))
        return out


def _clean_label(text: str) -> str:
    """A matched phrase without BERT's special tokens ("dog. [SEP]" -> "dog.")."""
    return " ".join(t for t in str(text).split() if t not in _SPECIAL).strip()


def tiny_wordpiece_vocab(words: Sequence[str] = ()) -> dict[str, int]:
    """A small WordPiece vocabulary: BERT's special tokens, punctuation, letters, '##'-letters and whole `words`.

    Any lowercase ASCII text tokenizes without [UNK] (words outside the list fall back to letter pieces).
    """
    tokens: list[str] = list(_SPECIAL) + list(".,;:!?'-()0123456789")
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens += list(letters) + [f"##{c}" for c in letters] + [f"##{d}" for d in "0123456789"]
    for w in words:
        for piece in str(w).lower().split():
            if piece.isalpha() and piece not in tokens:
                tokens.append(piece)
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_tiny_grounder_parts(seed: int = 0, words: Sequence[str] | None = None):
    """(model, processor) of a seeded random GroundingDINO small enough for CPU tests (~0.2 M parameters)."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    if words is None:
        from ultraedit_dagster.regions.object_selection import load_vocabulary

        words = load_vocabulary()
    vocab = tiny_wordpiece_vocab(words)
    tokenizer = BertTokenizer(vocab=vocab)
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE, "longest_edge": TINY_IMAGE_SIZE}
    )
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    backbone = SwinConfig(
        image_size=TINY_IMAGE_SIZE,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=2,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    # d_model must be a multiple of 32 (GroupNorm(32, d_model)); decoder_layers >= 2 (tied bbox heads)
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=20,
        max_text_len=32,
        encoder_n_points=1,
        decoder_n_points=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    return model.eval(), processor


def load_grounder(model: str = TINY_ID, device: str = "cpu", fp16: bool = False, seed: int = 0) -> Grounder:
    """A Grounder from "tiny", a hub id, or a local folder with the model and its processor (save_pretrained)."""
    if model == TINY_ID:
        net, processor = build_tiny_grounder_parts(seed=seed)
        model_id = f"tiny-grounding-dino(seed={seed})"
    else:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        processor = AutoProcessor.from_pretrained(model)
        net = GroundingDinoForObjectDetection.from_pretrained(model).eval()
        model_id = model
    net = net.to(device)
    return Grounder(model=net, processor=processor, model_id=model_id, device=device, autocast_fp16=fp16)
