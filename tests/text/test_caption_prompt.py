"""Issue 17, defect 8: the BLIP descriptive caption carries no prompt text."""

import pytest

from ultraedit_dagster.models.captioner import CaptionSettings, strip_prompt


@pytest.mark.parametrize(
    "decoded, expected",
    [
        ("a detailed photo of sky dark clouds", "sky dark clouds"),
        ("A Detailed Photo Of: a red car on a street", "a red car on a street"),
        ("a detailed photo of", ""),
        ("a red car on a street", "a red car on a street"),  # no prompt in front: unchanged
        ("a detailed picture of a cat", "a detailed picture of a cat"),  # a different start is not cut
    ],
)
def test_strip_prompt(decoded, expected):
    assert strip_prompt(decoded, "a detailed photo of") == expected


def test_tiny_blip_descriptive_caption_has_no_prompt_text(tmp_path):
    from PIL import Image

    from ultraedit_dagster.models.captioner import build_tiny_captioner, generate_captions

    model, processor = build_tiny_captioner(seed=0)
    images = [Image.new("RGB", (64, 64), c) for c in ((200, 30, 30), (20, 40, 200))]
    settings = CaptionSettings(short_max_new_tokens=6, desc_max_new_tokens=8, desc_num_beams=1)
    for _, desc in generate_captions(model, processor, images, settings):
        assert not desc.lower().startswith("a detailed photo of"), desc
