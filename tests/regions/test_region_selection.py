"""Object selection: the rule backend on realistic instructions, the LLM prompt and the parsing of its answers."""

from __future__ import annotations

import pytest

from ultraedit_dagster.regions import object_selection as osel


@pytest.mark.parametrize(
    "instruction, source, target, expected",
    [
        (
            "replace the dog with a cat",
            "A dog lying on a rug by the fireplace.",
            "A cat lying on a rug by the fireplace.",
            ("dog",),
        ),
        ("change the red door to blue", "A red door on a white house.", "A blue door on a white house.", ("door",)),
        ("make the car blue", "A red car parked on a street.", "A blue car parked on a street.", ("car",)),
        (
            "swap the apples for bananas",
            "A bowl of apples on a wooden table.",
            "A bowl of bananas on a wooden table.",
            ("apple",),
        ),
        ("remove the lamp from the table", "A table with a vase and a lamp.", "A table with a vase.", ("lamp",)),
        ("remove the dog", "A cat and a dog on a sofa.", "A cat on a sofa.", ("dog",)),
        ("make the man smile", "A man standing next to his car.", "A smiling man standing next to his car.", ("man",)),
        ("make the umbrella teal", "An orange umbrella on a beach.", "A teal umbrella on a beach.", ("umbrella",)),
        (
            "replace the teddy bear with a toy robot",
            "A teddy bear sitting on a shelf.",
            "A toy robot sitting on a shelf.",
            ("teddy bear",),
        ),
        (
            "change the cup of coffee to a glass of orange juice",
            "A man holding a cup of coffee.",
            "A man holding a glass of orange juice.",
            ("cup", "coffee"),
        ),
    ],
)
def test_rules_pick_the_changed_object(instruction, source, target, expected):
    sel = osel.select_by_rules(instruction, source, target)
    assert sel.objects == expected, sel.reason
    assert sel.edit_object == ", ".join(expected) and not sel.is_none and sel.backend == "rules"


@pytest.mark.parametrize(
    "instruction, source, target, edit_type",
    [
        ("make it snowy", "A country road in summer.", "A snowy country road in winter.", None),
        ("make it a watercolor painting", "A cat sitting on a windowsill.", "A watercolor painting of a cat.", None),
        ("turn the day into night", "A city street during the day.", "A city street at night.", None),
        (
            "change the background to a sunny beach",
            "A dog sitting in a living room.",
            "A dog sitting on a sunny beach.",
            None,
        ),
        (
            "add a fork next to the cake",
            "A white plate with a slice of cake.",
            "A white plate with cake and a fork.",
            None,
        ),
        (
            "move the car to the left side of the street",
            "A car parked in front of a house.",
            "A car parked on the left side of the street.",
            None,
        ),
        # the edit type alone decides for the whole-image types, even when an object noun is named
        (
            "replace the background with a dense jungle",
            "A man on a sidewalk.",
            "A man in a dense jungle.",
            "Change Global",
        ),
    ],
)
def test_rules_return_none_for_whole_image_edits(instruction, source, target, edit_type):
    sel = osel.select_by_rules(instruction, source, target, edit_type=edit_type)
    assert sel.is_none and sel.edit_object == "NONE" and sel.reason


def test_rules_use_tags_beyond_the_vocabulary_and_cap_at_two():
    # "zeppelin" is not in the shipped vocabulary: only the tag makes it a known object
    src, tgt = "A zeppelin over a field.", "A hot air balloon over a field."
    assert osel.select_by_rules("replace the zeppelin with a hot air balloon", src, tgt).objects == ()
    sel = osel.select_by_rules("replace the zeppelin with a hot air balloon", src, tgt, tags=["zeppelin", "field"])
    assert sel.objects == ("zeppelin",)
    three = osel.select_by_rules(
        "remove the cup, the bottle and the vase", "A cup, a bottle and a vase on a table.", "A table."
    )
    assert len(three.objects) == 2 and set(three.objects) <= {"cup", "bottle", "vase"}


def test_rules_on_every_seed_triplet_give_objects_from_the_source_caption():
    from importlib import resources

    text = resources.files("ultraedit_dagster").joinpath("data", "seed_triplets.tsv").read_text("utf-8")
    rows = [ln.split("\t") for ln in text.splitlines() if ln and not ln.startswith("#")][1:]
    assert len(rows) > 100
    local = 0
    for edit_type, source, instruction, target in rows:
        sel = osel.select_by_rules(instruction, source, target, edit_type=edit_type)
        assert len(sel.objects) <= 2
        if edit_type in osel.NONE_EDIT_TYPES:
            assert sel.is_none
        for obj in sel.objects:  # every selected object is a noun of the source caption (singular form)
            assert obj.split()[-1] in " ".join(osel.words(source)), (instruction, obj)
        if edit_type in ("Replace", "Change Color") and not sel.is_none:
            local += 1
    assert local >= 35  # nearly every replace / recolor edit finds its object


def test_vocabulary_is_shipped_and_clean():
    vocab = osel.load_vocabulary()
    assert 300 <= len(vocab) <= 2000
    assert len(set(vocab)) == len(vocab)
    assert all(v == v.strip().lower() and not v.startswith("#") for v in vocab)
    for noun in ("dog", "cat", "door", "car", "traffic light", "teddy bear"):
        assert noun in vocab


def test_prompt_holds_task_rules_examples_and_inputs():
    p = osel.selection_prompt("replace the dog with a cat", "A dog on a rug.", "A cat on a rug.", ["dog", "rug"])
    assert "at most 2 objects" in p and "NONE" in p
    assert p.rstrip().endswith("Answer:")
    assert "Instruction: replace the dog with a cat" in p and "Tags: dog, rug" in p
    assert p.count("Answer:") == len(osel.SELECTION_EXAMPLES) + 1
    assert "Tags: (none)" in osel.selection_prompt("x", "y", "z", [])


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("dog", ("dog",)),
        ("Dog, Cat", ("dog", "cat")),
        ("the red door.", ("red door",)),
        ("NONE", ()),
        ("none", ()),
        ('"NONE".', ()),
        ("Answer: cup, bottle", ("cup", "bottle")),
        ("```\nsofa\n```", ("sofa",)),
        ("dog, cat, horse", ("dog", "cat")),  # more than two: the first two
        ("dog, dog", ("dog",)),
        ("cup; saucer", ("cup", "saucer")),
        ("woman's hat\nBecause the instruction edits the hat.", ("woman hat",)),
    ],
)
def test_parse_selection(answer, expected):
    assert osel.parse_selection(answer) == expected


@pytest.mark.parametrize(
    "answer", ["", "   \n ", "The object that the instruction edits is clearly the big red door here"]
)
def test_parse_selection_rejects_unusable_answers(answer):
    with pytest.raises(osel.SelectionParseError):
        osel.parse_selection(answer)


def test_grounding_text():
    assert osel.grounding_text(["dog", "Red Door."]) == "dog. red door."
    assert osel.ObjectSelection(("dog", "cat"), "rules").edit_object == "dog, cat"
