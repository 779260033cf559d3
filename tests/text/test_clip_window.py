"""Issue 17, defect 3: source and target captions are diffusion prompts and CLIP texts, so both fit 77 CLIP tokens;
a target over the window is cut when the edit stays inside it, rejected when the edit lies beyond it, and the row
says which."""

from dataclasses import dataclass

from ultraedit_dagster.core.llm_client import ChatResult
from ultraedit_dagster.text.rows import (
    MAX_CLIP_TOKENS,
    WriterSettings,
    clip_token_count,
    fit_edit_in_clip_window,
    instruction_rows,
)
from ultraedit_dagster.text.seeds import load_seeds

# 57 words, within the 60-word rule, and close to CLIP's window (71 tokens)
LONG = (
    "A brown dog lying on a soft, woolly rug by the old stone fireplace in a cozy, mid-century living room with oak "
    "floors, a tall bookshelf full of novels, two armchairs with knitted blankets, a side table holding a brass lamp, "
    "framed family photos on the wall, terracotta pots, and a large window showing snowy pine trees."
)
# the edit at the start, the target over the window (79 tokens, 59 words)
CUT = LONG.replace("A brown dog", "A shaggy, caramel-coloured Pomeranian-Chihuahua mix")
# the edit at the end, beyond the window
BEYOND = LONG[:-1] + " and a Pomeranian-Chihuahua-Dachshund."
SETTINGS = WriterSettings(backend="openai", llm_id="openai:test", k=3, region_fraction=0.3, moderation=False)


def test_long_caption_fixture_is_near_the_window():
    assert 65 <= clip_token_count(LONG) <= MAX_CLIP_TOKENS
    for target in (CUT, BEYOND):
        assert clip_token_count(target) > MAX_CLIP_TOKENS and len(target.split()) <= 60


def test_target_over_the_window_is_cut_when_the_edit_stays_inside():
    target = CUT
    fit = fit_edit_in_clip_window(LONG, target)
    assert fit.truncated and fit.target is not None and fit.reason == ""
    assert fit.target.startswith("A shaggy, caramel-coloured Pomeranian-Chihuahua mix lying")
    assert clip_token_count(fit.target) <= MAX_CLIP_TOKENS and fit.target_tokens == clip_token_count(target)


def test_target_over_the_window_is_rejected_when_the_edit_lies_beyond_it():
    target = BEYOND
    fit = fit_edit_in_clip_window(LONG, target)
    assert fit.target is None and fit.reason == f"edit beyond CLIP's {MAX_CLIP_TOKENS}-token window"


def test_short_target_is_kept_as_is_and_long_source_is_rejected():
    fit = fit_edit_in_clip_window("A dog on a rug.", "A cat on a rug.")
    assert fit.target == "A cat on a rug." and not fit.truncated and fit.target_tokens == 8
    too_long = LONG + " beside a sleeping cat on a velvet cushion"
    assert fit_edit_in_clip_window(too_long, too_long + " x").reason == "source caption over 77 CLIP tokens"


@dataclass
class _Client:
    text: str

    def chat_many(self, requests, **params):
        return [ChatResult(self.text, 1000, 60) for _ in requests]

    def forget(self, messages, **params):
        pass


def test_rows_record_a_cut_target_and_reject_an_edit_outside_the_window():
    cut, beyond = CUT, BEYOND
    ok = LONG.replace("snowy pine trees", "green pine trees")
    answer = "\n".join(
        [
            f"{LONG}; replace the dog with a pomeranian-chihuahua mix; {cut}",
            f"{LONG}; add a small dog; {beyond}",
            f"{LONG}; make the trees green; {ok}",
        ]
    )
    caps = [{"uid": "img1", "caption_short": LONG, "caption_desc": LONG, "status": "ok"}]
    rows, stats = instruction_rows(
        caps,
        shard="s-00000",
        profile="tiny",
        seeds=load_seeds(),
        global_seed=0,
        settings=SETTINGS,
        client=_Client(answer),
    )
    by_ins = {r["instruction"]: r for r in rows}
    assert set(by_ins) == {"replace the dog with a pomeranian-chihuahua mix", "make the trees green"}
    r = by_ins["replace the dog with a pomeranian-chihuahua mix"]
    assert r["target_truncated"] is True and r["target_clip_tokens"] > MAX_CLIP_TOKENS
    assert clip_token_count(r["target_caption"]) <= MAX_CLIP_TOKENS
    assert "target cut from" in r["parse_note"]
    g = by_ins["make the trees green"]
    assert g["target_truncated"] is False and g["target_clip_tokens"] <= MAX_CLIP_TOKENS
    assert stats.triplets_rejected[f"edit beyond CLIP's {MAX_CLIP_TOKENS}-token window"] == 1
    for row in rows:
        assert clip_token_count(row["source_caption"]) <= MAX_CLIP_TOKENS
