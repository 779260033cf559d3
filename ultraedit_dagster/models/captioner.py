"""Image-to-text captioners from transformers (BLIP-style), loaded from a hub id or a local folder.

`tiny` builds a seeded random BLIP (a few hundred thousand parameters) with a small word-level tokenizer, so tests
run offline; its captions are random words, which is all a test of the plumbing needs. `save_tiny_captioner` writes
it to a folder so local-path loading is exercised too. Short and descriptive captions use separate settings: the
short one is unconditional greedy decoding with a small token budget; the descriptive one is conditioned on a text
prefix and decoded with beam search and a larger budget (DALL-E 3's short vs descriptive, docs/method.md §2).

No Dagster imports here.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from PIL import Image

TINY = "tiny"
TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a an the of on in with and next to near under over is are photo picture "
    "image detailed description dog cat man woman child bird car bus tree house table chair cup plate door window "
    "wall sky grass street field water boat flower red blue green yellow white black brown grey orange pink small "
    "large old young wooden glass metal sitting standing lying running holding looking smiling background front "
    "behind left right bright dark sunny cloudy day night room kitchen beach road mountain text sign there . ,"
).split()


@dataclass
class CaptionSettings:
    short_max_new_tokens: int = 20
    desc_max_new_tokens: int = 60
    desc_prompt: str = "a detailed photo of"
    desc_num_beams: int = 3
    extra: dict = field(default_factory=dict)


def build_tiny_captioner(seed: int = 0):
    """A seeded random BLIP captioner and its processor, built from small configs (no download)."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "vocab.txt")
        with open(vocab, "w", encoding="utf-8") as fh:
            fh.write("\n".join(TINY_VOCAB) + "\n")
        tokenizer = BertTokenizer(vocab, do_lower_case=True, model_max_length=77)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            vocab_size=len(TINY_VOCAB),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=128,
            encoder_hidden_size=32,
            bos_token_id=TINY_VOCAB.index("[DEC]"),
            pad_token_id=0,
            sep_token_id=TINY_VOCAB.index("[SEP]"),
            eos_token_id=TINY_VOCAB.index("[SEP]"),
        ),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    return model, processor


def save_tiny_captioner(path: str, seed: int = 0) -> str:
    model, processor = build_tiny_captioner(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def load_captioner(model_id: str, device: str = "cpu", dtype: str = "float32", seed: int = 0):
    """(model, processor) for `tiny`, a local folder, or a hub id (BLIP-style image-to-text)."""
    import torch
    from transformers import AutoProcessor, BlipForConditionalGeneration

    if model_id == TINY:
        model, processor = build_tiny_captioner(seed)
    else:
        processor = AutoProcessor.from_pretrained(model_id)
        model = BlipForConditionalGeneration.from_pretrained(model_id).eval()
    torch_dtype = torch.float16 if dtype in ("float16", "fp16") and device.startswith("cuda") else torch.float32
    return model.to(device=device, dtype=torch_dtype), processor


def generate_captions(
    model, processor, images: list[Image.Image], settings: CaptionSettings | None = None, device: str = "cpu"
) -> list[tuple[str, str]]:
    """(short, descriptive) caption per image."""
    import torch

    s = settings or CaptionSettings()
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        inputs = processor(images=images, return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        short_ids = model.generate(**inputs, max_new_tokens=s.short_max_new_tokens, do_sample=False, num_beams=1)
        prompted = processor(images=images, text=[s.desc_prompt] * len(images), return_tensors="pt").to(device)
        prompted["pixel_values"] = prompted["pixel_values"].to(dtype)
        desc_ids = model.generate(
            **prompted,
            max_new_tokens=s.desc_max_new_tokens,
            num_beams=s.desc_num_beams,
            do_sample=False,
            repetition_penalty=1.3,
        )
    shorts = processor.batch_decode(short_ids, skip_special_tokens=True)
    descs = processor.batch_decode(desc_ids, skip_special_tokens=True)
    # BLIP returns the text prefix it was conditioned on in front of the caption: the caption is what follows it
    return [(_tidy(a), _tidy(strip_prompt(b, s.desc_prompt))) for a, b in zip(shorts, descs, strict=True)]


def strip_prompt(text: str, prompt: str) -> str:
    """`text` without the conditioning `prompt` in front ("a detailed photo of sky dark" -> "sky dark"), compared
    word by word, case- and punctuation-insensitively (the tokenizer lower-cases and re-spaces the prompt)."""
    if not prompt.strip():
        return text.strip()

    def norm(word: str) -> str:
        return "".join(ch for ch in word.lower() if ch.isalnum())

    want = [norm(w) for w in prompt.split() if norm(w)]
    words = text.split()
    i = j = 0
    while i < len(words) and j < len(want):
        w = norm(words[i])
        if not w:  # a lone punctuation token
            i += 1
            continue
        if w != want[j]:
            return text.strip()  # the prompt is not there: nothing to strip
        i, j = i + 1, j + 1
    if j < len(want):
        return text.strip()
    return " ".join(words[i:]).lstrip(" ,:;-").strip()


def _tidy(text: str) -> str:
    t = " ".join(text.replace(" .", ".").replace(" ,", ",").split()).strip()
    return (t[:1].upper() + t[1:]) if t else t
