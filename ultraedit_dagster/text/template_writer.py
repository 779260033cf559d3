"""An offline, deterministic instruction writer: real edits from a caption and lexicons, no LLM.

It finds the objects a caption mentions (a lexicon of ~200 nouns in categories, with their determiner and adjectives),
then builds edits of the nine types by rewriting only the words the edit touches:

- Replace: an object by another of its category ("replace the dog with a cat": dog → cat, a/an fixed).
- Change Color: recolour an object (its colour adjective replaced, or a colour inserted before the noun).
- Transform Local: change an object's material ("make the door out of glass").
- Change Local: the subject's action or expression ("make the dog sit": lying → sitting), or an object's size.
- Add: a new object placed relative to one in the caption (", with a red ball in front of the dog").
- Others: remove a secondary object together with its connecting phrase ("remove the red door").
- Turn: time of day, season or weather, for outdoor scenes (replaces a time word, or appends " at night").
- Change Global: the background or the lighting.
- Transform Global: the medium of the whole image ("A watercolor painting of ...").

`write_triplets(caption, uid, global_seed, k)` picks k edits of distinct types, weighted by UltraEdit's type shares
among the types that apply, deterministically from (global seed, uid). No Dagster imports here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ultraedit_dagster.core.ids import rng_for

TEMPLATE_ID = "template-v1"

# UltraEdit free-form type shares (docs/method.md §1), used as sampling weights.
TYPE_WEIGHTS = {
    "Add": 22.7,
    "Replace": 17.1,
    "Transform Local": 14.9,
    "Change Local": 12.5,
    "Turn": 12.3,
    "Others": 8.8,
    "Change Global": 5.1,
    "Transform Global": 3.8,
    "Change Color": 2.8,
}

_CATS: dict[str, str] = {
    "animal": "dog cat puppy kitten fox rabbit horse cow sheep goat pig bird duck owl parrot pigeon lion tiger bear "
    "deer elephant giraffe zebra monkey squirrel wolf",
    "person": "man woman boy girl child person astronaut chef skier surfer player",
    "vehicle": "car bus truck bicycle motorcycle boat train taxi van scooter tractor rocket airplane helicopter "
    "sailboat ship",
    "furniture": "table chair sofa couch bench bed desk shelf stool cabinet armchair",
    "container": "cup mug glass bowl plate saucer vase bottle jar teapot basket bucket box",
    "food": "apple banana pizza cake sandwich donut espresso coffee bread cookie strawberry lemon",
    "utensil": "spoon fork knife",
    "clothing": "hat helmet coat jacket dress shirt suit scarf sneakers cap tie",
    "plant": "tree flower rose sunflower tulip bush plant cactus",
    "structure": "door window wall fence house tower bridge building porch gate tent barn lighthouse",
    "object": "clock lamp book camera tripod umbrella ball kite balloon flag guitar laptop phone candle coin teddy "
    "backpack suitcase model shuttle sign mirror bag pillow",
    "ground": "field grass gravel sand beach lake river sky mountain hill road street floor ground pad",
    "abstract": "tissue cell galaxy star vessel retina eye nose symbol letter paper mortar brick stone",
}
MULTIWORD = {
    "teddy bear": "object",
    "flight suit": "clothing",
    "space shuttle": "vehicle",
    "launch pad": "ground",
    "fire hydrant": "object",
    "blood vessel": "abstract",
    "cutting board": "object",
    "traffic light": "object",
}
OBJECTS: dict[str, str] = {w: c for c, ws in _CATS.items() for w in ws.split()}
OBJECTS.update(MULTIWORD)
IRREGULAR_PLURALS = {
    "galaxies": "galaxy",
    "people": "person",
    "children": "child",
    "men": "man",
    "women": "woman",
    "knives": "knife",
    "shelves": "shelf",
    "leaves": "leaf",
    "benches": "bench",
    "boxes": "box",
    "glasses": "glass",
    "buses": "bus",
}

REPLACEMENTS = {
    "animal": ["cat", "dog", "fox", "rabbit", "owl", "lion", "bear", "goat", "parrot", "squirrel", "tiger", "horse"],
    "person": ["man", "woman", "boy", "girl", "firefighter", "chef", "astronaut", "knight"],
    "vehicle": ["car", "bus", "bicycle", "motorcycle", "boat", "train", "tractor", "hot air balloon", "airplane"],
    "furniture": ["table", "chair", "sofa", "bench", "bed", "desk", "stool", "armchair"],
    "container": ["cup", "mug", "bowl", "plate", "vase", "bottle", "jar", "basket", "teapot"],
    "food": ["apple", "pizza", "cake", "sandwich", "donut", "cookie", "strawberry", "lemon", "croissant"],
    "utensil": ["spoon", "fork", "knife", "pair of chopsticks"],
    "clothing": ["hat", "helmet", "coat", "jacket", "dress", "shirt", "scarf", "cap"],
    "plant": ["tree", "rose", "sunflower", "tulip", "cactus", "palm tree"],
    "structure": ["door", "window", "fence", "gate", "arch"],
    "object": [
        "clock",
        "lamp",
        "book",
        "camera",
        "umbrella",
        "ball",
        "kite",
        "balloon",
        "guitar",
        "mirror",
        "candle",
        "vase",
        "teddy bear",
        "globe",
    ],
}
COLORS = [
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "pink",
    "orange",
    "white",
    "black",
    "grey",
    "brown",
    "teal",
    "turquoise",
    "golden",
]
COLOR_WORDS = set(COLORS) | {"gray", "beige", "tan", "navy", "violet", "crimson", "silver", "colorful", "colourful"}
MATERIALS = [
    ("glass", "glass"),
    ("wood", "wooden"),
    ("marble", "marble"),
    ("gold", "gold"),
    ("stone", "stone"),
    ("ice", "ice"),
    ("copper", "copper"),
    ("crystal", "crystal"),
    ("paper", "paper"),
    ("chocolate", "chocolate"),
]
MATERIAL_WORDS = {adj for _, adj in MATERIALS} | {
    "metal",
    "plastic",
    "leather",
    "brick",
    "concrete",
    "silver",
    "straw",
    "ceramic",
    "porcelain",
    "woolen",
    "steel",
    "iron",
}
SIZE_WORDS = {
    "small",
    "large",
    "big",
    "tiny",
    "little",
    "huge",
    "tall",
    "short",
    "long",
    "thin",
    "round",
    "old",
    "young",
    "new",
    "dark",
    "light",
    "bright",
    "pale",
    "smiling",
    "fluffy",
    "tabby",
    "single",
    "blurry",
    "wide",
    "narrow",
    "empty",
    "full",
    "open",
    "closed",
    "flat",
    "plain",
    "shiny",
    "white",
    "stained",
}
ADJECTIVES = COLOR_WORDS | MATERIAL_WORDS | SIZE_WORDS
NON_TRANSFERABLE = {"tabby", "smiling", "stained"}  # adjectives that only fit the replaced noun
DETERMINERS = {
    "a",
    "an",
    "the",
    "two",
    "three",
    "four",
    "some",
    "his",
    "her",
    "its",
    "their",
    "one",
    "this",
    "that",
    "several",
    "many",
}
MATERIAL_CAPABLE = {"furniture", "container", "vehicle", "structure", "object", "utensil"}
COLOR_CAPABLE = {
    "abstract",
    "animal",
    "vehicle",
    "furniture",
    "container",
    "clothing",
    "plant",
    "structure",
    "object",
    "utensil",
}
REPLACE_CAPABLE = set(REPLACEMENTS)
SIZE_CAPABLE = {"animal", "vehicle", "furniture", "container", "plant", "structure", "object", "food"}
LIVING = {"animal", "person"}

# subject actions: caption gerund -> (instruction verb phrase, new gerund)
ACTIONS = {
    "lying": [("sit up", "sitting"), ("stand", "standing")],
    "sitting": [("stand up", "standing"), ("lie down", "lying")],
    "standing": [("sit down", "sitting"), ("jump", "jumping")],
    "running": [("walk", "walking")],
    "walking": [("run", "running")],
    "sleeping": [("yawn", "yawning")],
    "smiling": [("frown", "frowning"), ("laugh", "laughing")],
    "looking": [("look away", "looking away")],
    "flying": [("land", "landing")],
    "eating": [("sleep", "sleeping")],
    "playing": [("rest", "resting")],
    "swimming": [("float", "floating")],
}

OUTDOOR_WORDS = {
    "street",
    "road",
    "field",
    "park",
    "beach",
    "sky",
    "porch",
    "yard",
    "garden",
    "lake",
    "sea",
    "ocean",
    "mountain",
    "hill",
    "grass",
    "launch",
    "pad",
    "forest",
    "city",
    "river",
    "flag",
    "outside",
    "outdoors",
    "tree",
    "trees",
    "snow",
    "tower",
    "towers",
    "bridge",
    "house",
    "sidewalk",
    "meadow",
    "desert",
    "shore",
}
TIME_WORDS = {
    "night": ["dawn", "dusk"],
    "evening": ["morning", "sunset"],
    "morning": ["evening", "sunset"],
    "sunset": ["sunrise", "midday"],
    "sunrise": ["sunset"],
    "dusk": ["dawn"],
    "dawn": ["dusk"],
    "day": ["night"],
    "noon": ["dusk"],
    "midday": ["sunset"],
    "sunny": ["rainy", "foggy"],
    "rainy": ["sunny"],
    "snowy": ["sunny"],
    "foggy": ["sunny"],
    "cloudy": ["sunny"],
    "winter": ["summer"],
    "summer": ["winter", "autumn"],
    "autumn": ["spring", "winter"],
    "spring": ["autumn"],
}
TURN_SUFFIXES = [
    ("make it night", " at night"),
    ("make it sunset", " at sunset"),
    ("make it winter with snow falling", " in winter with snow falling"),
    ("make it rain", " in the rain"),
    ("make it a foggy morning", " on a foggy morning"),
    ("make it autumn with falling leaves", " in autumn with falling leaves"),
]
BACKGROUND_PLACES = [
    "snowy mountain range",
    "sandy beach",
    "dense green forest",
    "busy city street",
    "field of sunflowers",
    "quiet library",
    "sandy desert",
]
BACKGROUND_TONES = ["bright white", "soft blue", "warm yellow", "deep green", "pale pink"]
LIGHTING = [
    ("make the lighting warm and golden", " in warm golden light"),
    ("make the lighting cold and blue", " in cold blue light"),
    ("make the lighting dim and moody", " in dim moody light"),
]
STYLES = [
    ("make it a watercolor painting", "watercolor painting"),
    ("turn it into a pencil sketch", "pencil sketch"),
    ("make it look like an oil painting", "oil painting"),
    ("render it as a pixel art image", "pixel art image"),
    ("make it a cartoon illustration", "cartoon illustration"),
    ("make it a charcoal drawing", "charcoal drawing"),
    ("make it a pop art print", "pop art print"),
]
ADD_BY_CATEGORY = {
    "animal": (["a small red ball", "a second puppy", "a small bird", "a butterfly"], ["in front of", "next to"]),
    "person": (["a small dog", "a cat", "a red balloon"], ["next to", "beside"]),
    "furniture": (["a small potted plant", "a glass of water", "an open book", "a bowl of fruit"], ["on"]),
    "container": (["a slice of lemon", "a small cookie", "a sprig of mint"], ["next to", "beside"]),
    "vehicle": (["a flock of birds", "a person waving"], ["near", "beside"]),
    "structure": (["a potted plant", "a sleeping cat", "a bicycle"], ["next to", "in front of"]),
    "object": (["a small candle", "a cup of tea", "a houseplant"], ["next to", "beside"]),
    "ground": (["a small bird", "a red kite", "a sleeping fox"], ["on"]),
    "plant": (["a butterfly", "a small bird"], ["on", "near"]),
}
CLAUSE_WORDS = {
    "behind",
    "on",
    "in",
    "with",
    "and",
    "next",
    "near",
    "under",
    "above",
    "below",
    "beside",
    "at",
    "by",
    "between",
    "from",
    "of",
    "to",
    "inside",
    "outside",
    "over",
    "against",
    "along",
}
REMOVE_CONNECTORS = ("next to", "beside", "with", "and", "near", "holding", "behind")
VOWEL_SOUND = re.compile(r"^(?:[aeio]|u(?!ni|se|sa|ro))", re.I)


@dataclass(frozen=True)
class Edit:
    edit_type: str
    instruction: str
    target: str


@dataclass(frozen=True)
class NounPhrase:
    start: int  # char span of the whole phrase (determiner .. noun)
    end: int
    det: str | None
    adjs: tuple[str, ...]
    noun: str  # as written in the caption
    head: str  # lexicon key (singular)
    category: str
    plural: bool


_TOKEN = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")


def _article(word: str) -> str:
    return "an" if VOWEL_SOUND.match(word) else "a"


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _singular(word: str) -> tuple[str, bool]:
    w = word.lower()
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w], True
    if w in OBJECTS:
        return w, False
    if w.endswith("ies") and w[:-3] + "y" in OBJECTS:
        return w[:-3] + "y", True
    if w.endswith("es") and w[:-2] in OBJECTS:
        return w[:-2], True
    if w.endswith("s") and w[:-1] in OBJECTS:
        return w[:-1], True
    return w, False


def find_noun_phrases(caption: str) -> list[NounPhrase]:
    """Object mentions in reading order (first mention of each head only)."""
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(caption)]
    out: list[NounPhrase] = []
    seen: set[str] = set()
    i = 0
    while i < len(toks):
        head, plural, span = None, False, 1
        two = f"{toks[i][0].lower()} {toks[i + 1][0].lower()}" if i + 1 < len(toks) else ""
        if two in MULTIWORD or two[:-1] in MULTIWORD and two.endswith("s"):
            head, span, plural = (two, 2, False) if two in MULTIWORD else (two[:-1], 2, True)
        else:
            sing, plural = _singular(toks[i][0])
            head = sing if sing in OBJECTS else None
        k = i + span
        if head is not None and k < len(toks) and toks[k][1] == toks[k - 1][2] + 1 and not plural:
            nxt = f"{toks[k][0].lower()} {toks[k + 1][0].lower()}" if k + 1 < len(toks) else ""
            if _singular(toks[k][0])[0] in OBJECTS or nxt in MULTIWORD:
                head = None  # a noun modifying the next noun ("coffee cup", "shuttle model")
        if head is None or head in seen:
            i += span
            continue
        j = i - 1
        adjs: list[str] = []
        while (
            j >= 0
            and toks[j][0].lower() not in DETERMINERS
            and (toks[j][0].lower() in ADJECTIVES or (toks[j][0].lower() in OBJECTS and toks[j][0].lower() not in seen))
        ):
            adjs.insert(0, toks[j][0].lower())
            j -= 1
        det = toks[j][0] if j >= 0 and toks[j][0].lower() in DETERMINERS else None
        start = toks[j][1] if det else (toks[j + 1][1] if adjs else toks[i][1])
        end = toks[i + span - 1][2]
        noun = caption[toks[i][1] : end]
        out.append(NounPhrase(start, end, det, tuple(adjs), noun, head, OBJECTS[head], plural))
        seen.add(head)
        i += span
    return out


def _render(np_: NounPhrase, adjs: list[str], noun: str, at_start: bool) -> str:
    det = np_.det
    words = adjs + [noun]
    if det and det.lower() in ("a", "an"):
        det = _article(words[0])
    text = " ".join(([det] if det else []) + words)
    return text[:1].upper() + text[1:] if at_start else text


def _insert_pos(adjs: list[str]) -> int:
    """Where a colour or material adjective goes: before material words and noun modifiers, after the rest."""
    for k, a in enumerate(adjs):
        if a in MATERIAL_WORDS or (a in OBJECTS and a not in COLOR_WORDS):
            return k
    return len(adjs)


def _splice(caption: str, np_: NounPhrase, new_text: str) -> str:
    if np_.det and np_.det[:1].isupper() and np_.start == 0:
        new_text = new_text[:1].upper() + new_text[1:]
    return caption[: np_.start] + new_text + caption[np_.end :]


def _base(caption: str) -> str:
    return caption.strip().rstrip(".!?;:, ")


def _lower_first(text: str) -> str:
    return text if len(text) > 1 and text[1].isupper() else text[:1].lower() + text[1:]


# -- edit builders: each returns candidate edits for one type ------------------------------------------------------


def _replace(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps:
        if np_.category not in REPLACE_CAPABLE:
            continue
        for new in REPLACEMENTS[np_.category]:
            if new == np_.head:
                continue
            noun = _plural(new) if np_.plural else new
            kept = [a for a in np_.adjs if a in ADJECTIVES and a not in NON_TRANSFERABLE]
            target = _splice(caption, np_, _render(np_, kept, noun, np_.start == 0))
            ins = f"replace the {np_.noun.lower()} with {noun if np_.plural else _article(new) + ' ' + new}"
            out.append(Edit("Replace", ins, target))
    return out


def _recolor(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps:
        if np_.category not in COLOR_CAPABLE:
            continue
        old = [a for a in np_.adjs if a in COLOR_WORDS or a in {"tabby", "dark", "light", "pale"}]
        for color in COLORS:
            if color in np_.adjs:
                continue
            if old:
                adjs = [color if a == old[0] else a for a in np_.adjs if a not in old[1:]]
            else:
                adjs = list(np_.adjs)
                adjs.insert(_insert_pos(adjs), color)
            target = _splice(caption, np_, _render(np_, adjs, np_.noun, np_.start == 0))
            verb = "paint" if np_.category in {"structure", "vehicle", "furniture"} else "make"
            out.append(Edit("Change Color", f"{verb} the {np_.noun.lower()} {color}", target))
    return out


def _material(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps:
        if np_.category not in MATERIAL_CAPABLE:
            continue
        for noun_m, adj_m in MATERIALS:
            if adj_m in np_.adjs or adj_m == np_.head:
                continue
            adjs = [a for a in np_.adjs if a not in MATERIAL_WORDS]
            adjs.insert(_insert_pos(adjs), adj_m)
            target = _splice(caption, np_, _render(np_, adjs, np_.noun, np_.start == 0))
            out.append(Edit("Transform Local", f"make the {np_.noun.lower()} out of {noun_m}", target))
    return out


def _change_local(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    living = [n for n in nps if n.category in LIVING]
    if living:
        subj = living[0]
        for m in _TOKEN.finditer(caption[subj.end :]):
            word = m.group(0).lower()
            if word in ACTIONS:
                a, b = subj.end + m.start(), subj.end + m.end()
                for verb, gerund in ACTIONS[word]:
                    out.append(
                        Edit("Change Local", f"make the {subj.noun.lower()} {verb}", caption[:a] + gerund + caption[b:])
                    )
                break
            if m.start() > 40:
                break
        if "smiling" in subj.adjs:
            for verb, adj in (("frown", "frowning"), ("laugh", "laughing")):
                adjs = [adj if a == "smiling" else a for a in subj.adjs]
                out.append(
                    Edit(
                        "Change Local",
                        f"make the {subj.noun.lower()} {verb}",
                        _splice(caption, subj, _render(subj, adjs, subj.noun, subj.start == 0)),
                    )
                )
    for np_ in nps:
        if np_.category not in SIZE_CAPABLE or np_.head in {"espresso", "coffee", "sky"}:
            continue
        sizes = {
            "small": ("make the {n} bigger", "big"),
            "little": ("make the {n} bigger", "big"),
            "tiny": ("make the {n} larger", "large"),
            "big": ("make the {n} smaller", "small"),
            "large": ("make the {n} smaller", "small"),
            "tall": ("make the {n} shorter", "short"),
        }
        old = [a for a in np_.adjs if a in sizes]
        ins, new = sizes[old[0]] if old else ("make the {n} bigger", "big")
        adjs = [new if a == (old[0] if old else None) else a for a in np_.adjs] if old else [new] + list(np_.adjs)
        out.append(
            Edit(
                "Change Local",
                ins.format(n=np_.noun.lower()),
                _splice(caption, np_, _render(np_, adjs, np_.noun, np_.start == 0)),
            )
        )
    return out


def _add(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps:
        if np_.category not in ADD_BY_CATEGORY:
            continue
        things, relations = ADD_BY_CATEGORY[np_.category]
        if np_.head == "sky":
            things, relations = ["a flock of birds", "a hot air balloon", "a full moon"], ["in"]
        for thing in things:
            if np_.head in thing:
                continue
            for rel in relations:
                phrase = f"{thing} {rel} the {np_.noun.lower()}"
                out.append(Edit("Add", f"add {phrase}", f"{_base(caption)}, with {phrase}."))
    return out


def _remove(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps[1:]:
        before = caption[: np_.start].rstrip()
        for conn in REMOVE_CONNECTORS:
            if before.lower().endswith(" " + conn):
                cut = len(before) - len(conn)
                cut_text = caption[:cut].rstrip(" ,")
                # keep what follows the phrase, e.g. "... and a model behind her" -> "... behind her"
                rest = caption[np_.end :]
                nxt = _TOKEN.match(rest.lstrip()) if rest[:1] == " " else None
                if rest[:1] not in ("", ".", ",", " ", "!", "?") or (nxt and nxt.group(0).lower() not in CLAUSE_WORDS):
                    break
                target = (cut_text + rest).strip()
                if target.rstrip(".") != cut_text.rstrip(".") or len(cut_text) > 10:
                    named = " ".join([a for a in np_.adjs if a in COLOR_WORDS] + [np_.noun.lower()])
                    out.append(Edit("Others", f"remove the {named}", target))
                break
    return out


def _turn(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    words = {w.lower() for w in _TOKEN.findall(caption)}
    out = []
    for m in _TOKEN.finditer(caption):
        w = m.group(0).lower()
        if w in TIME_WORDS:
            for new in TIME_WORDS[w]:
                out.append(
                    Edit("Turn", f"make it {new} instead of {w}", caption[: m.start()] + new + caption[m.end() :])
                )
            return out
    if words & OUTDOOR_WORDS:
        base = _base(caption)
        out = [Edit("Turn", ins, f"{base}{suffix}.") for ins, suffix in TURN_SUFFIXES]
    return out


def _change_global(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    m = re.search(r"\b(a|an|the)\s+((?:[a-z-]+\s+){0,3}?)background\b", caption, re.I)
    if m:
        for tone in BACKGROUND_TONES:
            new = f"{_article(tone) if m.group(1).lower() in ('a', 'an') else m.group(1)} {tone} background"
            out.append(
                Edit("Change Global", f"make the background {tone}", caption[: m.start()] + new + caption[m.end() :])
            )
        return out
    words = {w.lower() for w in _TOKEN.findall(caption)}
    base = _base(caption)
    if nps and any(n.category in LIVING | {"vehicle", "structure", "furniture", "object"} for n in nps):
        for place in BACKGROUND_PLACES:
            if not set(place.split()) & words:
                art = _article(place)
                out.append(
                    Edit(
                        "Change Global",
                        f"change the background to {art} {place}",
                        f"{base}, with {art} {place} in the background.",
                    )
                )
    out += [Edit("Change Global", ins, f"{base}{suffix}.") for ins, suffix in LIGHTING]
    return out


_MEDIUM = re.compile(r"^(?:an?|the)\s+(?:[a-z-]+\s+){0,3}?(?:photo|photograph|picture|image|shot)\s+of\s+", re.I)
_CLOSEUP = re.compile(r"^an?\s+close-up\s+of\s+", re.I)


def _transform_global(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    text = caption.strip()
    for ins, medium in STYLES:
        if _CLOSEUP.match(text):
            target = f"A close-up {medium} of " + text[_CLOSEUP.match(text).end() :]
        elif _MEDIUM.match(text):
            target = f"{_article(medium).capitalize()} {medium} of " + text[_MEDIUM.match(text).end() :]
        else:
            target = f"{_article(medium).capitalize()} {medium} of {_lower_first(text)}"
        out.append(Edit("Transform Global", ins, target))
    return out


BUILDERS = {
    "Add": _add,
    "Replace": _replace,
    "Transform Local": _material,
    "Change Local": _change_local,
    "Turn": _turn,
    "Others": _remove,
    "Change Global": _change_global,
    "Transform Global": _transform_global,
    "Change Color": _recolor,
}


def candidate_edits(caption: str) -> dict[str, list[Edit]]:
    """Every edit the lexicons allow for this caption, by edit type (types with none are absent)."""
    nps = find_noun_phrases(caption)
    out = {}
    for edit_type, build in BUILDERS.items():
        edits = [e for e in build(caption, nps) if e.target.strip() and _norm(e.target) != _norm(caption)]
        if edits:
            out[edit_type] = edits
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!? ")


def write_triplets(caption: str, uid: str, global_seed: int = 0, k: int = 3) -> list[Edit]:
    """k edits of distinct types for one caption, chosen deterministically from (global seed, uid)."""
    cands = candidate_edits(caption)
    if not cands:
        return []
    rng = rng_for(global_seed, uid, "template_writer")
    types = sorted(cands)
    weights = [TYPE_WEIGHTS[t] for t in types]
    chosen: list[str] = []
    while types and len(chosen) < k:
        total = sum(weights)
        r = rng.random() * total
        idx = 0
        while idx < len(types) - 1 and r >= weights[idx]:
            r -= weights[idx]
            idx += 1
        chosen.append(types.pop(idx))
        weights.pop(idx)
    return [cands[t][int(rng.integers(len(cands[t])))] for t in chosen]
