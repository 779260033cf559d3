"""An offline, deterministic instruction writer: real edits from a caption and lexicons, no LLM.

It finds the objects a caption mentions (a lexicon of ~200 nouns in categories, with their determiner and adjectives),
then builds edits of the nine types by rewriting only the words the edit touches:

- Replace: an object by another of its category ("replace the dog with a cat": dog → cat, a/an fixed).
- Change Color: recolour an object (its colour adjective replaced, or a colour inserted before the noun).
- Transform Local: change an object's material ("make the door out of glass").
- Change Local: the subject's action or expression ("make the dog sit": lying → sitting), or an object's size.
- Add: a new object placed relative to one in the caption (", with a red ball in front of the dog").
- Others: change the text written in the image ('change the text "STOP" to "OPEN"'), or remove a secondary object
  together with its connecting phrase ("remove the red door").
- Turn: time of day, season or weather, for outdoor scenes (replaces a time word, or appends " at night").
- Change Global: the background or the lighting.
- Transform Global: the medium of the whole image ("A watercolor painting of ...").

Quality rules from a curator's review of 100 unseen captions (issue 17; `tests/text/data/template_review.tsv`):
a noun phrase runs from its determiner over adjectives and noun modifiers ("a park bench", "a golden retriever
puppy"), so inserted words go before the modifiers and a Replace drops a breed or kind with the old noun; a lexicon
noun before another noun ("bus stop", "lamp post") or a gerund ("children building a sandcastle") is no object;
objects are replaced only within groups of things used the same way (cup / mug / glass, book / magazine), never by a
hypernym or synonym (sailboat -> boat), with irregular plurals (men, children); only intransitive actions are swapped
("eating a carrot" stays); materials and colours are kept plausible per kind; text written in the image (capitals or
quotes after "says", "the word", ...) gets text edits (Others) and is never read as objects or times of day.

`write_triplets(caption, uid, global_seed, k)` picks k edits of distinct types, weighted by UltraEdit's type shares
among the types that apply, deterministically from (global seed, uid). No Dagster imports here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ultraedit_dagster.core.ids import rng_for

TEMPLATE_ID = "template-v2"  # v2: issue 17 review (noun phrases, replacement groups, text edits)

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
    "container": "cup mug glass bowl plate saucer vase bottle jar teapot basket bucket box tray",
    "food": "apple banana pizza cake sandwich donut espresso coffee bread cookie strawberry lemon croissant "
    "hamburger burger cupcake muffin pear peach",
    "utensil": "spoon fork knife",
    "clothing": "hat helmet coat jacket dress shirt suit scarf sneakers cap tie",
    "plant": "tree flower rose sunflower tulip bush plant cactus",
    "structure": "door window wall fence house tower bridge building porch gate tent barn lighthouse",
    "object": "clock lamp book camera tripod umbrella ball kite balloon flag guitar laptop phone candle coin teddy "
    "backpack suitcase model shuttle sign mirror bag pillow mailbox violin newspaper magazine lantern",
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
    "license plate": "object",
    "number plate": "object",
    "hot dog": "food",
    "sea lion": "animal",
    "guinea pig": "animal",
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
    "wolves": "wolf",
    "mice": "mouse",
    "geese": "goose",
    "sheep": "sheep",
    "deer": "deer",
    "fish": "fish",
}
# plural -> singular above; singular -> plural for the irregular ones
IRREGULAR_SINGULARS = {v: k for k, v in IRREGULAR_PLURALS.items()}

# What an object can sensibly be replaced by: members of its own group (things used, held or placed the same way),
# so "reading a book" never becomes "reading a vase" and "a cup of coffee" never "a jar of coffee". A head in no
# group gets no Replace edit. Hypernyms and synonyms are excluded (sailboat -> boat, sofa -> couch, puppy -> dog).
REPLACE_GROUPS: list[list[str]] = [
    ["dog", "cat", "rabbit", "fox", "raccoon", "squirrel"],
    ["goat", "sheep", "pig"],
    ["horse", "donkey", "zebra", "camel"],
    ["cow", "buffalo", "ox"],
    ["deer", "moose", "elk"],
    ["bear", "lion", "tiger", "wolf"],
    ["elephant", "giraffe", "rhinoceros"],
    ["puppy", "kitten"],
    ["parrot", "owl", "pigeon", "crow", "seagull"],
    ["duck", "swan", "goose"],
    ["bird", "squirrel"],
    ["man", "woman"],
    ["boy", "girl"],
    ["car", "bus", "truck", "van", "taxi", "tractor"],
    ["bicycle", "motorcycle", "scooter"],
    ["sailboat", "rowboat", "canoe", "kayak", "yacht"],
    ["boat", "raft", "ferry"],
    ["ship", "ferry"],
    ["airplane", "helicopter", "hot air balloon"],
    ["train", "tram"],
    ["table", "desk"],
    ["chair", "stool", "armchair", "bench"],
    ["sofa", "armchair", "bench"],
    ["cup", "mug", "glass"],
    ["plate", "tray", "platter"],
    ["bowl", "dish"],
    ["jar", "bottle"],
    ["basket", "box"],
    ["vase", "jug"],
    ["teapot", "kettle"],
    ["apple", "pear", "peach", "lemon", "orange"],
    ["cake", "pie", "cheesecake"],
    ["donut", "cookie", "cupcake", "muffin", "croissant"],
    ["pizza", "sandwich", "hamburger", "taco"],
    ["spoon", "fork", "knife", "pair of chopsticks"],
    ["hat", "cap", "helmet", "beanie"],
    ["coat", "jacket", "sweater", "raincoat"],
    ["shirt", "sweater", "t-shirt"],
    ["scarf", "shawl"],
    ["sneakers", "boots", "sandals"],
    ["rose", "sunflower", "tulip", "daisy", "lily"],
    ["bush", "cactus", "fern"],
    ["door", "gate"],
    ["fence", "hedge", "stone wall"],
    ["house", "cabin", "cottage", "barn"],
    ["tower", "lighthouse"],
    ["tent", "camper van"],
    ["clock", "mirror", "painting"],
    ["lamp", "candle", "lantern"],
    ["book", "newspaper", "magazine"],
    ["camera", "phone"],
    ["umbrella", "parasol"],
    ["ball", "frisbee"],
    ["kite", "balloon"],
    ["guitar", "violin", "ukulele"],
    ["laptop", "typewriter", "tablet"],
    ["teddy bear", "toy robot", "doll"],
    ["backpack", "suitcase", "handbag"],
    ["pillow", "cushion"],
]
SYNONYMS = [{"taxi", "car"}, {"sofa", "couch"}, {"burger", "hamburger"}, {"ship", "ferry"}, {"boat", "ferry"}]
# replacements that a caption rules out: a bearded woman is not what "replace the man with a woman" means
GENDERED = {
    "beard", "bearded", "mustache", "moustache", "pregnant", "bride", "groom", "dress", "lipstick", "tie", "suit",
    "ponytail", "braids", "pigtails", "bikini", "her", "his", "she", "he", "herself", "himself",
}  # fmt: skip
# animals whose colouring is what they are (a black zebra is no recolouring)
NO_RECOLOR = {"zebra", "tiger", "giraffe", "panda", "leopard", "cheetah"}


def replacements_for(head: str) -> list[str]:
    out: list[str] = []
    for group in REPLACE_GROUPS:
        if head in group:
            out += [w for w in group if w != head and w not in out]
    return [
        w
        for w in out
        if not any(head in syn and w in syn for syn in SYNONYMS) and head not in w.split() and w not in head
    ]


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
ANIMAL_COLORS = ["black", "white", "brown", "grey", "golden"]
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
# materials that make a sensible object of each kind (no paper sofa, no ice cutting board)
MATERIALS_BY_CATEGORY = {
    "furniture": {"glass", "wood", "marble", "stone", "gold"},
    "container": {"glass", "wood", "gold", "copper", "crystal", "stone"},
    "vehicle": {"gold", "wood", "glass", "copper", "stone"},
    "structure": {"glass", "wood", "stone", "gold", "ice", "marble"},
    "object": {"glass", "wood", "gold", "copper", "crystal", "marble", "stone"},
    "utensil": {"wood", "gold", "glass", "copper"},
}
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
    "cardboard",
    "rubber",
    "wicker",
    "bamboo",
    "clay",
    "velvet",
    "denim",
    "cotton",
    "silk",
    "wool",
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
SIZE_CAPABLE = {"animal", "vehicle", "furniture", "container", "plant", "structure", "object", "food"}
LIVING = {"animal", "person"}

# subject actions: caption gerund -> (instruction verb phrase, new gerund)
# large animals do not sit, birds do not stand up: their own action swaps
NO_SIT = {"horse", "cow", "zebra", "deer", "donkey", "elephant", "giraffe", "goat", "sheep", "pig", "rhinoceros"}
BIRDS = {"bird", "parrot", "owl", "pigeon", "duck", "crow", "seagull", "swan", "goose"}
NO_SIT_ACTIONS = {
    "lying": [("stand up", "standing")],
    "sitting": [("stand up", "standing")],
    "standing": [("lie down", "lying")],
}
ACTIONS = {
    "lying": [("sit up", "sitting"), ("stand", "standing")],
    "sitting": [("stand up", "standing"), ("lie down", "lying")],
    "standing": [("sit down", "sitting"), ("jump", "jumping")],
    "running": [("walk", "walking")],
    "walking": [("run", "running")],
    "sleeping": [("wake up", "waking up")],
    "smiling": [("frown", "frowning"), ("laugh", "laughing")],
    "flying": [("land", "landing")],
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
    "animal": (["a small bird", "a butterfly"], ["next to"]),
    "person": (["a small dog", "a cat", "a red balloon"], ["next to", "beside"]),
    "furniture": (["a small potted plant", "a glass of water", "an open book", "a bowl of fruit"], ["on"]),
    "container": (["a folded napkin", "a small candle"], ["next to"]),
    "vehicle": (["a cyclist", "a person waving"], ["next to"]),
    "structure": (["a potted plant", "a sleeping cat", "a bicycle"], ["next to", "in front of"]),
    "object": (["a small candle", "a cup of tea", "a houseplant"], ["next to", "beside"]),
    "ground": (["a small bird", "a sleeping fox"], ["on"]),
    "plant": (["a butterfly", "a small bird"], ["on", "near"]),
}
# heads whose neighbours differ from their category's (a cyclist on a road, a cushion on a sofa)
ADD_BY_HEAD = {
    **{h: (["a small red ball", "a butterfly"], ["in front of", "next to"]) for h in ("dog", "puppy", "cat", "kitten")},
    **{h: (["a cushion", "a sleeping cat", "a folded blanket"], ["on"]) for h in ("sofa", "couch", "armchair", "bed")},
    **{h: (["a plate", "a bowl", "a fork"], ["next to"]) for h in ("plate", "bowl", "tray", "saucer")},
    **{h: (["a slice of lemon", "a small cookie", "a sprig of mint"], ["next to"]) for h in ("cup", "mug", "glass")},
    "bench": (["a newspaper", "a sleeping cat"], ["on"]),
    "chair": (["a cushion", "a folded jacket"], ["on"]),
    "road": (["a cyclist", "a parked car"], ["on"]),
    "street": (["a cyclist", "a parked car"], ["on"]),
    "beach": (["a beach umbrella", "a sandcastle"], ["on"]),
    "sand": (["a seashell", "a sandcastle"], ["on"]),
    "sky": (["a flock of birds", "a hot air balloon", "a full moon"], ["in"]),
    "lake": (["a small boat", "a pair of swans"], ["on"]),
    "river": (["a small boat", "a pair of ducks"], ["on"]),
    "boat": (["a flock of seagulls"], ["above"]),
    "sailboat": (["a flock of seagulls"], ["above"]),
    "ship": (["a flock of seagulls"], ["above"]),
    "window": (["a potted plant", "a sleeping cat"], ["in front of"]),
    "wall": (["a framed picture", "a clock"], ["on"]),
    **{h: ([], []) for h in ("bridge", "tower", "lighthouse", "building", "barn", "church", "launch pad")},
}
TABLETOP_OBJECTS = set(
    """backpack bag book camera candle clock lamp lantern laptop magazine newspaper phone pillow suitcase teddy
    teddy bear""".split()
)
# place words: a caption that names where it is gets no appended background ("in a museum, with a forest ...")
SCENE_PLACES = set(
    """alley balcony beach bed bedroom bus cafe canal church city classroom counter crib desert desk dock driveway
    field floor forest garden grass hillside kitchen lake library lot market meadow mountain museum ocean office
    park pond porch restaurant river road room sand savanna school sea shelf shop sidewalk sky slope sofa stage
    station store stove street studio table train village wall wedding yard""".split()
)
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
    mods: tuple[str, ...] = ()  # words between the adjectives and the noun that are no adjective we know ("park" bench)
    quantity: bool = False  # the phrase follows "a slice of" / "a piece of" ...: size and material do not apply
    followed_by_of: bool = False  # "a cup of coffee", "a ball of yarn"
    closed_left: bool = False  # a participle right before the noun without a determiner ("parked cars"): no insertion


_TOKEN = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")
# text written in the image: a quoted span, or a run of capitalised words / numbers ("STOP", "HAPPY BIRTHDAY", "42")
_TEXT_SPAN = re.compile(r"\"[^\"]+\"|“[^”]+”|\b(?:[A-Z][A-Z'&]+|\d+)(?:\s+(?:[A-Z][A-Z'&]+|\d+))*\b")
_TEXT_CUE = re.compile(
    r"(?:says|say|saying|reads|reading|read|word|words|title|number|letters|name|text|written|printed)\s*:?\s*$", re.I
)
# words that follow a noun without being a second noun of a compound ("a lemon cut in half", "a dog sits")
_NOT_NOUNS = {
    "is", "are", "was", "were", "cut", "made", "set", "hung", "lit", "left", "held", "laid", "worn", "seen", "shown",
    "sat", "stood", "put", "full", "alone", "nearby", "together", "up", "down", "out", "away", "there", "here",
    "that", "which", "who", "while", "as", "than", "or", "but", "so", "too", "very", "again", "only", "just",
}  # fmt: skip
INVARIANT_PLURALS = {"sheep", "deer", "fish"}
QUANTITY_WORDS = {"slice", "slices", "piece", "pieces", "bite", "half", "scoop", "spoonful", "crumb"}


def _article(word: str) -> str:
    return "an" if VOWEL_SOUND.match(word) else "a"


def _plural(noun: str) -> str:
    if noun in IRREGULAR_SINGULARS:
        return IRREGULAR_SINGULARS[noun]
    if " " in noun:  # "pair of chopsticks" -> "pairs of chopsticks", "teddy bear" -> "teddy bears"
        first, rest = noun.split(" ", 1)
        return f"{_plural(first)} {rest}" if rest.startswith("of ") else f"{first} {_plural(rest)}"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _singular(word: str) -> tuple[str, bool]:
    w = word.lower()
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w], IRREGULAR_PLURALS[w] != w
    if w in OBJECTS:
        return w, False
    if w.endswith("ies") and w[:-3] + "y" in OBJECTS:
        return w[:-3] + "y", True
    if w.endswith("es") and w[:-2] in OBJECTS:
        return w[:-2], True
    if w.endswith("s") and w[:-1] in OBJECTS:
        return w[:-1], True
    return w, False


def text_spans(caption: str) -> list[tuple[int, int, str]]:
    """Text written in the image that the caption quotes: (start, end, text) of each span after a cue word."""
    out = []
    for m in _TEXT_SPAN.finditer(caption):
        quoted = m.group(0)[:1] in '"“'
        if quoted or _TEXT_CUE.search(caption[: m.start()]):
            out.append((m.start(), m.end(), m.group(0)))
    return out


def _mask_text(caption: str) -> str:
    """The caption with its written text blanked out (same length), so no edit reads words of the text as objects."""
    for a, b, _ in text_spans(caption):
        caption = caption[:a] + "#" * (b - a) + caption[b:]
    return caption


def _looks_like_noun(tok: str) -> bool:
    """A word after a lexicon noun that makes it a modifier ("bus stop", "lamp post"): no verb / function word."""
    t = tok.lower()
    if t in OBJECTS or t in MULTIWORD:
        return True
    if t in _NOT_NOUNS or t in CLAUSE_WORDS or t in DETERMINERS or t in ADJECTIVES:
        return False
    if t.endswith(("ing", "ed", "ly")) or (t.endswith("s") and not t.endswith("ss")):
        return False
    return tok[:1].islower() and len(t) > 2


def _modifier_like(tok: str) -> bool:
    """A word between a determiner and a noun that is no adjective we know: a noun ("park" bench), a participle
    ("stuffed" rabbit, "potted" plant) or a gerund ("sleeping" cat). Only trusted when a determiner precedes."""
    t = tok.lower()
    if t in _NOT_NOUNS or t in CLAUSE_WORDS or t in DETERMINERS:
        return False
    return len(t) > 2 and (tok[:1].islower() or tok[1:].islower())


def find_noun_phrases(caption: str) -> list[NounPhrase]:
    """Object mentions in reading order (first mention of each head only); written text is ignored."""
    masked = _mask_text(caption)
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(masked)]
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
        adjacent = k < len(toks) and toks[k][1] == toks[k - 1][2] + 1
        if head is not None and adjacent and _looks_like_noun(toks[k][0]):
            head = None  # a noun modifying the next noun ("coffee cup", "bus stop", "lamp post")
        if head is not None and head.endswith("ing") and adjacent and toks[k][0].lower() in DETERMINERS:
            head = None  # a verb, not a noun ("children building a sandcastle")
        if head is None or head in seen:
            i += span
            continue
        # walk back over adjectives and noun modifiers to the determiner
        j = i - 1
        items: list[tuple[str, str]] = []  # (word, "adj" | "mod"), nearest the noun first
        while j >= 0 and toks[j][0].lower() not in DETERMINERS and toks[j][2] + 1 == toks[j + 1][1]:
            w = toks[j][0].lower()
            has_mod = any(k == "mod" for _, k in items)
            if items and items[-1][1] == "mod" and items[-1][0].endswith(("ing", "ed")) and w not in ADJECTIVES:
                break  # only a determiner or an adjective comes before "sleeping" in "a sleeping cat"
            if w in OBJECTS and (w in seen or has_mod):
                break  # another noun of the caption ("a woman feeding ducks")
            if w in ADJECTIVES or (w in OBJECTS and w not in seen and not has_mod):
                items.append((w, "adj"))
            elif (
                _modifier_like(toks[j][0])
                and sum(k == "mod" for _, k in items) < 2
                and not (items and items[-1][1] == "adj")
            ):
                items.append((toks[j][0] if j > 0 else w, "mod"))  # "an American flag" keeps its capital
            else:
                break
            j -= 1
        det = toks[j][0] if j >= 0 and toks[j][0].lower() in DETERMINERS and toks[j][2] + 1 == toks[j + 1][1] else None
        mods_ = [w for w, k in items if k == "mod"]
        closed_left = False
        if mods_:
            verbish = any(w.endswith(("ing", "ed")) for w in mods_)
            stop_ok = det is not None or (not verbish and (j < 0 or toks[j][0].lower() in CLAUSE_WORDS))
            if not stop_ok:
                # modifiers are only trusted up to a determiner or a preposition ("a park bench", "with grey gravel
                # stones"), not after a verb or a noun ("a man feeding pigeons", "a dog chasing birds")
                first_mod = next(n for n, (_, k) in enumerate(items) if k == "mod")
                if first_mod == 0 and not items[0][0].endswith(("ing", "ed")):
                    # an unknown word right before the noun that is no verb may make it another thing ("selling hot
                    # dogs"): leave this mention alone
                    seen.add(head)
                    i += span
                    continue
                # "a row of parked cars": a new adjective cannot go between the participle and the noun
                closed_left = first_mod == 0 and items[0][0].endswith("ed")
                items = items[:first_mod]
                det = None
                j = i - 1 - len(items)
        adjs = [w for w, k in reversed(items) if k == "adj"]
        mods = [w for w, k in reversed(items) if k == "mod"]
        first_tok = j + 1
        if det is None and first_tok > 0 and toks[first_tok - 1][2] + 1 == toks[first_tok][1]:
            prev = toks[first_tok - 1][0]
            if _looks_like_noun(prev) and prev.lower() not in OBJECTS:
                # "space shuttle model": an unknown word right before the phrase is part of the name; leave it alone
                seen.add(head)
                i += span
                continue
        start = toks[j][1] if det else toks[first_tok][1]
        end = toks[i + span - 1][2]
        noun = caption[toks[i][1] : end]
        before = masked[: toks[i][1]].lower()
        quantity = re.search(rf"\b(?:{'|'.join(QUANTITY_WORDS)}) of (?:[a-z-]+ ){{0,2}}$", before) is not None
        followed_by_of = masked[end:].lower().startswith(" of ")
        out.append(
            NounPhrase(
                start,
                end,
                det,
                tuple(adjs),
                noun,
                head,
                OBJECTS[head],
                plural,
                tuple(mods),
                quantity,
                followed_by_of,
                closed_left,
            )
        )
        seen.add(head)
        i += span
    return out


def _render(np_: NounPhrase, adjs: list[str], noun: str, at_start: bool, mods: tuple[str, ...] | None = None) -> str:
    det = np_.det
    words = adjs + list(np_.mods if mods is None else mods) + [noun]
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
    if np_.start == 0:
        new_text = new_text[:1].upper() + new_text[1:]
    return caption[: np_.start] + new_text + caption[np_.end :]


def _base(caption: str) -> str:
    return caption.strip().rstrip(".!?;:, ")


def _lower_first(text: str) -> str:
    return text if len(text) > 1 and text[1].isupper() else text[:1].lower() + text[1:]


def _fixed_compound(np_: NounPhrase) -> bool:
    """'stained glass', 'cast iron': the adjectives name a kind of object, so no colour or material is changed."""
    return ("stained" in np_.adjs and "glass" in np_.adjs) or ("cast" in np_.mods and "iron" in np_.adjs)


def _is_container_phrase(np_: NounPhrase) -> bool:
    """'a ball of yarn', 'a herd of ...': the noun before 'of' is a measure of something else; only true containers
    ('a cup of coffee') take object edits."""
    return np_.followed_by_of and np_.category != "container"


# -- edit builders: each returns candidate edits for one type ------------------------------------------------------


def _replace(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    words = {w.lower() for w in _TOKEN.findall(_mask_text(caption))}
    for np_ in nps:
        if _is_container_phrase(np_) or np_.quantity:
            continue
        for new in replacements_for(np_.head):
            if np_.category == "person" and words & GENDERED:
                continue
            plural = np_.plural or (
                np_.head in INVARIANT_PLURALS and (np_.det or "").lower() not in ("a", "an", "one", "this", "that")
            )
            noun = _plural(new) if plural else new
            # a noun modifier belongs to the old noun ("golden retriever puppy", "delivery truck"): drop it, and the
            # adjectives before it, rather than write "a golden retriever lion"
            keep_mods = np_.category == "person"  # "a teenage boy" -> "a teenage girl"; a breed or kind is dropped
            kept = (
                [a for a in np_.adjs if a in ADJECTIVES and a not in NON_TRANSFERABLE and a not in OBJECTS]
                if not np_.mods or keep_mods
                else []
            )
            target = _splice(caption, np_, _render(np_, kept, noun, np_.start == 0, mods=None if keep_mods else ()))
            ins = f"replace the {np_.noun.lower()} with {noun if plural else _article(new) + ' ' + new}"
            out.append(Edit("Replace", ins, target))
    return out


def _recolor(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps:
        if (
            np_.category not in COLOR_CAPABLE
            or _is_container_phrase(np_)
            or np_.head in NO_RECOLOR
            or _fixed_compound(np_)
            or np_.closed_left
        ):
            continue
        if np_.category == "animal" and np_.mods:
            continue  # a breed ("golden retriever puppy") has its colours
        old = [a for a in np_.adjs if a in COLOR_WORDS or a in {"tabby", "dark", "light", "pale", "gold", "bronze"}]
        palette = ANIMAL_COLORS if np_.category == "animal" else COLORS
        for color in palette:
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
        if np_.category not in MATERIAL_CAPABLE or np_.quantity or _is_container_phrase(np_) or _fixed_compound(np_):
            continue
        if np_.closed_left:
            continue
        allowed = MATERIALS_BY_CATEGORY.get(np_.category, set())
        for noun_m, adj_m in MATERIALS:
            if noun_m not in allowed or adj_m in np_.adjs or adj_m == np_.head or np_.head in MATERIAL_WORDS:
                continue
            if noun_m == "glass" and np_.head in {"window", "mirror", "bottle", "jar", "vase"}:
                continue
            adjs = [a for a in np_.adjs if a not in MATERIAL_WORDS]
            adjs.insert(_insert_pos(adjs), adj_m)
            target = _splice(caption, np_, _render(np_, adjs, np_.noun, np_.start == 0))
            out.append(Edit("Transform Local", f"make the {np_.noun.lower()} out of {noun_m}", target))
    return out


NOT_RESIZABLE = {"espresso", "coffee", "sky", "wall", "floor", "ground", "window", "porch", "street", "road", "sign"}


def _change_local(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    masked = _mask_text(caption)
    living = [n for n in nps if n.category in LIVING]
    if living:
        subj = living[0]
        for m in _TOKEN.finditer(masked[subj.end :]):
            word = m.group(0).lower()
            if word in ACTIONS:
                if subj.head in BIRDS and word in {"sitting", "standing", "lying"}:
                    break
                options = NO_SIT_ACTIONS.get(word, []) if subj.head in NO_SIT else ACTIONS[word]
                a, b = subj.end + m.start(), subj.end + m.end()
                nxt = _TOKEN.match(masked[b:].lstrip())
                # only an intransitive action is swapped: "eating a carrot" cannot become "sleeping a carrot"
                if masked[b : b + 1] == " " and nxt and nxt.group(0).lower() not in CLAUSE_WORDS | {"down", "up"}:
                    break
                for verb, gerund in options:
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
        if np_.category not in SIZE_CAPABLE or np_.head in NOT_RESIZABLE or np_.quantity or _is_container_phrase(np_):
            continue
        if np_.closed_left:
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


def _add_options(np_: NounPhrase) -> tuple[list[str], list[str]]:
    """What can be added next to an object, by what the object is (a cyclist on a road, not a kite)."""
    if np_.head in ADD_BY_HEAD:
        return ADD_BY_HEAD[np_.head]
    if np_.category == "object" and np_.head not in TABLETOP_OBJECTS:
        return [], []
    return ADD_BY_CATEGORY.get(np_.category, ([], []))


def _add(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps:
        if _is_container_phrase(np_) or np_.quantity:
            continue
        things, relations = _add_options(np_)
        words = {w.lower() for w in _TOKEN.findall(caption)}
        for thing in things:
            if np_.head in thing or {w for w in thing.split() if len(w) > 3} & words:
                continue  # nothing the caption already has ("children building a sandcastle" + a sandcastle)
            for rel in relations:
                phrase = f"{thing} {rel} the {np_.noun.lower()}"
                out.append(Edit("Add", f"add {phrase}", f"{_base(caption)}, with {phrase}."))
    return out


PARTICIPLES = {"lined", "covered", "filled", "topped", "decorated", "surrounded", "dotted", "piled", "stacked"}


def _remove(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    for np_ in nps[1:]:
        if np_.followed_by_of or np_.quantity:
            continue  # "remove the cup" from "holding a cup of coffee" would leave "of coffee" behind
        before = caption[: np_.start].rstrip()
        for conn in REMOVE_CONNECTORS:
            if before.lower().endswith(" " + conn):
                cut = len(before) - len(conn)
                cut_text = caption[:cut].rstrip(" ,")
                last = cut_text.rsplit(" ", 1)
                if len(last) == 2 and last[1].lower() in PARTICIPLES:
                    cut_text = last[0]  # "a street lined with old houses" -> "a street", not "a street lined"
                # keep what follows the phrase, e.g. "... and a model behind her" -> "... behind her"
                rest = caption[np_.end :]
                nxt = _TOKEN.match(rest.lstrip()) if rest[:1] == " " else None
                if rest[:1] not in ("", ".", ",", " ", "!", "?") or (nxt and nxt.group(0).lower() not in CLAUSE_WORDS):
                    break
                if conn in ("with", "holding") and rest.startswith(" and "):
                    # "at a desk with a laptop and a lamp" -> "at a desk with a lamp"
                    target = caption[: np_.start] + rest[len(" and ") :]
                    named = " ".join([a for a in np_.adjs if a in COLOR_WORDS] + [np_.noun.lower()])
                    out.append(Edit("Others", f"remove the {named}", target))
                    break
                # a short closing phrase that belongs to the removed thing goes with it ("with strawberries on top",
                # "with a stick in its mouth")
                tail = rest.strip().rstrip(".!?")
                if tail and len(tail.split()) <= 4 and re.search(r"\b(?:top|its|it|his|her|their|them)\b", tail):
                    rest = rest[len(rest.rstrip(".!?")) :]
                target = (cut_text + rest).strip()
                if target.rstrip(".") != cut_text.rstrip(".") or len(cut_text) > 10:
                    named = " ".join([a for a in np_.adjs if a in COLOR_WORDS] + [np_.noun.lower()])
                    out.append(Edit("Others", f"remove the {named}", target))
                break
    return out


NEW_TEXTS = ["OPEN", "CLOSED", "SALE", "HELLO", "WELCOME", "EXIT", "FRESH", "PEACE", "HOME", "SUNDAY"]
NEW_TEXTS_2 = ["GOOD LUCK", "THANK YOU", "GRAND OPENING", "SEE YOU SOON", "HAPPY HOLIDAYS"]
NEW_NUMBERS = ["17", "7", "128", "25"]


def _text_edit(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    """Change the text written in the image ('A sign that says STOP' -> 'A sign that says GO'); Others."""
    out = []
    for a, b, old in text_spans(caption)[:1]:
        inner = old.strip('"“”')
        if inner.isdigit():
            pool = NEW_NUMBERS
        else:
            pool = NEW_TEXTS_2 if len(inner.split()) > 1 else NEW_TEXTS
        for new in pool:
            if new == inner.upper() or new == inner:
                continue
            new_text = new if inner.isupper() or inner.isdigit() else new.title()
            shown = old.replace(inner, new_text)
            out.append(Edit("Others", f'change the text "{inner}" to "{new_text}"', caption[:a] + shown + caption[b:]))
    return out


def _turn(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    masked = _mask_text(caption)
    words = {w.lower() for w in _TOKEN.findall(masked)}
    out = []
    for m in _TOKEN.finditer(masked):
        w = m.group(0)
        if w.lower() in TIME_WORDS and w.islower():
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
    masked = _mask_text(caption)
    m = re.search(r"\b(a|an|the)\s+((?:[a-z-]+\s+){0,3}?)background\b", masked, re.I)
    if m:
        for tone in BACKGROUND_TONES:
            new = f"{_article(tone) if m.group(1).lower() in ('a', 'an') else m.group(1)} {tone} background"
            out.append(
                Edit("Change Global", f"make the background {tone}", caption[: m.start()] + new + caption[m.end() :])
            )
        return out
    words = {w.lower() for w in _TOKEN.findall(masked)}
    base = _base(caption)
    # a new background only where the caption names no place of its own ("in a museum" + a forest behind is wrong)
    if (
        nps
        and any(n.category in LIVING | {"vehicle", "structure", "furniture", "object"} for n in nps)
        and not (words & SCENE_PLACES)
    ):
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


_MEDIUM = re.compile(
    r"^(?:an?|the)\s+(?:[a-z'-]+\s+){0,3}?(?:photo|photograph|picture|image|shot|painting|drawing|sketch|print|"
    r"illustration|mural|portrait|watercolou?r|etching|engraving|collage|fresco|tapestry)\s+(?:of|with|showing)\s+",
    re.I,
)
_CLOSEUP = re.compile(r"^an?\s+close-up\s+of\s+", re.I)


def _transform_global(caption: str, nps: list[NounPhrase]) -> list[Edit]:
    out = []
    text = caption.strip()
    for ins, medium in STYLES:
        if medium.split()[0] in text.lower().split()[:3]:
            continue  # already that medium ("a watercolor painting of ..." made a watercolor painting)
        if _CLOSEUP.match(text):
            target = f"A close-up {medium} of " + text[_CLOSEUP.match(text).end() :]
        elif _MEDIUM.match(text):
            rest = text[_MEDIUM.match(text).end() :]
            joiner = _MEDIUM.match(text).group(0).split()[-1].lower()
            target = f"{_article(medium).capitalize()} {medium} {joiner} " + rest
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
    "Others": lambda caption, nps: _text_edit(caption, nps) + _remove(caption, nps),
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
