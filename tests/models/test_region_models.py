"""GroundingDINO and SAM code paths with tiny models: shapes, dtypes, thresholds, save/load through the real paths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ultraedit_dagster.models import grounder as gmod
from ultraedit_dagster.models import segmenter as smod


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((96, 128, 3), 200, np.uint8)
    img[20:70, 30:90] = (rng.random((50, 60, 3)) * 255).astype(np.uint8)
    return img


@pytest.fixture(scope="module")
def tiny_grounder():
    return gmod.load_grounder("tiny", seed=0)


def test_tiny_wordpiece_vocab_tokenizes_without_unknowns():
    from transformers import BertTokenizer

    vocab = gmod.tiny_wordpiece_vocab(["dog", "red door"])
    tok = BertTokenizer(vocab=vocab)
    ids = tok("a red door. zebrafish.")["input_ids"]
    assert vocab["[UNK]"] not in ids
    assert vocab["door"] in ids and vocab["[CLS]"] == ids[0] and vocab["[SEP]"] == ids[-1]


def test_grounder_shapes_dtypes_and_thresholds(tiny_grounder, image):
    pil = Image.fromarray(image)
    texts = ["dog.", "red door. cat."]
    dets = tiny_grounder.detect([pil, pil], texts, box_threshold=0.30, text_threshold=0.25)
    assert len(dets) == 2
    # reproduce the raw model scores to prove the box threshold is the one applied
    proc, model = tiny_grounder.processor, tiny_grounder.model
    inputs = proc(images=[pil, pil], text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        raw = torch.sigmoid(model(**inputs).logits).max(-1).values  # (2, queries)
    for i, det in enumerate(dets):
        assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
        assert det.scores.dtype == np.float32 and len(det.labels) == len(det)
        assert len(det) == int((raw[i] > 0.30).sum())
        assert np.all(det.scores > 0.30) and np.all(np.diff(det.scores) <= 0)  # best first
        assert np.all(det.boxes[:, [0, 2]] <= 128) and np.all(det.boxes[:, [1, 3]] <= 96) and np.all(det.boxes >= 0)
        assert all("[SEP]" not in lab for lab in det.labels)
    # a stricter threshold keeps exactly the boxes above it; max_boxes keeps the best ones
    cut = float(np.median(raw[0].numpy()))
    strict = tiny_grounder.detect([pil], ["dog."], box_threshold=cut)[0]
    assert len(strict) == int((raw[0] > cut).sum()) and np.all(strict.scores > cut)
    top2 = tiny_grounder.detect([pil], ["dog."], box_threshold=0.0, max_boxes=2)[0]
    assert len(top2) == 2 and np.allclose(top2.scores, np.sort(raw[0].numpy())[::-1][:2], atol=1e-5)
    assert len(tiny_grounder.detect([pil], ["dog."], box_threshold=1.0)[0]) == 0
    with pytest.raises(ValueError):
        tiny_grounder.detect([pil], ["a.", "b."])


def test_grounder_save_pretrained_then_from_pretrained(tiny_grounder, image, tmp_path):
    tiny_grounder.model.save_pretrained(tmp_path)
    tiny_grounder.processor.save_pretrained(tmp_path)
    loaded = gmod.load_grounder(str(tmp_path))
    assert loaded.model_id == str(tmp_path)
    pil = Image.fromarray(image)
    a = tiny_grounder.detect([pil], ["red door."], box_threshold=0.0)[0]
    b = loaded.detect([pil], ["red door."], box_threshold=0.0)[0]
    assert np.allclose(a.scores, b.scores, atol=1e-5) and np.allclose(a.boxes, b.boxes, atol=1e-3)
    assert a.labels == b.labels


@pytest.fixture(scope="module")
def tiny_segmenter():
    return smod.load_segmenter("tiny", seed=0)


def test_sam_tiny_uses_segment_anything_classes_and_specs_match_the_library():
    import importlib

    lib = importlib.import_module("segment_anything.build_sam")  # the module (the package attribute is a function)
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    sam = smod.build_sam("tiny", seed=0)
    assert isinstance(sam, Sam) and isinstance(sam.image_encoder, ImageEncoderViT)
    assert isinstance(sam.prompt_encoder, PromptEncoder) and isinstance(sam.mask_decoder, MaskDecoder)
    assert isinstance(sam.mask_decoder.transformer, TwoWayTransformer)
    assert sum(p.numel() for p in sam.parameters()) < 200_000
    # the real specs are those of segment_anything's own builders (checked on their source, nothing is built)
    import inspect

    src = inspect.getsource(lib)
    for spec in (smod.SAM_SPECS["vit_h"], smod.SAM_SPECS["vit_l"], smod.SAM_SPECS["vit_b"]):
        assert f"encoder_embed_dim={spec.encoder_embed_dim}" in src
        assert f"encoder_global_attn_indexes={list(spec.encoder_global_attn_indexes)}" in src
    with pytest.raises(ValueError):
        smod.build_sam("vit_x")


def test_sam_segment_all_boxes_at_once_merged_by_max(tiny_segmenter, image):
    seg = tiny_segmenter
    boxes = [[10, 10, 60, 50], [70, 40, 120, 90]]
    merged = seg.segment(image, boxes)
    assert merged.dtype == bool and merged.shape == image.shape[:2]
    # the merged mask is the max of the per-box single masks from one batched predict_torch call
    seg.predictor.set_image(image)
    t = seg.predictor.transform.apply_boxes_torch(torch.tensor(boxes, dtype=torch.float32), image.shape[:2])
    with torch.no_grad():
        masks, _, _ = seg.predictor.predict_torch(None, None, boxes=t, multimask_output=False)
    assert masks.shape == (2, 1, 96, 128)
    assert np.array_equal(merged, masks.max(0).values[0].numpy())
    assert np.array_equal(merged, masks[0, 0].numpy() | masks[1, 0].numpy())
    assert not seg.segment(image, []).any()
    with pytest.raises(ValueError):
        seg.segment(image.astype(np.float32), boxes)


def test_sam_checkpoint_save_and_load_through_the_builder(tiny_segmenter, image, tmp_path):
    ckpt = tmp_path / "sam_tiny.pth"
    torch.save(tiny_segmenter.sam.state_dict(), ckpt)
    loaded = smod.load_segmenter("tiny", str(ckpt), seed=123)  # a different seed: the weights must come from the file
    assert "sam_tiny.pth" in loaded.model_id
    for (k, a), (_, b) in zip(tiny_segmenter.sam.state_dict().items(), loaded.sam.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    boxes = [[10, 10, 60, 50]]
    assert np.array_equal(tiny_segmenter.segment(image, boxes), loaded.segment(image, boxes))
    # weights only: a pickled object that is not a tensor state dict is refused
    evil = tmp_path / "evil.pth"
    torch.save({"model": object()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        smod.build_sam("tiny", str(evil))
    # a checkpoint of another architecture does not load silently
    other = tmp_path / "other.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, other)
    with pytest.raises(RuntimeError):
        smod.build_sam("tiny", str(other))
