"""Which object(s) an edit instruction touches: at most two, or NONE for whole-image edits (docs/method.md §4).

Two backends share the output form (`ObjectSelection`):

- the LLM backend: UltraEdit asks an LLM, given the instruction, the captions and the image tags, for at most two
  comma-separated objects or `NONE`. The released code ships only the resulting `edit_object` column, not the prompt,
  so `selection_prompt` is written from the paper's description (rules + a few worked examples); `parse_selection`
  reads the answer strictly enough to catch a chatty model.
- the rule backend (`select_by_rules`, the `tiny` profile): whole-image cues and edit types give NONE; otherwise the
  objects are the nouns of the source caption (the shipped vocabulary plus the image's tags) that the instruction
  names or whose words the target caption changes (a removed noun, or a changed modifier right before a noun:
  "a red door" -> "a blue door" selects "door").

No Dagster, no network here: the LLM call itself lives in the object_selector resource.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as importlib_resources

NONE_OBJECT = "NONE"
MAX_OBJECTS = 2
VOCABULARY_FILE = "object_vocabulary.txt"

# Edit types (edit_types.py names) that are whole-image edits by definition in UltraEdit: adding a new object or
# changing the scene / style. Everything else is decided from the text.
NONE_EDIT_TYPES = frozenset({"Add", "Change Global", "Transform Global"})

# Edit types that are global by nature: their region is the whole image, so a NONE selection gets a full-image mask
# (docs/method.md §4). Every other type is local: NONE, or an object that cannot be grounded, fails the row.
FULL_MASK_EDIT_TYPES = frozenset({"Turn", "Change Global", "Transform Global"})
# "Others" holds whole-image operations too (flip, mirror, rotate, zoom, crop, viewpoint): these also get a full mask.
_WHOLE_IMAGE_OPS = re.compile(
    r"^\s*(?:please\s+)?(?:flip|mirror|rotate|zoom|crop|tilt|pan)\b|"
    r"\b(?:from above|from below|bird'?s[- ]eye|viewpoint|point of view|camera angle|wide[- ]angle|close[- ]up)\b"
)

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_ARTICLES = {"a", "an", "the", "some", "this", "that", "these", "those", "his", "her", "its", "their"}

# The instruction addresses the whole picture ("make it snowy", "turn the photo into a sketch").
_WHOLE_IMAGE = re.compile(
    r"^\s*(?:please\s+)?(?:make|turn|render|convert|transform|change|set|give|style|paint|redraw|draw|show)\s+"
    r"(?:it|this|everything|(?:the\s+)?(?:whole\s+|entire\s+)?(?:image|photo|photograph|picture|scene|setting|"
    r"background|weather|season|time of day|lighting|style|view|landscape))\b"
)
# Adding or moving objects is a NONE edit in UltraEdit (the new place is not in the source image).
_ADD_OR_MOVE = re.compile(r"^\s*(?:please\s+)?(?:add|put|place|insert|include|move|relocate|shift)\b")
# Whole-image vocabulary: styles, seasons, weather, time of day.
_GLOBAL_WORDS = frozenset(
    """painting watercolor watercolour sketch drawing cartoon anime comic pixel style oil impressionist van gogh
    monet picasso sepia vintage retro cinematic photorealistic render illustration mosaic
    night day daytime nighttime sunset sunrise dusk dawn evening morning noon twilight
    winter summer autumn fall spring season snowy rainy foggy misty stormy cloudy sunny overcast weather
    background scene setting atmosphere lighting underwater""".split()
)

_IRREGULAR_PLURALS = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "knives": "knife",
    "leaves": "leaf",
    "shelves": "shelf",
    "wolves": "wolf",
    "loaves": "loaf",
    "calves": "calf",
    "halves": "half",
    "scarves": "scarf",
    "people": "person",
    "oxen": "ox",
    "dice": "die",
}


@dataclass(frozen=True)
class ObjectSelection:
    """The chosen objects (empty for NONE), how they were chosen, and the raw LLM answer when there was one."""

    objects: tuple[str, ...]
    backend: str
    reason: str = ""
    raw: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def is_none(self) -> bool:
        return not self.objects

    @property
    def edit_object(self) -> str:
        """The release column: 'dog, cat' or 'NONE'."""
        return ", ".join(self.objects) if self.objects else NONE_OBJECT


def grounding_text(objects: Sequence[str]) -> str:
    """GroundingDINO's text prompt: lowercase phrases each ending with '.' ("dog. cat.")."""
    return " ".join(f"{o.strip().lower().rstrip('.')}." for o in objects if o.strip())


# -- vocabulary -----------------------------------------------------------------------------------------------------


def parse_vocabulary(text: str) -> list[str]:
    """Lines of a vocabulary file: lowercase, stripped, '#' comments and blanks dropped, duplicates removed."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        word = " ".join(line.strip().lower().split())
        if word and not word.startswith("#"):
            seen.setdefault(word, None)
    return list(seen)


@lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None) -> tuple[str, ...]:
    """The shipped object vocabulary (ultraedit_dagster/data/object_vocabulary.txt) or the file at `path`."""
    if path:
        with open(path, encoding="utf-8") as fh:
            return tuple(parse_vocabulary(fh.read()))
    text = importlib_resources.files("ultraedit_dagster").joinpath("data", VOCABULARY_FILE).read_text("utf-8")
    return tuple(parse_vocabulary(text))


# -- text helpers ---------------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    text = (text or "").lower().replace("\u2019", "'")
    out = []
    for w in _WORD.findall(text):
        if w.endswith("'s"):
            w = w[:-2]
        out.append(w)
    return out


def singular(word: str, lexicon: frozenset[str]) -> str:
    """The singular form of `word` when that form is in `lexicon` (else the word unchanged)."""
    if word in lexicon:
        return word
    if word in _IRREGULAR_PLURALS and _IRREGULAR_PLURALS[word] in lexicon:
        return _IRREGULAR_PLURALS[word]
    candidates = []
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        candidates.append(word[:-1])
    for c in candidates:
        if c in lexicon:
            return c
    return word


@dataclass
class _Mention:
    phrase: str  # the lexicon phrase (singular)
    start: int  # token index in the text
    end: int  # exclusive


@dataclass
class Lexicon:
    """Noun phrases (vocabulary + tags), matched greedily longest-first over singularized tokens."""

    phrases: frozenset[str]
    max_len: int = field(init=False)
    heads: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.max_len = max((len(p.split()) for p in self.phrases), default=1)
        self.heads = frozenset(w for p in self.phrases for w in p.split())

    @classmethod
    def build(cls, vocabulary: Iterable[str], tags: Iterable[str] = ()) -> Lexicon:
        items = {" ".join(str(v).lower().split()) for v in list(vocabulary) + list(tags)}
        return cls(frozenset(i for i in items if i))

    def find(self, tokens: Sequence[str]) -> list[_Mention]:
        norm = [singular(t, self.heads) for t in tokens]
        found: list[_Mention] = []
        i = 0
        while i < len(norm):
            for n in range(min(self.max_len, len(norm) - i), 0, -1):
                phrase = " ".join(norm[i : i + n])
                if phrase in self.phrases:
                    found.append(_Mention(phrase, i, i + n))
                    i += n
                    break
            else:
                i += 1
        return found


# -- the rule backend -----------------------------------------------------------------------------------------------


def whole_image_reason(instruction: str, edit_type: str | None = None) -> str:
    """Why this edit is a whole-image (NONE) edit, or '' when it is not evidently one."""
    text = " ".join(words(instruction))
    if edit_type in NONE_EDIT_TYPES:
        return f"edit type {edit_type} edits the whole image"
    if _ADD_OR_MOVE.match(text):
        return "adding or moving an object edits the whole image"
    if _WHOLE_IMAGE.match(text):
        return "the instruction addresses the whole image"
    return ""


def full_mask_reason(instruction: str, edit_type: str | None) -> str:
    """Why a full-image mask is the right region for this edit, or '' when the edit is local (it needs an object).

    Full masks only for the types global by nature (Turn, Change Global, Transform Global) and for untyped or Others
    instructions that address the whole image ("make it snowy", "flip the image", "zoom out"). Add, Replace, Change
    Local, Transform Local, Change Color and the object edits of Others (remove, move, text) are local."""
    if edit_type in FULL_MASK_EDIT_TYPES:
        return f"edit type {edit_type} is global by nature"
    if edit_type in (None, "", "Others"):
        text = " ".join(words(instruction))
        if _WHOLE_IMAGE.match(text) or _WHOLE_IMAGE_OPS.search(text):
            return "the instruction edits the whole image"
    return ""


def presence_required(instruction: str, edit_type: str | None) -> bool:
    """Whether a free-form instruction edits an object that must already be in the image (docs/method.md §4): a local
    edit (no full-mask reason) that is not whole-image by UltraEdit's selection rules (adding or moving an object, a
    scene or style change: the object to find does not exist yet, or there is none)."""
    return not full_mask_reason(instruction, edit_type) and not whole_image_reason(instruction, edit_type)


def objects_in_tags(objects: Sequence[str], tags: Sequence[str]) -> list[str]:
    """The objects whose head noun (normalised) is a word of one of the image's tags."""
    tag_words = {t for tag in tags for t in _norm_tokens(tag)}
    return [o for o in objects if (_norm_tokens(o) or [""])[-1] in tag_words]


def select_by_rules(
    instruction: str,
    source_caption: str,
    target_caption: str,
    tags: Sequence[str] = (),
    edit_type: str | None = None,
    vocabulary: Sequence[str] | None = None,
    max_objects: int = MAX_OBJECTS,
) -> ObjectSelection:
    """Pick at most `max_objects` objects of the source caption that the edit changes, or NONE."""
    reason = whole_image_reason(instruction, edit_type)
    if reason:
        return ObjectSelection((), "rules", reason)
    lex = Lexicon.build(vocabulary if vocabulary is not None else load_vocabulary(), tags)
    src_tokens, tgt_tokens, ins_tokens = words(source_caption), words(target_caption), words(instruction)
    src_mentions = lex.find(src_tokens)
    if not src_mentions:
        return ObjectSelection((), "rules", "no known object noun in the source caption")

    ins_phrases = {m.phrase for m in lex.find(ins_tokens)}
    ins_words = {singular(t, lex.heads) for t in ins_tokens}
    tgt_phrases = Counter(m.phrase for m in lex.find(tgt_tokens))
    removed = Counter(src_tokens) - Counter(tgt_tokens)  # source words the target caption drops or changes
    changed_positions = set()
    budget = Counter(removed)
    for i, tok in enumerate(src_tokens):
        if budget[tok] > 0 and tok not in _ARTICLES:
            changed_positions.add(i)
            budget[tok] -= 1

    src_count = Counter(m.phrase for m in src_mentions)
    starts = {m.start for m in src_mentions}
    scores: dict[str, float] = {}
    order: dict[str, int] = {}
    for m in src_mentions:
        # named: the phrase, or its head noun ("street sign" <- "the sign"), appears in the instruction
        named = m.phrase in ins_phrases or m.phrase.split()[-1] in ins_words
        if m.end in starts and not named:
            continue  # a noun modifying the next noun ("orange umbrella", "stone fountain") is not the object
        noun_removed = src_count[m.phrase] > tgt_phrases.get(m.phrase, 0)
        modifier_changed = any(p in changed_positions for p in range(max(0, m.start - 2), m.start))
        score = 0.0
        if named:
            score += 2.0
        if noun_removed:
            score += 1.5
        if modifier_changed:
            score += 1.0
        if score > scores.get(m.phrase, 0.0):
            scores[m.phrase] = score
        order.setdefault(m.phrase, m.start)

    # Whole-image wording with no object named ("make it autumn" was caught above; "a snowy scene" here).
    global_words = set(ins_tokens) & _GLOBAL_WORDS
    picked = [p for p, s in scores.items() if s >= 1.0]
    if not any(scores[p] >= 2.0 for p in picked) and global_words:
        return ObjectSelection(
            (), "rules", f"whole-image wording ({', '.join(sorted(global_words))}) and no object named"
        )
    if not picked:
        return ObjectSelection((), "rules", "the edit names and changes no object of the source caption")
    # Tiers: named and changed, else named, else changed. Lower tiers are dropped when a higher one exists, so
    # "remove the lamp from the table" selects the lamp, not the table it stood on.
    for floor in (3.0, 2.0, 1.0):
        tier = [p for p in picked if scores[p] >= floor]
        if tier:
            picked = tier
            break
    picked.sort(key=lambda p: (-scores[p], order[p]))
    chosen = picked[:max_objects]
    chosen.sort(key=lambda p: order[p])
    return ObjectSelection(tuple(chosen), "rules", "named or changed in the source caption")


# -- the LLM backend: prompt and parsing ----------------------------------------------------------------------------

SELECTION_EXAMPLES: tuple[tuple[str, str, str, str, str], ...] = (
    # instruction, source caption, target caption, tags, answer
    (
        "replace the dog with a cat",
        "A dog lying on a rug by the fireplace.",
        "A cat lying on a rug by the fireplace.",
        "dog, rug, fireplace, floor, living room",
        "dog",
    ),
    (
        "make the car blue",
        "A red car parked on a street.",
        "A blue car parked on a street.",
        "car, street, building, sidewalk",
        "car",
    ),
    (
        "turn it into a watercolor painting",
        "A cat sitting on a windowsill.",
        "A watercolor painting of a cat sitting on a windowsill.",
        "cat, window",
        "NONE",
    ),
    (
        "add a fork next to the cake",
        "A white plate with a slice of cake.",
        "A white plate with a slice of cake and a fork.",
        "plate, cake, table",
        "NONE",
    ),
    (
        "swap the cup and the bottle for two glasses of wine",
        "A cup and a bottle on a table.",
        "Two glasses of wine on a table.",
        "cup, bottle, table",
        "cup, bottle",
    ),
)

SELECTION_INSTRUCTIONS = """You help build an image-editing dataset. Given an edit instruction, the caption of the \
image before the edit (source caption), the caption after the edit (target caption) and the tags of the objects \
recognized in the image, name the object or objects in the source image that the edit changes, so that an object \
detector can find and mask them.

Rules:
- Answer with at most 2 objects, separated by a comma. Each object is a short noun phrase taken from the source \
caption or the tags (for example: dog  or  cup, bottle).
- Answer NONE when the edit is not confined to existing objects: a change of style (painting, sketch, cartoon), a \
global change (background, scene, weather, season, time of day, lighting), adding a new object, or moving an object.
- Output only the answer on one line: no explanation, no quotes, no numbering."""


def selection_prompt(instruction: str, source_caption: str, target_caption: str, tags: Sequence[str]) -> str:
    """The user message sent to the LLM."""
    parts = [SELECTION_INSTRUCTIONS, "", "Examples:"]
    for ins, src, tgt, tg, ans in SELECTION_EXAMPLES:
        parts += [
            f"Instruction: {ins}",
            f"Source caption: {src}",
            f"Target caption: {tgt}",
            f"Tags: {tg}",
            f"Answer: {ans}",
            "",
        ]
    parts += [
        "Now the real task.",
        f"Instruction: {instruction.strip()}",
        f"Source caption: {source_caption.strip()}",
        f"Target caption: {target_caption.strip()}",
        f"Tags: {', '.join(tags) if tags else '(none)'}",
        "Answer:",
    ]
    return "\n".join(parts)


class SelectionParseError(ValueError):
    """An LLM answer that is neither NONE nor a short list of objects found in the instruction, captions or tags."""


_PREFIX = re.compile(r"^\s*(?:answer|objects?|object\(s\)|edit[_ ]object|output)\s*[:=-]\s*", re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022+]|\(?\d{1,2}[.):]|\(?[a-z][.)])\s+", re.IGNORECASE)
# Hedges and sentence frames around the answer: "I think NONE", "The object is the dog.", "The objects are: x, y".
_HEDGE = re.compile(
    r"^(?:(?:i\s+(?:think|believe|would\s+say|guess)|probably|likely|maybe|perhaps|so|therefore|thus|final\s+answer|"
    r"my\s+answer\s+is|the\s+answer\s+is|answer\s+is|it\s+is|it'?s|"
    r"the\s+(?:edited\s+|edit\s+|target\s+|selected\s+|main\s+)?objects?\s+(?:is|are|would\s+be|to\s+edit\s+(?:is|are))|"
    r"objects?\s+(?:is|are))\b\s*[:,-]?\s*)+",
    re.IGNORECASE,
)
# Whole answers that mean "no object": NONE and its spellings.
_NONE_ANSWERS = frozenset(
    {
        "none",
        "n/a",
        "na",
        "n.a",
        "nil",
        "null",
        "nothing",
        "no object",
        "no objects",
        "no specific object",
        "whole image",
        "the whole image",
        "entire image",
        "the entire image",
        "none of them",
    }
)


def _clean_line(line: str) -> str:
    line = _LIST_MARKER.sub("", line)
    line = re.sub(r"[*_`\"\u201c\u201d]+", "", line)  # markdown emphasis and quotes
    line = _PREFIX.sub("", line).strip()
    line = re.sub(r"\s*\([^)]*\)\s*", " ", line)  # a parenthetical explanation: "dog (the animal)"
    line = _HEDGE.sub("", line.strip()).strip()
    return line.strip(" \t.!:;'")


def _is_none(line: str) -> bool:
    text = " ".join(line.lower().replace("'", "").split()).strip(" .!")
    return text in _NONE_ANSWERS


def parse_selection(
    answer: str,
    max_objects: int = MAX_OBJECTS,
    max_words: int = 6,
    *,
    instruction: str | None = None,
    source_caption: str | None = None,
    tags: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """Objects from an LLM answer ('dog', 'dog, cat', 'NONE'); empty tuple for NONE.

    Read strictly: code fences, an 'Answer:' prefix, list markers, markdown, quotes and a hedge or sentence frame
    ("I think NONE", "The object is the dog.") are removed; NONE, N/A, 'none.' and similar mean NONE; a numbered or
    bulleted list gives one object per item; otherwise the first line is the answer (an explanation after it is
    ignored). An empty answer, a sentence-like object (more than `max_words` words), or NONE mixed with objects raises
    SelectionParseError. More than `max_objects` objects keeps the first `max_objects`.

    When the context is given (instruction, source caption, tags), every object must be a phrase found in it after
    light normalisation (lower case, articles and possessives dropped, plurals singularized; all its words in one of
    the texts, its last word included), so an invented phrase never reaches the grounder.
    """
    text = re.sub(r"```[A-Za-z]*", "\n", answer or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise SelectionParseError("empty answer")
    head = _clean_line(lines[0])
    listed = [ln for ln in lines if _LIST_MARKER.match(ln)]
    if len(listed) >= 2 and (_LIST_MARKER.match(lines[0]) or not head):
        parts = [_clean_line(ln) for ln in listed]  # "1. dog\n2. cat", "Objects:\n- dog\n- cat"
    else:
        if not head and len(lines) > 1:  # "Answer:" on its own line
            head = _clean_line(lines[1])
        if _is_none(head):
            return ()
        parts = re.split(r"\s*(?:,|;|\band\b|&)\s*", head)
    parts = [p for p in parts if p]
    if not parts:
        raise SelectionParseError(f"no object in answer {lines[0][:80]!r}")
    nones = [p for p in parts if _is_none(p)]
    if nones and len(nones) == len(parts):
        return ()
    if nones:
        raise SelectionParseError(f"answer {lines[0][:80]!r} mixes NONE with objects")
    objects: list[str] = []
    for part in parts:
        tokens = [t for t in words(part) if t not in _ARTICLES]
        if not tokens:
            continue
        if len(tokens) > max_words:
            raise SelectionParseError(f"object {part.strip()[:60]!r} is longer than {max_words} words")
        phrase = " ".join(tokens)
        if phrase not in objects:
            objects.append(phrase)
    if not objects:
        raise SelectionParseError(f"no object in answer {lines[0][:80]!r}")
    objects = objects[:max_objects]
    if instruction is not None or source_caption is not None or tags is not None:
        for obj in objects:
            if not phrase_in_context(obj, instruction or "", source_caption or "", tags or ()):
                raise SelectionParseError(
                    f"object {obj!r} is not in the tags, the source caption or the instruction (invented phrase)"
                )
    return tuple(objects)


def _norm_tokens(text: str) -> list[str]:
    return [_singular_any(t) for t in words(text) if t not in _ARTICLES]


def _singular_any(word: str) -> str:
    """A rough singular without a lexicon, for comparing phrases ("dogs" ~ "dog", "boxes" ~ "box")."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def phrase_in_context(phrase: str, instruction: str, source_caption: str, tags: Sequence[str]) -> bool:
    """True when every word of `phrase` (normalised) occurs in one of the tags, the source caption or the instruction,
    and its head (last word) is among them: 'red door' is in 'A red wooden door.', 'purple unicorn' is not."""
    ph = _norm_tokens(phrase)
    if not ph:
        return False
    for text in (source_caption, instruction, *tags):
        toks = set(_norm_tokens(text))
        if ph[-1] in toks and all(t in toks for t in ph):
            return True
    return False
