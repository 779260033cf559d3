"""The captioner backends (tiny BLIP from a local folder, OpenAI-compatible vision server) and CLIP token counts."""

from __future__ import annotations

from tests.openai_test_server import OpenAITestServer, vision_reply
from tests.text.test_text_assets import SECRET, SHARD, _source_rows
from ultraedit_dagster.core.resources import LLMEndpoint
from ultraedit_dagster.text.prompts import DESCRIPTIVE_CAPTION_PROMPT, SHORT_CAPTION_PROMPT
from ultraedit_dagster.text.resources import CaptionerResource
from ultraedit_dagster.text.rows import png_data_url


def test_captioner_backends(tmp_path):
    from ultraedit_dagster.models.captioner import save_tiny_captioner
    from ultraedit_dagster.text.rows import caption_rows

    src = _source_rows(["A dog.", "A cat."]).to_pylist()
    # transformers: a tiny random BLIP saved to a folder and loaded from the local path
    path = save_tiny_captioner(str(tmp_path / "tiny-blip"))
    cap = CaptionerResource(backend="transformers", model=path, device="cpu", batch_size=2)
    rows = caption_rows(src, shard=SHARD, profile="tiny", captioner_id=cap.captioner_id, caption_fn=cap.caption)
    assert all(r["status"] == "ok" and r["caption_short"] and r["caption_desc"] for r in rows)
    assert rows[0]["caption_desc"] != rows[0]["caption_short"]
    assert rows[0]["captioner_id"] == f"transformers:{path}"
    # openai: vision messages with the image as a data URL, two prompts
    with OpenAITestServer() as server:
        cap = CaptionerResource(
            backend="openai",
            endpoint=LLMEndpoint(
                model="vision-test", base_url=server.base_url, api_key=SECRET, cache_dir=str(tmp_path / "cache")
            ),
        )
        rows = caption_rows(src, shard=SHARD, profile="tiny", captioner_id=cap.captioner_id, caption_fn=cap.caption)
        assert server.count("/chat/completions") == 4
        content = server.requests[0][1]["messages"][0]["content"]
        assert any(
            p.get("type") == "image_url" and p["image_url"]["url"].startswith("data:image/png;base64,") for p in content
        )
    url = png_data_url(src[0]["image"])  # requests run concurrently: rows[0]'s need not be the first
    assert rows[0]["caption_short"] == vision_reply(SHORT_CAPTION_PROMPT, [url])
    assert rows[0]["caption_desc"] == vision_reply(DESCRIPTIVE_CAPTION_PROMPT, [url])
    assert "background" not in rows[0]["caption_short"] and "background" in rows[0]["caption_desc"]


def test_clip_token_count_matches_open_clip():
    from open_clip.tokenizer import SimpleTokenizer

    from ultraedit_dagster.text.clip_tokens import clip_bpe

    ref = SimpleTokenizer()
    for text in [
        "A brown dog lying on a wooden porch next to a red door.",
        "Héllo wörld!! it's &amp; co-op, 3.5kg",
        "A very " + "long and winding description of a garden " * 20,
    ]:
        assert clip_bpe().count(text) == len(ref.encode(text))
