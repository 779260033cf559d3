"""The offline template writer against a curator's review (issue 17, defect 10).

`data/template_review.tsv` holds 100 captions the writer had not seen (people, animals, food, streets, text in the
image, artworks), the first edit the writer makes for each, and a verdict (good / weak / wrong, with a reason). The
test regenerates every output: a changed output must be reviewed again (the file updated), and at most 2% may be
wrong. The examples the issue reported are tested on their own below; each failed with the old writer.
"""

from collections import Counter
from pathlib import Path

import pytest

from ultraedit_dagster.text.edit_types import EDIT_TYPES
from ultraedit_dagster.text.template_writer import (
    _plural,
    candidate_edits,
    replacements_for,
    text_spans,
    write_triplets,
)

REVIEW = Path(__file__).parent / "data" / "template_review.tsv"
FIELDS = ["n", "category", "caption", "edit_type", "instruction", "target", "verdict", "reason"]


def _review() -> list[dict]:
    rows = []
    for line in REVIEW.read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("n\t"):
            continue
        rows.append(dict(zip(FIELDS, line.split("\t"), strict=True)))
    return rows


def test_review_set_covers_the_issue_categories():
    rows = _review()
    assert len(rows) == 100
    cats = Counter(r["category"] for r in rows)
    assert set(cats) == {"people", "animals", "food", "streets", "text", "art"} and min(cats.values()) >= 15
    assert all(r["verdict"] in {"good", "weak", "wrong"} for r in rows)
    assert all(r["reason"] for r in rows if r["verdict"] != "good")  # every non-good verdict says why


def test_outputs_match_the_reviewed_ones_and_at_most_two_percent_are_wrong(capsys):
    rows = _review()
    changed = []
    for r in rows:
        edits = write_triplets(r["caption"], uid=f"review-{int(r['n']):03d}", global_seed=0, k=3)
        got = (edits[0].edit_type, edits[0].instruction, edits[0].target) if edits else None
        if got != (r["edit_type"], r["instruction"], r["target"]):
            changed.append((r["n"], r["caption"], got))
    assert not changed, f"outputs changed since the review (review them and update {REVIEW.name}): {changed[:5]}"
    verdicts = Counter(r["verdict"] for r in rows)
    with capsys.disabled():
        print(f"\ntemplate review: {dict(verdicts)} over {len(rows)} captions")
    assert verdicts["wrong"] <= 0.02 * len(rows), verdicts
    assert {r["edit_type"] for r in rows} <= set(EDIT_TYPES)


def test_issue_examples_are_fixed():
    # "make the building bigger" -> "Children big building a sandcastle ...": a gerund is not a noun
    cands = candidate_edits("Children building a sandcastle on the beach.")
    assert not any("building" in e.instruction for es in cands.values() for e in es)
    # "replace the puppy with a lion" -> "A golden retriever lion ...": a breed goes with the replaced animal
    cap = "A golden retriever puppy chewing on a red ball."
    reps = candidate_edits(cap)["Replace"]
    assert reps and all("retriever" not in e.target for e in reps if "puppy" in e.instruction)
    assert ("replace the puppy with a kitten", "A kitten chewing on a red ball.") in {
        (e.instruction, e.target) for e in reps
    }
    # "replace the plate with a jar" -> "A jar of pancakes": containers are replaced only by their own kind
    reps = candidate_edits("A plate of pancakes with blueberries and maple syrup.")["Replace"]
    assert {e.instruction for e in reps} <= {"replace the plate with a tray", "replace the plate with a platter"}
    # "replace the children with mans": irregular plurals
    assert _plural("man") == "men" and _plural("child") == "children" and _plural("mouse") == "mice"
    reps = candidate_edits("Two men playing chess at a wooden table in a park.")["Replace"]
    assert ("replace the men with women", "Two women playing chess at a wooden table in a park.") in {
        (e.instruction, e.target) for e in reps
    }
    # "replace the sailboat with a boat": no hypernym or synonym as a replacement
    assert not {"boat", "ship"} & set(replacements_for("sailboat"))
    assert "dog" not in replacements_for("puppy") and "couch" not in replacements_for("sofa")


def test_text_in_the_image_gets_text_edits():
    cap = "A red stop sign that says STOP on a street corner."
    assert [t for _, _, t in text_spans(cap)] == ["STOP"]
    others = candidate_edits(cap)["Others"]
    assert ('change the text "STOP" to "OPEN"', "A red stop sign that says OPEN on a street corner.") in {
        (e.instruction, e.target) for e in others
    }
    quoted = candidate_edits('A sign that reads "NO PARKING" next to a driveway.')["Others"]
    assert any(e.target == 'A sign that reads "GOOD LUCK" next to a driveway.' for e in quoted)
    # the written text is not read as objects or times of day ("the word SUMMER" is no Turn edit)
    cands = candidate_edits("A t-shirt with the word SUMMER printed on the front.")
    assert "Turn" not in cands


@pytest.mark.parametrize(
    "caption,bad",
    [
        ("A woman reading a book on a train.", "reading a vase"),  # replaced by a thing of the same use
        ("A white rabbit eating a carrot on the grass.", "sleeping a carrot"),  # no intransitive swap with an object
        ("A woman holding a cup of coffee and looking out of a window.", "A woman of coffee"),  # removal keeps grammar
        ("A boy in a blue shirt kicking a soccer ball on a grass field.", "soccer big ball"),  # adjectives before mods
        ("A watercolor painting of a village by a lake.", "drawing of a watercolor painting"),  # medium replaced
        ("A girl holding a kitten in her arms.", "boy holding a kitten in her arms"),  # pronouns tie the person
        ("A street vendor selling hot dogs from a cart.", "hot cats"),  # an unknown modifier makes another thing
    ],
)
def test_no_broken_edits(caption, bad):
    for edits in candidate_edits(caption).values():
        for e in edits:
            assert bad not in e.target, (caption, e)
