"""The text-stage assets end to end: template and openai backends, checks, cache, determinism, captioners."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest
from PIL import Image

from tests.openai_test_server import OpenAITestServer
from ultraedit_dagster.core.imaging import encode_png
from ultraedit_dagster.core.resources import LLMEndpoint, PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.text.assets import captions, edit_instructions, seed_triplets
from ultraedit_dagster.text.checks import asset_checks as text_checks
from ultraedit_dagster.text.resources import CaptionerResource, InstructionWriterResource
from ultraedit_dagster.text.rows import CAPTIONS_SCHEMA, WriterSettings, build_prompt, fit_clip_tokens
from ultraedit_dagster.text.seeds import load_seeds

SHARD = "demo-00000"
SECRET = "sk-test-secret-never-stored"


def _instance():
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", [SHARD])
    return inst


def _source_rows(captions_gt: list[str | None]) -> pa.Table:
    rows = []
    for i, cap in enumerate(captions_gt):
        img = Image.new("RGB", (64, 64), (40 * i % 255, 90, 160))
        failed = cap is None
        rows.append(
            {
                "uid": f"img{i:03d}",
                "shard": SHARD,
                "image": None if failed else encode_png(img),
                "width": 64,
                "height": 64,
                "uri": f"file:///x/{i}.png",
                "caption_gt": cap or "",
                "source": "test",
                "license": "CC0",
                "status": "failed" if failed else "ok",
                "error": "decode: truncated file" if failed else None,
                "profile": "tiny",
            }
        )
    return pa.Table.from_pylist(rows)


def _caption_rows(caps: list[str | None]) -> pa.Table:
    rows = [
        {
            "uid": f"img{i:03d}",
            "shard": SHARD,
            "caption_gt": c,
            "caption_short": c,
            "caption_desc": c,
            "caption_short_truncated": False,
            "caption_short_clip_tokens": 10,
            "captioner_id": "passthrough",
            "status": "ok" if c else "failed",
            "error": None if c else "source_images: decode: truncated",
            "profile": "tiny",
        }
        for i, c in enumerate(caps)
    ]
    return pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA)


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_template_pipeline_end_to_end(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    demo = [
        "A brown dog lying on a wooden porch next to a red door.",
        "A red cup of espresso on a red saucer with a silver spoon on a wooden table.",
        "A white rocket standing on a launch pad between tall towers under a blue evening sky.",
        None,
    ]
    lake.write_table("source_images", SHARD, _source_rows(demo))
    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(),
        "captioner": CaptionerResource(),
        "instruction_writer": InstructionWriterResource(),
    }
    with _instance() as inst:
        assert dg.materialize([seed_triplets], instance=inst, resources=resources).success
        res = dg.materialize(
            [captions, edit_instructions, *text_checks], partition_key=SHARD, instance=inst, resources=resources
        )
        assert res.success
        assert _checks(res) == {
            "captions_complete": True,
            "edit_instructions_valid": True,
            "edit_instructions_failure_rates": True,
        }
    caps = lake.read_table("captions", SHARD).to_pylist()
    assert [c["status"] for c in caps] == ["ok", "ok", "ok", "failed"]
    assert caps[0]["caption_short"] == caps[0]["caption_desc"] == demo[0]
    assert caps[3]["error"].startswith("source_images: ")
    rows = lake.read_table("edit_instructions", SHARD).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 9 and len(rows) == 10
    assert [r for r in rows if r["status"] == "failed"][0]["error"].startswith("captions: ")
    assert all(r["llm_id"] == "template-v2" and r["mode"] in ("free_form", "region") for r in ok)
    assert len({r["instruction_uid"] for r in rows}) == len(rows)
    # re-running reproduces the shard exactly
    with _instance() as inst:
        assert dg.materialize([edit_instructions], partition_key=SHARD, instance=inst, resources=resources).success
    assert lake.read_table("edit_instructions", SHARD).to_pylist() == rows


def test_a_manifest_of_another_recipe_gets_that_recipes_triplets(tmp_path):
    """A shard of a manifest registered with the ip2p recipe is written under tiny-ip2p: no region triplets
    (InstructPix2Pix edits the whole image; a region row would reach the release without a mask) and its profile
    on every row; the default manifest of the same captions keeps the active profile's share of region edits."""
    import json

    from ultraedit_dagster.core.profiles import TINY, TINY_IP2P
    from ultraedit_dagster.sources.manifests import register_manifest

    lake = Lake(str(tmp_path / "lake"))
    manifest = tmp_path / "caps.jsonl"
    manifest.write_text(json.dumps({"image": str(tmp_path / "a.png"), "caption": "a dog"}) + "\n")
    register_manifest(lake, str(manifest), name="capsip", recipe="ip2p")
    register_manifest(lake, str(manifest), name="caps")
    demo = [
        "A brown dog lying on a wooden porch next to a red door.",
        "A red cup of espresso on a red saucer with a silver spoon on a wooden table.",
        "A white rocket standing on a launch pad between tall towers under a blue evening sky.",
        "A green bicycle leaning against a brick wall beside a blue bench.",
        "Two cats sleeping on a grey sofa under a yellow lamp.",
    ]
    resources = {
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "pipeline": PipelineResource(profile_name="tiny"),
        "captioner": CaptionerResource(),
        "instruction_writer": InstructionWriterResource.from_profile(TINY),
    }
    modes = {}
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("shards", ["capsip-00000", "caps-00000"])
    assert dg.materialize([seed_triplets], instance=inst, resources=resources).success
    for shard in ("capsip-00000", "caps-00000"):
        lake.write_table("source_images", shard, _source_rows(demo))
        run = dg.materialize([captions, edit_instructions], partition_key=shard, instance=inst, resources=resources)
        assert run.success
        rows = [r for r in lake.read_table("edit_instructions", shard).to_pylist() if r["status"] == "ok"]
        modes[shard] = {r["mode"] for r in rows}
        assert {r["profile"] for r in rows} == {TINY_IP2P.name if shard.startswith("capsip") else TINY.name}
    assert modes == {"capsip-00000": {"free_form"}, "caps-00000": {"free_form", "region"}}


def test_bad_seed_file_fails_the_asset(tmp_path, monkeypatch):
    bad = tmp_path / "seeds.tsv"
    bad.write_text("Add\tA dog.\tadd a cat\tA dog and a cat.\nTwist\tA.\tb\tC.\n")
    monkeypatch.setattr("ultraedit_dagster.text.seeds.default_seed_path", lambda: bad)
    with _instance() as inst:
        res = dg.materialize(
            [seed_triplets],
            instance=inst,
            raise_on_error=False,
            resources={"lake": LakeResource(root=str(tmp_path / "lake"))},
        )
    assert not res.success
    failure = res.get_step_failure_events()[0].event_specific_data.error
    assert "line 2" in str(failure.message) + str(failure.cause)


GOOD, R429, R500, MALFORMED, SLOW, TWO = (
    "A brown dog lying on a wooden porch next to a red door.",
    "A grey cat sleeping on a green sofa.",
    "A yellow bus parked on a quiet street.",
    "A white horse standing in a green field.",
    "A small boat on a calm lake.",
    "A tall tree in a snowy park.",
)


def test_openai_backend_end_to_end(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    caps = [GOOD, R429, R500, MALFORMED, SLOW, TWO, None]
    lake.write_table("captions", SHARD, _caption_rows(caps))
    with OpenAITestServer(slow_s=1.5) as server:
        for caption, script in (
            (R429, ["429"]),
            (R500, ["500"]),
            (MALFORMED, ["malformed"]),
            (SLOW, ["slow", "slow"]),
            (TWO, ["two"]),
        ):
            server.script(f"Caption to edit: {caption}", script)
        writer = InstructionWriterResource(
            backend="openai",
            max_request_failure_rate=0.5,
            endpoint=LLMEndpoint(
                model="test-model",
                base_url=server.base_url,
                api_key=SECRET,
                cache_dir=str(tmp_path / "cache"),
                timeout_s=0.7,
                max_retries=1,
                backoff_base_s=0.01,
                max_concurrency=3,
            ),
        )
        resources = {
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "pipeline": PipelineResource(),
            "instruction_writer": writer,
        }
        with _instance() as inst:
            assert dg.materialize([seed_triplets], instance=inst, resources=resources).success
            res = dg.materialize(
                [edit_instructions, *text_checks[1:]], partition_key=SHARD, instance=inst, resources=resources
            )
            assert res.success
            assert _checks(res) == {"edit_instructions_valid": True, "edit_instructions_failure_rates": True}
            meta = res.asset_materializations_for_node("edit_instructions")[0].metadata
            # good 1 + 429 2 + 500 2 + malformed 1 (not retried) + slow 2 (timeout, retried once) + two 1
            assert server.count("/chat/completions") == 9
            assert meta["requests_sent"].value == 9 and meta["retries"].value == 3
            rows = lake.read_table("edit_instructions", SHARD).to_pylist()
            by_image: dict[str, list[dict]] = {}
            for r in rows:
                by_image.setdefault(r["image_uid"], []).append(r)
            assert [len(by_image[f"img{i:03d}"]) for i in range(7)] == [3, 3, 3, 1, 1, 2, 1]
            assert all(r["status"] == "ok" for i in (0, 1, 2, 5) for r in by_image[f"img{i:03d}"])
            assert by_image["img003"][0]["error"].startswith("request failed: malformed response")
            # a timeout is a transport failure: marked retryable, so `backfill --failed` redoes the shard later
            assert by_image["img004"][0]["error"].startswith("request failed: retryable: timeout")
            assert not by_image["img003"][0]["error"].startswith("request failed: retryable")  # malformed: final
            assert meta["retryable"].value == 1
            assert by_image["img006"][0]["error"].startswith("captions: ")
            assert by_image["img005"][0]["parse_note"] == "2 of 3 triplets"
            good = by_image["img000"]
            assert [r["source_caption"] for r in good] == [GOOD] * 3
            assert good[0]["instruction"] == "add a small red ball next to it" and good[0]["edit_type"] == "Add"
            # token counts: the request's usage, split over its rows so that sums are exact
            body = next(b for p, b in server.requests if GOOD in b["messages"][1]["content"])
            assert sum(r["prompt_tokens"] for r in good) == len(body["messages"][1]["content"].split()) + len(
                body["messages"][0]["content"].split()
            )
            assert sum(r["completion_tokens"] for r in good) > 0
            assert meta["prompt_tokens"].value == sum(r["prompt_tokens"] for r in rows) > 0
            # the prompt recorded is the prompt that was built: same in-context samples every run
            seeds = load_seeds()
            from ultraedit_dagster.text.prompts import messages_hash

            assert good[0]["prompt_sha"] == messages_hash(
                build_prompt(
                    {"uid": "img000", "caption_short": GOOD, "caption_desc": GOOD}, seeds, 0, writer.settings()
                )
            )

            # second run: only what failed is re-sent (failures are never cached), and now succeeds
            server.reset_counts()
            assert dg.materialize([edit_instructions], partition_key=SHARD, instance=inst, resources=resources).success
            assert server.count("/chat/completions") == 2
            rows2 = lake.read_table("edit_instructions", SHARD).to_pylist()
            assert sum(r["status"] == "ok" for r in rows2) == 3 + 3 + 3 + 3 + 3 + 2
            # third run: everything is cached, zero requests, identical rows
            server.reset_counts()
            assert dg.materialize([edit_instructions], partition_key=SHARD, instance=inst, resources=resources).success
            assert server.count() == 0
            rows3 = lake.read_table("edit_instructions", SHARD).to_pylist()
            assert [(r["instruction_uid"], r["prompt_tokens"], r["mode"]) for r in rows3] == [
                (r["instruction_uid"], r["prompt_tokens"], r["mode"]) for r in rows2
            ]
            assert all(r["llm_cached"] for r in rows3 if r["status"] == "ok")
    # the key is never stored: not in the lake, not in the cache
    for path in list((tmp_path / "lake").rglob("*")) + list((tmp_path / "cache").rglob("*")):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_moderation(tmp_path):
    from ultraedit_dagster.text.rows import instruction_rows

    with OpenAITestServer() as server:
        writer = InstructionWriterResource(
            backend="openai",
            moderation=True,
            endpoint=LLMEndpoint(
                model="m", base_url=server.base_url, api_key=SECRET, cache_dir=str(tmp_path / "cache")
            ),
        )
        caps = _caption_rows(["A dog on a porch.", "A forbidden thing on a table."]).to_pylist()
        rows, stats = instruction_rows(
            caps,
            shard=SHARD,
            profile="tiny",
            seeds=load_seeds(),
            global_seed=0,
            settings=writer.settings(),
            client=writer.client(),
        )
        assert server.count("/moderations") == 2  # captions, then the first image's outputs
        assert server.count("/chat/completions") == 1
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    assert rows[-1]["error"].startswith("moderation: caption flagged") and stats.moderation_failed == 1


def test_short_caption_fits_77_clip_tokens():
    long = "A very " + "long and winding description of a garden " * 20
    text, truncated, n = fit_clip_tokens(long)
    assert truncated and n > 77
    from ultraedit_dagster.text.rows import clip_token_count

    assert clip_token_count(text) <= 77 and long.startswith(text)
    assert fit_clip_tokens("A dog.") == ("A dog.", False, 5)


def test_from_profile():
    from ultraedit_dagster.core.profiles import get_profile

    tiny = get_profile("tiny")
    assert InstructionWriterResource.from_profile(tiny).backend == "template"
    assert CaptionerResource.from_profile(tiny).captioner_id == "passthrough"
    w = InstructionWriterResource.from_profile(get_profile("ultraedit"))
    assert w.backend == "openai" and w.triplets_per_caption == 3
    with pytest.raises(ValueError):
        WriterSettings(backend="nope") and InstructionWriterResource(backend="nope").llm_id


def _range_caption_rows(shard: str, caps: list[str]) -> pa.Table:
    table = _caption_rows(caps).to_pylist()
    for i, r in enumerate(table):
        r.update(uid=f"{shard}-img{i:03d}", shard=shard)
    return pa.Table.from_pylist(table, schema=CAPTIONS_SCHEMA)


def test_llm_outage_rows_are_retryable_and_the_breaker_is_reset_per_shard(tmp_path):
    """Issue 15: transport failures of the LLM (5xx here, then the circuit breaker open) become failure rows marked
    retryable, and a backfill range's next shard starts with the breaker closed: the endpoint's outage during shard
    A does not fail shard B, whose requests succeed."""
    from ultraedit_dagster.sources.rows import is_retryable_error, shards_with_retryable_rows

    lake = Lake(str(tmp_path / "lake"))
    bad, good = "outage-00000", "outage-00001"
    bad_caps = [f"A red box number {i} on a wooden table." for i in range(10)]  # > the breaker's threshold of 8
    good_caps = ["A brown dog lying on a porch.", "A white cup on a saucer."]
    lake.write_table("captions", bad, _range_caption_rows(bad, bad_caps))
    lake.write_table("captions", good, _range_caption_rows(good, good_caps))
    with OpenAITestServer() as server:
        for caption in bad_caps:
            server.script(f"Caption to edit: {caption}", ["500"])
        writer = InstructionWriterResource(
            backend="openai",
            endpoint=LLMEndpoint(
                model="test-model",
                base_url=server.base_url,
                cache_dir=str(tmp_path / "cache"),
                max_retries=0,
                max_concurrency=1,
            ),
        )
        resources = {
            "lake": LakeResource(root=lake.root),
            "pipeline": PipelineResource(),
            "instruction_writer": writer,
        }
        job = dg.Definitions(
            assets=[seed_triplets, edit_instructions],
            jobs=[
                dg.define_asset_job(
                    "text_range", selection=["edit_instructions"], partitions_def=edit_instructions.partitions_def
                )
            ],
            resources=resources,
        ).resolve_job_def("text_range")
        with dg.DagsterInstance.ephemeral() as inst:
            inst.add_dynamic_partitions("shards", [bad, good])
            assert dg.materialize([seed_triplets], instance=inst, resources=resources).success
            tags = {"dagster/asset_partition_range_start": bad, "dagster/asset_partition_range_end": good}
            assert job.execute_in_process(instance=inst, tags=tags).success
        bad_rows = lake.read_table("edit_instructions", bad).to_pylist()
        good_rows = lake.read_table("edit_instructions", good).to_pylist()
        assert server.count("/chat/completions") == 8 + len(good_caps)  # the breaker kept the last 2 of A unsent
    assert [r["status"] for r in bad_rows] == ["failed"] * len(bad_caps)
    assert all(is_retryable_error(r["error"]) for r in bad_rows), [r["error"] for r in bad_rows]
    assert bad_rows[0]["error"].startswith("request failed: retryable: HTTP 500")
    assert bad_rows[-1]["error"].startswith("request failed: retryable: circuit open")
    assert {r["status"] for r in good_rows} == {"ok"} and len(good_rows) == 3 * len(good_caps)
    assert shards_with_retryable_rows(lake, "edit_instructions") == [bad]


@pytest.mark.parametrize(("behaviour", "retryable"), [("500", True), ("malformed", False)])
def test_captioner_marks_transport_failures_retryable(tmp_path, behaviour, retryable):
    from ultraedit_dagster.sources.rows import is_retryable_error
    from ultraedit_dagster.text.rows import caption_rows

    source = _source_rows(["A dog on a porch."]).to_pylist()
    with OpenAITestServer(default=behaviour) as server:
        captioner = CaptionerResource(
            backend="openai",
            endpoint=LLMEndpoint(
                model="vlm", base_url=server.base_url, cache_dir=str(tmp_path / "cache"), max_retries=0
            ),
        )
        captioner.start_shard()
        [row] = caption_rows(
            source, shard=SHARD, profile="x", captioner_id=captioner.captioner_id, caption_fn=captioner.caption
        )
    assert row["status"] == "failed" and row["error"].startswith("captioner: ")
    assert is_retryable_error(row["error"]) is retryable, row["error"]
