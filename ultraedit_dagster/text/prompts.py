"""Prompts: UltraEdit-style instruction expansion and DALL-E 3-style recaptioning.

The instruction prompt follows the structure UltraEdit describes (docs/method.md §1), in our own words: a short task
introduction; 50 instructions sampled from the seed pool; the task (suitable, detailed, accurate edits that differ
from the examples, the new caption amending only what the edit requires); the strict output format, one triplet per
line, no titles; the descriptive caption as context; the short caption to edit; the number of triplets wanted; 10
sampled full triplets; and `Response:`.

No Dagster imports here.
"""

from __future__ import annotations

import hashlib
import json

from ultraedit_dagster.text.seeds import InContextSample

SYSTEM_PROMPT = (
    "You write image-editing data. You answer with edit triplets only, one per line, in the exact format "
    "`original image caption; edit instruction; new image caption`, with no title, numbering or commentary."
)

CAPTION_LINE = "Caption to edit:"


def instruction_prompt(caption_short: str, caption_desc: str, sample: InContextSample, k: int = 3) -> str:
    """The user message asking for `k` triplets for one image."""
    instr = "\n".join(f"- {i}" for i in sample.instructions)
    examples = "\n".join(f"{e.source_caption}; {e.instruction}; {e.target_caption}" for e in sample.examples)
    context = caption_desc.strip() if caption_desc and caption_desc.strip() != caption_short.strip() else ""
    parts = [
        "We are building a dataset for instruction-based image editing. Each item pairs the caption of a real photo "
        "with an edit instruction and the caption of the photo after the edit.",
        "",
        "Here are examples of edit instructions people wrote:",
        instr,
        "",
        "Task: write edit instructions that suit the image described below. Make them detailed, accurate and "
        "visually feasible, and different from the examples above. Vary the kind of edit: adding, replacing or "
        "removing objects, changing an object's colour, material, pose or state, changing the weather, season or "
        "time of day, the background, or the artistic style of the whole image. For each instruction write the new "
        "caption of the edited image: copy the original caption and change only the words the edit requires.",
        "",
        "Output format, one triplet per line, nothing else (no titles, no numbering, no explanations):",
        "original image caption; edit instruction; new image caption",
        "Use the original caption exactly as given below as the first part of every line.",
        "",
    ]
    if context:
        parts += ["Detailed description of the image (context only, do not copy it):", context, ""]
    parts += [
        f"{CAPTION_LINE} {caption_short.strip()}",
        f"Produce {k} instances.",
        "",
        "Examples of complete lines:",
        examples,
        "",
        "Response:",
    ]
    return "\n".join(parts)


def instruction_messages(caption_short: str, caption_desc: str, sample: InContextSample, k: int = 3) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instruction_prompt(caption_short, caption_desc, sample, k)},
    ]


def messages_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


# -- recaptioning (DALL-E 3 definitions, docs/method.md §2) -----------------------------------------------------------

SHORT_CAPTION_PROMPT = (
    "Write a short caption for this image: one sentence that names only the main subject and what it is doing. "
    "Do not describe the background or style. At most 20 words. Answer with the caption only."
)
DESCRIPTIVE_CAPTION_PROMPT = (
    "Describe this image in detail in one paragraph: the main subject, its surroundings and the background, any text "
    "visible in the image (quoted exactly), the style of the image (photo, painting, illustration...), and the "
    "colours. Be factual; do not guess what is not visible. At most 120 words. Answer with the description only."
)


def vision_messages(prompt: str, image_data_url: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": image_data_url}},
            ],
        }
    ]
