"""InstructPix2Pix's hygiene (issue 17): one triplet per source caption and per image URL when asked, across shards
too; near-duplicate instructions flagged against earlier shards, not only within one."""

import pyarrow as pa

from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.text.rows import (
    EDIT_INSTRUCTIONS_SCHEMA,
    PriorShards,
    WriterSettings,
    apply_hygiene,
    read_prior_shards,
)


def _row(uid, image_uid, source, instruction, status="ok"):
    row = {name: None for name in EDIT_INSTRUCTIONS_SCHEMA.names}
    row.update(
        instruction_uid=uid,
        image_uid=image_uid,
        source_caption=source,
        instruction=instruction,
        target_caption=source + " x",
        status=status,
        near_duplicate=False,
    )
    return row


def _shard_rows():
    return [
        _row("a1", "img-a", "A dog on a rug.", "replace the dog with a cat"),
        _row("a2", "img-a", "A dog on a rug.", "make the rug blue"),
        _row("b1", "img-b", "a dog on a rug", "make the dog smile"),  # same caption, other image
        _row("c1", "img-c", "A red car.", "paint the car green"),  # same URL as img-a
        _row("d1", "img-d", "A boat on a lake.", "turn the boat into a canoe"),
    ]


URIS = {"img-a": "http://x/1.jpg", "img-b": "http://x/2.jpg", "img-c": "http://x/1.jpg", "img-d": "http://x/4.jpg"}


def test_off_by_default_keeps_every_triplet():
    rows = _shard_rows()
    counts = apply_hygiene(rows, WriterSettings(), image_uris=URIS)
    assert all(r["status"] == "ok" for r in rows) and counts["duplicate_caption"] == counts["duplicate_url"] == 0


def test_one_triplet_per_caption_and_per_url():
    rows = _shard_rows()
    counts = apply_hygiene(rows, WriterSettings(one_per_caption=True, one_per_url=True), image_uris=URIS)
    status = {r["instruction_uid"]: (r["status"], r["error"]) for r in rows}
    assert status["a1"] == ("ok", None) and status["d1"] == ("ok", None)
    for uid in ("a2", "b1"):  # a second triplet of the same caption (case and punctuation normalised)
        assert status[uid] == ("failed", "duplicate: the source caption already has a triplet (one per caption)")
    assert status["c1"] == ("failed", "duplicate: the image URL already has a triplet (one per URL)")
    assert counts == {"duplicate_caption": 2, "duplicate_url": 1, "near_duplicate_cross_shard": 0}


def test_earlier_shards_win_and_near_duplicates_are_flagged_across_shards(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    earlier = [_row("e1", "img-e", "A boat on a lake.", "Turn the boat into a canoe!")]
    lake.write_table("edit_instructions", "m-00000", pa.Table.from_pylist(earlier, schema=EDIT_INSTRUCTIONS_SCHEMA))
    lake.write_table("source_images", "m-00000", pa.Table.from_pylist([{"uid": "img-e", "uri": "http://x/4.jpg"}]))
    # a later shard is not prior to this one
    later = [_row("z1", "img-z", "A red car.", "paint the car green")]
    lake.write_table("edit_instructions", "m-00002", pa.Table.from_pylist(later, schema=EDIT_INSTRUCTIONS_SCHEMA))

    prior = read_prior_shards(lake, "m-00001")
    assert prior.instructions == ["Turn the boat into a canoe!"] and prior.uris == {"http://x/4.jpg"}

    rows = _shard_rows()
    counts = apply_hygiene(rows, WriterSettings(), image_uris=URIS, prior=prior)
    flagged = {r["instruction_uid"] for r in rows if r["near_duplicate"]}
    assert flagged == {"d1"} and counts["near_duplicate_cross_shard"] == 1
    assert all(r["status"] == "ok" for r in rows)  # flagged, not dropped

    rows = _shard_rows()
    apply_hygiene(rows, WriterSettings(one_per_url=True, one_per_caption=True), image_uris=URIS, prior=prior)
    assert {r["instruction_uid"]: r["status"] for r in rows}["d1"] == "failed"  # its caption and URL came earlier


def test_empty_prior_matches_within_shard_flags():
    rows = [
        _row("a", "i1", "A dog.", "replace the dog with a cat"),
        _row("b", "i2", "A dog.", "Replace the dog with a cat."),
    ]
    apply_hygiene(rows, WriterSettings(), prior=PriorShards())
    assert [r["near_duplicate"] for r in rows] == [False, True]
