"""Issue 17, defects 4 and 5: the object selector's answers are read strictly and never invent a phrase for the
grounder; a local edit never gets a full-image mask (object_not_found / object_not_in_image instead)."""

import numpy as np
import pytest
from PIL import Image

from ultraedit_dagster.core.llm_client import ChatResult
from ultraedit_dagster.core.resources import LLMEndpoint
from ultraedit_dagster.models.grounder import Detection
from ultraedit_dagster.regions import checks as region_checks
from ultraedit_dagster.regions import mask_math as mm
from ultraedit_dagster.regions import object_selection as osel
from ultraedit_dagster.regions.resources import ObjectSelectorResource
from ultraedit_dagster.regions.rows import OBJECT_NOT_FOUND, OBJECT_NOT_IN_IMAGE, process_images
from ultraedit_dagster.text.edit_types import choose_mode

# -- defect 5: strict parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        # the audit's answers: before, ('i think none',), ('n',), ('1 dog',), ('object is dog',)
        ("I think NONE", ()),
        ("N/A", ()),
        ("none.", ()),
        ("NONE (the edit changes the whole scene)", ()),
        ("**None**", ()),
        ("1. dog\n2. cat", ("dog", "cat")),
        ("- dog\n- cat", ("dog", "cat")),
        ("The objects are:\n1. cup\n2. bottle", ("cup", "bottle")),
        ("The object is the dog.", ("dog",)),
        ("I would say the dog and the cat.", ("dog", "cat")),
        ("```text\nsofa\n```", ("sofa",)),
    ],
)
def test_parse_selection_reads_none_lists_and_sentences(answer, expected):
    assert osel.parse_selection(answer) == expected


def test_parse_selection_refuses_none_mixed_with_objects():
    with pytest.raises(osel.SelectionParseError, match="mixes NONE"):
        osel.parse_selection("none, dog")


def test_invented_phrase_never_reaches_the_grounder():
    ctx = dict(
        instruction="replace the dog with a cat",
        source_caption="Two dogs lying on a red wooden rug.",
        tags=["floor", "living room"],
    )
    assert osel.parse_selection("dogs", **ctx) == ("dogs",)
    assert osel.parse_selection("red rug", **ctx) == ("red rug",)  # words of the caption, head included
    assert osel.parse_selection("the living room", **ctx) == ("living room",)  # a tag
    for invented in ("purple unicorn", "sofa", "red car"):
        with pytest.raises(osel.SelectionParseError, match="invented phrase"):
            osel.parse_selection(invented, **ctx)


class _FakeLLM:
    def __init__(self, answer):
        self.answer, self.forgotten = answer, 0

    def chat_many(self, requests, **params):
        return [ChatResult(self.answer, 120, 4) for _ in requests]

    def forget(self, messages, **params):
        self.forgotten += 1


@pytest.mark.parametrize("answer", ["purple unicorn", "The object that the model should edit here is the big cup"])
def test_llm_selector_fails_the_row_and_forgets_the_answer(answer):
    sel = ObjectSelectorResource(backend="openai", endpoint=LLMEndpoint(model="m", base_url="http://127.0.0.1:9/v1"))
    fake = _FakeLLM(answer)
    sel.endpoint._client = fake
    req = {"instruction": "replace the dog with a cat", "source_caption": "A dog.", "target_caption": "A cat."}
    (out,) = sel.select_many([{**req, "tags": ["dog"]}])
    assert isinstance(out, osel.SelectionParseError) and "object selection failed" in str(out)
    assert fake.forgotten == 1  # not kept in the cache as a good answer
    fake.answer = "The object is the dog."
    (ok,) = sel.select_many([{**req, "tags": ["dog"]}])
    assert ok.objects == ("dog",)


# -- defect 4: no full-image mask for a local edit ----------------------------------------------------------------


class _Tagger:
    model_id = "fake-tagger"

    def __init__(self, tags):
        self.tags = tags

    def tag(self, images):
        return [list(self.tags) for _ in images]


class _Selector:
    selector_id = "fake-selector"

    def __init__(self, answers):
        self.answers = answers  # instruction -> objects tuple

    def select_many(self, requests):
        return [osel.ObjectSelection(self.answers[r["instruction"]], "fake", "fake reason") for r in requests]


class _Grounder:
    model_id = "fake-grounder"
    box_threshold = 0.3

    def __init__(self, found):
        self.found = found  # grounding texts that get a box

    def detect(self, images, texts):
        out = []
        for t in texts:
            if t in self.found:
                out.append(Detection(np.array([[8.0, 8.0, 40.0, 40.0]], np.float32), np.array([0.8], np.float32), [t]))
            else:
                out.append(Detection(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), []))
        return out


class _Segmenter:
    model_id = "fake-sam"

    def segment(self, image, boxes):
        m = np.zeros(image.shape[:2], bool)
        for x0, y0, x1, y1 in boxes:
            m[int(y0) : int(y1), int(x0) : int(x1)] = True
        return m


def _ins(uid, instruction, edit_type, source="A dog on a rug.", target="A cat on a rug."):
    return {
        "instruction_uid": uid,
        "image_uid": "img",
        "instruction": instruction,
        "source_caption": source,
        "target_caption": target,
        "edit_type": edit_type,
    }


def _run(instructions, answers, tags=("dog", "rug"), found=("dog.",)):
    image = Image.new("RGB", (64, 64), (120, 130, 140))
    rows, _ = process_images(
        [("img", image)],
        {"img": instructions},
        shard="s-00000",
        profile="tiny",
        global_seed=0,
        qc=mm.MaskQC(),
        soft_probability=0.0,
        soft_values=(0.0,),
        tagger=_Tagger(tags),
        selector=_Selector(answers),
        grounder=_Grounder(found),
        segmenter=_Segmenter(),
    )
    return {r["instruction_uid"]: r for r in rows}


def test_local_edit_without_an_object_fails_instead_of_a_full_mask():
    instructions = [
        _ins("replace", "replace the blood vessel with a cat", "Replace"),
        _ins("add", "add a hat to the dog", "Add"),
        _ins("move", "move the dog to the left", "Others"),
        _ins("color", "make it pink", "Change Color"),
        _ins("turn", "make it snowy", "Turn"),
        _ins("style", "turn it into a watercolor painting", "Transform Global"),
        _ins("flip", "flip the image horizontally", "Others"),
    ]
    rows = _run(instructions, {i["instruction"]: () for i in instructions})
    for uid in ("replace", "add", "move", "color"):
        r = rows[uid]
        assert r["status"] == "failed" and r["error"].startswith(f"{OBJECT_NOT_FOUND}: "), (uid, r["error"])
        assert r["soft_mask"] is None and r["mask_area_fraction"] is None
    for uid in ("turn", "style", "flip"):  # global by nature: the whole image is the region
        r = rows[uid]
        assert r["status"] == "ok" and r["edit_object"] == "NONE" and r["mask_area_fraction"] == 1.0, uid
    assert region_checks.local_full_mask_rows(list(rows.values())) == []


def test_named_object_must_be_in_the_image():
    instructions = [
        _ins("dog", "replace the dog with a cat", "Replace"),
        _ins("rug", "make the rug blue", "Change Color", target="A dog on a blue rug."),
        _ins("vase", "replace the vase with a lamp", "Replace", source="A vase on a table.", target="A lamp."),
    ]
    answers = {"replace the dog with a cat": ("dog",), "make the rug blue": ("rug",)}
    answers["replace the vase with a lamp"] = ("vase",)
    rows = _run(instructions, answers, tags=("dog", "rug"), found=("dog.",))
    assert rows["dog"]["status"] == "ok" and rows["dog"]["boxes"]
    # in the tags but the grounder finds no box: not found
    assert rows["rug"]["error"].startswith(f"{OBJECT_NOT_FOUND}: no box for 'rug.'")
    # neither tagged nor detected: the caption named something the image does not show
    assert rows["vase"]["error"].startswith(f"{OBJECT_NOT_IN_IMAGE}: 'vase'")


def test_check_flags_a_full_mask_on_a_local_edit():
    row = {
        "instruction_uid": "i",
        "instruction": "remove the blood vessel",
        "edit_type": "Others",
        "edit_object": "NONE",
        "mask_area_fraction": 1.0,
        "status": "ok",
    }
    assert region_checks.local_full_mask_rows([row]) == ["i: Others 'remove the blood vessel'"]
    assert region_checks.local_full_mask_rows([{**row, "edit_type": "Turn", "instruction": "make it night"}]) == []
    assert region_checks.local_full_mask_rows([{**row, "status": "failed"}]) == []


def test_add_edits_never_go_to_region_mode():
    uids = [f"u{i}" for i in range(200)]
    assert all(choose_mode(0, u, 1.0, "Add") == "free_form" for u in uids)
    # other triplets keep the mode they had before
    assert [choose_mode(0, u, 0.3, "Replace") for u in uids] == [choose_mode(0, u, 0.3) for u in uids]
