"""The seed pool, its validation, the edit-type classifier, in-context sampling and mode choice."""

from __future__ import annotations

import pytest

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.text.edit_types import EDIT_TYPES, choose_mode, classify_edit_type
from ultraedit_dagster.text.prompts import instruction_messages, messages_hash
from ultraedit_dagster.text.seeds import SeedFileError, counts_per_type, load_seeds, parse_seed_text, sample_in_context


def test_seed_pool_size_and_types():
    seeds = load_seeds()
    assert len(seeds) >= 180
    counts = counts_per_type(seeds)
    assert set(counts) == set(EDIT_TYPES)
    assert min(counts.values()) >= 12, counts


def test_classifier_agrees_with_seed_labels():
    seeds = load_seeds()
    agree = sum(classify_edit_type(s.instruction, s.source_caption, s.target_caption) == s.edit_type for s in seeds)
    assert agree / len(seeds) >= 0.80
    # every type is predicted for at least half of its own seeds (no type is silently absorbed by another)
    for t in EDIT_TYPES:
        own = [s for s in seeds if s.edit_type == t]
        hits = sum(classify_edit_type(s.instruction, s.source_caption, s.target_caption) == t for s in own)
        assert hits / len(own) >= 0.5, t


@pytest.mark.parametrize(
    "instruction,expected",
    [
        ("remove the cat", "Others"),
        ("add a hat to the man", "Add"),
        ("make it a watercolor painting", "Transform Global"),
        ("change the background to a forest", "Change Global"),
        ("make it winter", "Turn"),
        ("replace the dog with a cat", "Replace"),
        ("turn the car red", "Change Color"),
        ("make the table out of glass", "Transform Local"),
        ("make the man smile", "Change Local"),
    ],
)
def test_classifier_rules(instruction, expected):
    assert classify_edit_type(instruction) == expected


def test_bad_seed_file_reports_line_numbers():
    text = "\n".join(
        [
            "edit_type\tsource_caption\tinstruction\ttarget_caption",
            "Add\tA dog.\tadd a cat\tA dog and a cat.",
            "Add\tA dog.\tadd a cat\tA dog and a cat.",  # 3: duplicate
            "Flip\tA dog.\tflip it\tA flipped dog.",  # 4: unknown type
            "Replace\tA dog.\tdo nothing\ta dog",  # 5: target == source
            "Add\tA dog.\t\tA dog and a cat.",  # 6: empty instruction
            "Add\tA dog.\tadd a cat",  # 7: three fields
            "Add\t" + " ".join(["w"] * 61) + "\tadd\tA dog.",  # 8: too long
        ]
    )
    with pytest.raises(SeedFileError) as err:
        parse_seed_text(text)
    msg = str(err.value)
    for n in (3, 4, 5, 6, 7, 8):
        assert f"line {n}:" in msg
    assert "line 2:" not in msg
    assert "6 bad line(s)" in msg


def test_in_context_sampling_is_deterministic_and_per_image():
    seeds = load_seeds()
    a = sample_in_context(seeds, "uid-a", 0)
    assert len(a.instructions) == 50 and len(a.examples) == 10
    assert a == sample_in_context(list(reversed(seeds)), "uid-a", 0)  # file order does not matter
    assert a != sample_in_context(seeds, "uid-b", 0)
    assert a != sample_in_context(seeds, "uid-a", 1)
    m1 = instruction_messages("A dog.", "A dog on grass.", a, 3)
    m2 = instruction_messages("A dog.", "A dog on grass.", sample_in_context(seeds, "uid-a", 0), 3)
    assert messages_hash(m1) == messages_hash(m2)
    text = m1[1]["content"]
    assert "Caption to edit: A dog." in text and "Produce 3 instances." in text and text.endswith("Response:")
    assert all(i in text for i in a.instructions)


def test_mode_fraction_is_deterministic():
    uids = [make_uid("img", i) for i in range(2000)]
    modes = [choose_mode(0, u, 0.3) for u in uids]
    assert modes == [choose_mode(0, u, 0.3) for u in uids]
    frac = modes.count("region") / len(modes)
    assert 0.25 < frac < 0.35
    assert all(choose_mode(0, u, 0.0) == "free_form" for u in uids[:50])
    assert all(choose_mode(0, u, 1.0) == "region" for u in uids[:50])
    with pytest.raises(ValueError):
        choose_mode(0, "x", 1.5)
