"""The edit-type classifier on held-out instructions (issue 17, defect 9).

`data/edit_types_heldout.tsv` was written independently of the seed pool and committed before the classifier was
changed; the classifier was developed on `data/edit_types_dev.tsv` and the seeds only.
`data/edit_types_heldout_second.tsv` was written later by someone who had not seen the first held-out set; the
classifier was not changed for it. The thresholds are the issue's: at least 90% accuracy and at least 0.8 recall
for every one of the nine types. The old keyword classifier scored 62% on the first set (Change Global recall 0.35,
Transform Global 0.21, Add 0.45), so this test failed before the change.
"""

from collections import Counter
from pathlib import Path

import pytest

from ultraedit_dagster.text.edit_types import EDIT_TYPES, classify_edit_type
from ultraedit_dagster.text.seeds import load_seeds

DATA = Path(__file__).parent / "data"


def _rows(name: str) -> list[tuple[str, str]]:
    out = []
    for line in (DATA / name).read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("edit_type\t"):
            continue
        label, instruction = line.split("\t")[:2]
        assert label in EDIT_TYPES, line
        out.append((label, instruction))
    return out


def _confusion(rows: list[tuple[str, str]]) -> Counter:
    return Counter((label, classify_edit_type(ins)) for label, ins in rows)


def _matrix(conf: Counter) -> str:
    short = {t: "".join(w[0] for w in t.split()) for t in EDIT_TYPES}
    head = "true \\ predicted".ljust(18) + " ".join(short[t].rjust(4) for t in EDIT_TYPES)
    lines = [head]
    for t in EDIT_TYPES:
        lines.append(t.ljust(18) + " ".join(str(conf[(t, p)]).rjust(4) for p in EDIT_TYPES))
    return "\n".join(lines)


def _report(rows):
    conf = _confusion(rows)
    acc = sum(conf[(t, t)] for t in EDIT_TYPES) / len(rows)
    recall = {t: conf[(t, t)] / sum(v for (a, _), v in conf.items() if a == t) for t in EDIT_TYPES}
    return acc, recall, conf


HELDOUT_SETS = {"edit_types_heldout.tsv": 150, "edit_types_heldout_second.tsv": 90}  # file: minimum size


@pytest.mark.parametrize("name", HELDOUT_SETS)
def test_heldout_set_is_independent_of_the_seeds(name):
    rows = _rows(name)
    assert len(rows) >= HELDOUT_SETS[name]
    assert {t for t, _ in rows} == set(EDIT_TYPES)
    seen = {s.instruction.lower() for s in load_seeds()} | {i.lower() for _, i in _rows("edit_types_dev.tsv")}
    for other in HELDOUT_SETS:
        if other != name:
            seen |= {i.lower() for _, i in _rows(other)}
    held = [i.lower() for _, i in rows]
    assert len(set(held)) == len(held)
    assert not set(held) & seen, set(held) & seen


@pytest.mark.parametrize("name", HELDOUT_SETS)
def test_classifier_on_heldout_instructions(capsys, name):
    rows = _rows(name)
    acc, recall, conf = _report(rows)
    with capsys.disabled():
        print(f"\nheld-out edit types ({name}): {len(rows)} instructions, accuracy {acc:.3f}")
        print(_matrix(conf))
        print("recall: " + ", ".join(f"{t} {r:.2f}" for t, r in recall.items()))
    assert acc >= 0.90, acc
    low = {t: round(r, 2) for t, r in recall.items() if r < 0.8}
    assert not low, low


def test_classifier_on_development_set_and_seeds():
    # the development set is what the rules were written against: it must stay near-perfect
    acc, recall, _ = _report(_rows("edit_types_dev.tsv"))
    assert acc >= 0.95 and min(recall.values()) >= 0.85, (acc, recall)
    seeds = load_seeds()
    agree = sum(classify_edit_type(s.instruction) == s.edit_type for s in seeds)
    assert agree / len(seeds) >= 0.95


@pytest.mark.parametrize(
    "instruction,expected",
    [
        # the examples (defect 9)
        ("give it the look of a faded 1970s film photo", "Transform Global"),
        ("put the dog in a snowy forest", "Change Global"),
        ("give the girl a red party hat", "Add"),
        # a modifier is not the new value: a material / colour / time word before a noun names the object
        ("make the ice cream melt", "Change Local"),
        ("make the white dog sit", "Change Local"),
        ("give the boy a winter coat", "Add"),
        ("make the sofa navy blue", "Change Color"),
        # the complement's head decides "turn / change X into Y"
        ("turn the teapot into a stone teapot", "Transform Local"),
        ("change the cup of coffee to a glass of orange juice", "Replace"),
        ("change the tulips to roses", "Replace"),
        ("turn the sad face into a happy one", "Change Local"),
        ("swap the red car for a blue one", "Change Color"),
        # who is placed where: a definite subject taken to a place is a new setting, an indefinite one an addition
        ("place the couple on a tropical beach", "Change Global"),
        ("place a lamp on the table", "Add"),
        ("move the vase to the left edge of the table", "Others"),
        ("move the scene to a busy Tokyo street", "Change Global"),
        # weather added is a Turn, an action of someone else is not a viewpoint change
        ("add falling snow", "Turn"),
        ("have the chef flip the pancake", "Change Local"),
        ("make the sign read CLOSED", "Others"),
        ("make the man read a book", "Change Local"),
    ],
)
def test_phrase_structure_rules(instruction, expected):
    assert classify_edit_type(instruction) == expected
