"""The triplet parser on messy model outputs, the validation rules, and near-duplicate flagging."""

from __future__ import annotations

import pytest

from ultraedit_dagster.text.parsing import (
    Triplet,
    near_duplicate_flags,
    normalize_caption,
    parse_triplets,
    validate_triplet,
)

CAP = "A brown dog lying on a wooden porch next to a red door."
T1 = (CAP, "replace the dog with a cat", "A brown cat lying on a wooden porch next to a red door.")
T2 = (CAP, "make the door blue", "A brown dog lying on a wooden porch next to a blue door.")
T3 = (CAP, "make it night", "A brown dog lying on a wooden porch next to a red door at night.")


def line(t, sep="; "):
    return sep.join(t)


# (reply text, expected triplets); every case is a kind of mess seen in real model output
CORPUS: list[tuple[str, list[tuple[str, str, str]]]] = [
    # 1 clean
    ("\n".join(line(t) for t in (T1, T2, T3)), [T1, T2, T3]),
    # 2 numbered "1."
    ("\n".join(f"{i}. {line(t)}" for i, t in enumerate((T1, T2, T3), 1)), [T1, T2, T3]),
    # 3 numbered "1)"
    ("\n".join(f"{i}) {line(t)}" for i, t in enumerate((T1, T2), 1)), [T1, T2]),
    # 4 dash bullets
    ("\n".join(f"- {line(t)}" for t in (T1, T2, T3)), [T1, T2, T3]),
    # 5 star and bullet-dot bullets
    (f"* {line(T1)}\n• {line(T2)}", [T1, T2]),
    # 6 a title line
    (f"Here are three edit instances:\n{line(T1)}\n{line(T2)}\n{line(T3)}", [T1, T2, T3]),
    # 7 markdown heading + bold
    (f"## Edits\n**{line(T1)}**\n**{line(T2)}**", [T1, T2]),
    # 8 code fence
    (f"```\n{line(T1)}\n{line(T2)}\n```", [T1, T2]),
    # 9 code fence with a language tag
    (f"```text\n{line(T1)}\n```", [T1]),
    # 10 whole line in double quotes
    (f'"{line(T1)}"\n"{line(T2)}"', [T1, T2]),
    # 11 each part quoted
    ("\n".join("; ".join(f'"{p}"' for p in t) for t in (T1, T2)), [T1, T2]),
    # 12 curly quotes around parts
    ("; ".join(f"“{p}”" for p in T1), [T1]),
    # 13 trailing commentary line
    (f"{line(T1)}\n{line(T2)}\nThese edits keep the scene realistic. Let me know if you need more!", [T1, T2]),
    # 14 trailing parenthetical note on the line
    (f"{line(T1)} (This swaps the animal.)", [T1]),
    # 15 an extra semicolon inside the source caption, resolved against the sent caption
    (
        "A dog; a cat on a porch.; remove the cat; A dog on a porch.",
        [("A dog; a cat on a porch.", "remove the cat", "A dog on a porch.")],
    ),
    # 16 an extra semicolon inside the target caption
    (
        f"{CAP}; add a cat; A brown dog lying on a wooden porch; a cat sits next to a red door.",
        [(CAP, "add a cat", "A brown dog lying on a wooden porch; a cat sits next to a red door.")],
    ),
    # 17 fewer triplets than asked
    (line(T1), [T1]),
    # 18 more triplets than asked (all are returned; the caller keeps k)
    ("\n".join(line(t) for t in (T1, T2, T3, T1)), [T1, T2, T3, T1]),
    # 19 labelled parts on one line
    (f"Original caption: {T1[0]}; Instruction: {T1[1]}; New caption: {T1[2]}", [T1]),
    # 20 labelled block over three lines
    (
        f"Caption: {T2[0]}\nInstruction: {T2[1]}\nNew caption: {T2[2]}\n\nCaption: {T3[0]}\nInstruction: {T3[1]}\n"
        f"New caption: {T3[2]}",
        [T2, T3],
    ),
    # 21 markdown table with header and rule
    (f"| Original caption | Instruction | New caption |\n|---|---|---|\n| {T1[0]} | {T1[1]} | {T1[2]} |", [T1]),
    # 22 blank lines and stray whitespace
    (f"\n\n   {line(T1)}   \n\n\t{line(T2)}\n", [T1, T2]),
    # 23 a trailing separator
    (f"{line(T1)};", [T1]),
    # 24 "Triplet 1:" prefixes
    (f"Triplet 1: {line(T1)}\nTriplet 2: {line(T2)}", [T1, T2]),
    # 25 refusal / no triplets at all
    ("I'm sorry, but I can't help with that request.", []),
    # 26 "Response:" echo then numbered with parenthesised numbers
    (f"Response:\n(1) {line(T1)}\n(2) {line(T3)}", [T1, T3]),
    # 27 separators without spaces
    (line(T1, sep=";"), [T1]),
    # 28 windows line endings
    (f"{line(T1)}\r\n{line(T2)}\r\n", [T1, T2]),
]


@pytest.mark.parametrize("text,expected", CORPUS, ids=[f"case{i + 1}" for i in range(len(CORPUS))])
def test_parser_corpus(text, expected):
    sent = "A dog; a cat on a porch." if "A dog; a cat" in text else CAP
    got = [(t.source, t.instruction, t.target) for t in parse_triplets(text, sent_caption=sent).triplets]
    assert got == expected


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 25


def test_validate_rules():
    ok = validate_triplet(Triplet(*T1), CAP)
    assert ok.triplet == Triplet(*T1) and not ok.source_replaced
    # target == source after case and trailing punctuation
    assert validate_triplet(Triplet(CAP, "do nothing", CAP.upper().rstrip(".") + "!"), CAP).triplet is None
    assert validate_triplet(Triplet(CAP, "", T1[2]), CAP).reason == "empty part"
    long = " ".join(["word"] * 61)
    assert "longer than 60" in validate_triplet(Triplet(CAP, "x", long), CAP).reason
    # the model rewrote the caption: rejected (it used to be repaired with the sent caption, which let off-topic
    # answers through as ok triplets)
    v = validate_triplet(Triplet("A dog on a porch.", T1[1], T1[2]), CAP)
    assert v.triplet is None and v.reason == "source caption differs from the caption sent"
    assert validate_triplet(Triplet(CAP, T1[1], CAP + " "), CAP).triplet is None


def test_normalize_caption():
    assert normalize_caption('  "A Dog  on a porch."  ') == "a dog on a porch"
    assert normalize_caption("A dog!!") == normalize_caption("a dog")


def test_near_duplicates():
    flags = near_duplicate_flags(
        [
            "make it night",
            "Make it night.",
            "replace the dog with a cat",
            "replace the dogs with a cat",
            "make the door blue",
            "add a red ball in front of the dog",
        ]
    )
    assert flags == [False, True, False, True, False, False]
    assert near_duplicate_flags([]) == []
