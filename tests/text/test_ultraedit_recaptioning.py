"""The `ultraedit` profile recaptions (issue 17, docs/method.md §2): DALL-E 3-style short and descriptive captions from
the OpenAI-compatible vision endpoint, `caption_gt` kept beside them, the whole text stage built on them; an outage
is a retryable failed row, not a caption."""

import dagster as dg

from tests.openai_test_server import OpenAITestServer, vision_reply
from tests.text.test_text_assets import SECRET, SHARD, _instance, _source_rows
from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.core.resources import LLMEndpoint, PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.sources.rows import is_retryable_error, shards_with_retryable_rows
from ultraedit_dagster.text.assets import captions, edit_instructions, seed_triplets
from ultraedit_dagster.text.checks import asset_checks as text_checks
from ultraedit_dagster.text.prompts import DESCRIPTIVE_CAPTION_PROMPT, SHORT_CAPTION_PROMPT
from ultraedit_dagster.text.resources import CaptionerResource, InstructionWriterResource
from ultraedit_dagster.text.rows import png_data_url

GT = [
    "A dog on a porch.",
    "cheap red bike for sale!!",
    "IMG_2041.jpg",
    None,  # a failed source_images row
]


def _resources(tmp_path, server: OpenAITestServer, **endpoint) -> dict:
    profile = get_profile("ultraedit")
    llm = LLMEndpoint.from_profile(
        profile,
        model="vision-test",
        base_url=server.base_url,
        api_key=SECRET,
        cache_dir=str(tmp_path / "cache"),
        **endpoint,
    )
    return {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(profile_name="ultraedit"),
        "captioner": CaptionerResource.from_profile(profile, endpoint=llm),
        "instruction_writer": InstructionWriterResource.from_profile(profile, endpoint=llm),
    }


def _vision_requests(server: OpenAITestServer) -> list[tuple[str, str]]:
    """(prompt text, image URL) of every vision chat request the server received."""
    out = []
    for path, body in server.requests:
        if not path.endswith("/chat/completions"):
            continue
        for m in body["messages"]:
            if isinstance(m["content"], list):
                text = "".join(p.get("text", "") for p in m["content"] if p["type"] == "text")
                urls = [p["image_url"]["url"] for p in m["content"] if p["type"] == "image_url"]
                out += [(text, u) for u in urls]
    return out


def test_ultraedit_profile_recaptions_and_builds_triplets_on_the_recaptions(tmp_path):
    assert get_profile("ultraedit").captioner_backend == "openai"
    assert get_profile("tiny").captioner_backend == "passthrough"  # offline default, calibrated demo
    lake = Lake(str(tmp_path / "lake"))
    source = _source_rows(GT)
    lake.write_table("source_images", SHARD, source)
    images = {r["uid"]: r["image"] for r in source.to_pylist() if r["status"] == "ok"}
    with OpenAITestServer() as server:
        resources = _resources(tmp_path, server)
        with _instance() as inst:
            assert dg.materialize([seed_triplets], instance=inst, resources=resources).success
            res = dg.materialize(
                [captions, edit_instructions, *text_checks], partition_key=SHARD, instance=inst, resources=resources
            )
        assert res.success
        checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
        assert checks["captions_complete"] and checks["edit_instructions_valid"], checks
        vision = _vision_requests(server)
    # both DALL-E 3 prompts, each with the image itself, for every ok image (and none for the failed one)
    sent = {(prompt, url) for prompt, url in vision}
    assert len(vision) == 2 * len(images) == len(sent)
    for img in images.values():
        url = png_data_url(img)
        assert (SHORT_CAPTION_PROMPT, url) in sent and (DESCRIPTIVE_CAPTION_PROMPT, url) in sent
    for prompt in (SHORT_CAPTION_PROMPT, DESCRIPTIVE_CAPTION_PROMPT):
        assert "main subject" in prompt
    for word in ("surroundings", "background", "text", "style", "colours"):
        assert word in DESCRIPTIVE_CAPTION_PROMPT

    caps = {r["uid"]: r for r in lake.read_table("captions", SHARD).to_pylist()}
    assert [caps[u]["caption_gt"] for u in sorted(caps)] == [g or "" for g in GT]  # ground truth kept beside them
    for uid, img in images.items():
        row = caps[uid]
        url = png_data_url(img)
        assert row["status"] == "ok" and row["profile"] == "ultraedit"
        assert row["captioner_id"] == "openai:vision-test"
        assert row["caption_short"] == vision_reply(SHORT_CAPTION_PROMPT, [url]) != row["caption_gt"]
        assert row["caption_desc"] == vision_reply(DESCRIPTIVE_CAPTION_PROMPT, [url])
        assert len(row["caption_desc"]) > len(row["caption_short"])
    assert caps["img003"]["status"] == "failed" and caps["img003"]["error"].startswith("source_images: ")

    # the instruction writer edits the short recaption, with the descriptive one as context
    rows = lake.read_table("edit_instructions", SHARD).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 3 * len(images), [r["error"] for r in rows if r["status"] != "ok"]
    for r in ok:
        assert r["source_caption"] == caps[r["image_uid"]]["caption_short"]
        assert r["llm_id"] == "openai:vision-test" and r["profile"] == "ultraedit"
    instruction_prompts = [
        m["content"]
        for path, body in server.requests
        for m in body.get("messages", [])
        if path.endswith("/chat/completions") and isinstance(m["content"], str) and "Caption to edit:" in m["content"]
    ]
    assert len(instruction_prompts) == len(images)
    assert all(any(caps[u]["caption_desc"] in p for p in instruction_prompts) for u in images)


def test_ultraedit_recaption_outage_is_a_retryable_failed_row(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("source_images", SHARD, _source_rows(GT[:2]))
    with OpenAITestServer(default="500") as server:
        resources = _resources(tmp_path, server, max_retries=0)
        with _instance() as inst:
            res = dg.materialize([captions], partition_key=SHARD, instance=inst, resources=resources)
        assert res.success  # the shard materializes; its rows say what failed
        assert server.count("/chat/completions") >= 1
    rows = lake.read_table("captions", SHARD).to_pylist()
    assert [r["status"] for r in rows] == ["failed", "failed"]
    for r in rows:
        assert r["error"].startswith("captioner: ") and is_retryable_error(r["error"]), r["error"]
        assert r["caption_short"] is None and r["caption_desc"] is None  # nothing passed through in their place
        assert r["captioner_id"] == "openai:vision-test"
    assert shards_with_retryable_rows(lake, "captions") == [SHARD]
    # the endpoint back: a second run recaptions them (failures were never cached)
    with OpenAITestServer() as server:
        resources = _resources(tmp_path, server)
        with _instance() as inst:
            assert dg.materialize([captions], partition_key=SHARD, instance=inst, resources=resources).success
    assert {r["status"] for r in lake.read_table("captions", SHARD).to_pylist()} == {"ok"}
