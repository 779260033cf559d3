"""The template writer on the demo captions: real edits that touch only the edited words."""

from __future__ import annotations

import difflib
import json
import re

import pytest

from tests.conftest import REPO
from ultraedit_dagster.text.edit_types import EDIT_TYPES, GLOBAL_TYPES, classify_edit_type
from ultraedit_dagster.text.parsing import normalize_caption
from ultraedit_dagster.text.template_writer import candidate_edits, find_noun_phrases, write_triplets

DEMO = REPO / "ultraedit_dagster" / "demo_data" / "manifest.jsonl"
CAPTIONS = ["A brown dog lying on a wooden porch next to a red door."] + [
    json.loads(line)["caption"] for line in DEMO.read_text().splitlines() if line.strip()
]
FUNCTION_WORDS = set("a an the with of in on at to and next by it its".split())
WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


def _words(s: str) -> list[str]:
    return WORD.findall(s.lower())


def _matches(word: str, vocab: set[str]) -> bool:
    return word in vocab or any(len(v) >= 3 and (word.startswith(v) or v.startswith(word)) for v in vocab)


def _check(caption: str, edit) -> None:
    src, tgt, ins = _words(caption), _words(edit.target), set(_words(edit.instruction))
    assert normalize_caption(edit.target) != normalize_caption(caption)
    assert edit.edit_type in EDIT_TYPES
    # the instruction names something in the caption, or the whole scene for global edits
    nouns = {w for np_ in find_noun_phrases(caption) for w in _words(np_.noun)}
    if edit.edit_type not in GLOBAL_TYPES:
        assert ins & (nouns | set(src)), (caption, edit)
    # every word the edit inserts comes from the instruction (stems allowed) or is a function word
    sm = difflib.SequenceMatcher(a=src, b=tgt, autojunk=False)
    inserted = [w for op, _, _, j1, j2 in sm.get_opcodes() if op in ("replace", "insert") for w in tgt[j1:j2]]
    removed = [w for op, i1, i2, _, _ in sm.get_opcodes() if op in ("replace", "delete") for w in src[i1:i2]]
    for w in inserted:
        assert w in FUNCTION_WORDS or _matches(w, ins), (caption, edit, w)
    # and the rest of the caption is kept: only a few words change
    assert len(removed) <= max(6, len(src) // 2), (caption, edit)
    # removals name what they remove
    if edit.instruction.startswith("remove"):
        assert set(removed) - FUNCTION_WORDS <= ins | {"holding", "behind", "beside", "near"} | set(
            w for w in removed if not _matches(w, ins)
        ) and _matches(_words(edit.instruction)[-1], set(removed))


@pytest.mark.parametrize("caption", CAPTIONS)
def test_template_edits_on_demo_captions(caption):
    edits = write_triplets(caption, uid=caption, global_seed=0, k=3)
    assert len(edits) == 3
    assert len({e.edit_type for e in edits}) == 3
    for e in edits:
        _check(caption, e)
    assert edits == write_triplets(caption, uid=caption, global_seed=0, k=3)  # deterministic


def test_every_candidate_on_demo_captions_is_clean():
    n = 0
    for caption in CAPTIONS:
        for edits in candidate_edits(caption).values():
            for e in edits:
                _check(caption, e)
                n += 1
    assert n > 500


def test_reference_caption_edits():
    cap = "A brown dog lying on a wooden porch next to a red door."
    cands = candidate_edits(cap)
    texts = {(e.instruction, e.target) for es in cands.values() for e in es}
    assert ("replace the dog with a cat", "A brown cat lying on a wooden porch next to a red door.") in texts
    assert ("make the dog sit up", "A brown dog sitting on a wooden porch next to a red door.") in texts
    assert ("paint the door blue", "A brown dog lying on a wooden porch next to a blue door.") in texts
    assert ("remove the red door", "A brown dog lying on a wooden porch.") in texts
    assert ("make the porch out of glass", "A brown dog lying on a glass porch next to a red door.") in texts
    assert ("make it night", "A brown dog lying on a wooden porch next to a red door at night.") in texts
    assert (
        "make it a watercolor painting",
        "A watercolor painting of a brown dog lying on a wooden porch next to a red door.",
    ) in texts
    assert set(cands) == set(EDIT_TYPES)


def test_template_types_agree_with_classifier():
    total = agree = 0
    for caption in CAPTIONS:
        for t, edits in candidate_edits(caption).items():
            for e in edits:
                total += 1
                agree += classify_edit_type(e.instruction, caption, e.target) == t
    assert agree / total >= 0.8
