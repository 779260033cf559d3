"""The nine UltraEdit edit types, a keyword classifier for them, and the free-form / region mode choice.

UltraEdit reports nine edit types but did not publish how instructions were assigned to them (docs/method.md §1). This
project fixes the meaning of each type as follows, and the seed pool (`data/seed_triplets.tsv`) is labelled with it:

| type | meaning | typical instruction |
|---|---|---|
| Add | a new object, person or element enters the scene | "add a red bucket to the sandbox" |
| Replace | an object is swapped for a different kind of object | "replace the dog with a cat" |
| Transform Local | one object changes material, texture or pattern | "make the table out of glass" |
| Change Local | one object changes size, state, pose, action, expression, count or age | "make the man smile" |
| Turn | time of day, season or weather changes | "turn the day into night", "make it winter" |
| Others | removal, moving, text changes, viewpoint / zoom, flips | "remove the dog", "change the sign to say SLOW" |
| Change Global | background, setting, location or lighting of the whole scene | "change the background to a beach" |
| Transform Global | art style / medium of the whole image | "make it a watercolor painting" |
| Change Color | an object is recoloured | "paint the fence pink" |

The classifier (`classify_edit_type`) is an ordered list of keyword rules over the lower-cased instruction and, when
the captions are given, over the words the edit adds to the caption (target words not in the source). The first rule
that fires wins:

1. Others: remove / delete / erase / take away / get rid of / clear away / take off; move / flip / mirror / rotate /
   zoom / crop / "from above"; text edits (say, read, word, write, text, letters).
2. Add: the instruction starts with add / put / place / insert / include.
3. Transform Global: a style or medium phrase (watercolor, oil painting, pencil sketch, cartoon, anime, pixel art,
   "in the style of", black and white, sepia, ...).
4. Change Global: background / backdrop / setting / scene / surroundings / environment / scenery / location / lighting /
   "whole image" / "the room".
5. Turn: a time-of-day, season or weather word (night, sunset, winter, snow, rain, fog, storm, ...).
6. Replace: replace / swap / substitute / exchange / "instead of".
7. "turn / change / transform / convert / make X into|to Y": Y with a colour word only → Change Color, Y with a material
   or texture → Transform Local, else Replace.
8. A colour verb (paint, colour/color, dye, recolour, tint) → Change Color.
9. A material / texture / pattern word in the instruction or in the added words → Transform Local.
10. A colour word in the instruction or in the added words → Change Color.
11. Anything else that edits an attribute (make / have / open / fill / inflate / ...) → Change Local; otherwise Others.

`tests/text/test_text_seeds_types.py` checks that it agrees with the seed labels on at least 80% of the pool.
"""

from __future__ import annotations

import re

from ultraedit_dagster.core.ids import rng_for

EDIT_TYPES: tuple[str, ...] = (
    "Add",
    "Replace",
    "Transform Local",
    "Change Local",
    "Turn",
    "Others",
    "Change Global",
    "Transform Global",
    "Change Color",
)
MODES: tuple[str, ...] = ("free_form", "region")
GLOBAL_TYPES = frozenset({"Turn", "Change Global", "Transform Global"})

COLORS = frozenset(
    """red orange yellow green blue purple violet pink white black grey gray brown beige tan teal turquoise cyan
    magenta maroon burgundy navy crimson scarlet lavender lilac olive mint ivory cream golden ginger coral indigo
    amber emerald""".split()
)
MATERIALS = frozenset(
    """wood wooden glass marble stone metal metallic steel iron gold silver bronze copper brass plastic rubber paper
    cardboard leather wool woolen knitted fabric silk velvet denim cotton lace straw wicker bamboo ice crystal
    porcelain ceramic clay concrete brick bricks gingerbread chocolate candy acrylic transparent furry fluffy moss
    mossy striped stripes pattern patterned floral checkered plaid polka dotted spotted rusty rusted sculpture
    lego origami fur feathers feathered chrome sequined""".split()
)
STYLE_PHRASES = (
    "watercolor",
    "watercolour",
    "oil painting",
    "painting style",
    "pencil sketch",
    "sketch",
    "charcoal",
    "drawing",
    "cartoon",
    "anime",
    "manga",
    "pixel art",
    "comic",
    "impressionist",
    "cubist",
    "surrealist",
    "van gogh",
    "monet",
    "picasso",
    "ukiyo-e",
    "woodblock",
    "pop art",
    "mosaic",
    "low poly",
    "3d render",
    "claymation",
    "illustration",
    "in the style of",
    "black and white",
    "sepia",
    "stained glass",
    "blueprint",
    "ink wash",
    "engraving",
    "pastel drawing",
    "art style",
    "a painting",
    "an painting",
    "like a painting",
    "into a painting",
    "vintage photo",
    "polaroid",
    "film noir",
    "cyberpunk style",
    "steampunk style",
    "line art",
    "graffiti",
)
TURN_WORDS = frozenset(
    """night nighttime midnight evening dusk dawn sunset sunrise morning noon midday afternoon daytime day daylight
    twilight winter summer autumn fall spring season snow snowy snowing rain rainy raining storm stormy thunderstorm
    lightning fog foggy mist misty haze hazy overcast cloudy clouds sunny weather frozen frost frosty
    blizzard""".split()
)
GLOBAL_WORDS = (
    "background",
    "backdrop",
    "setting",
    "scene",
    "surroundings",
    "environment",
    "scenery",
    "location",
    "lighting",
    "lit by",
    "whole image",
    "entire image",
    "the room",
    "landscape",
)
OTHERS_WORDS = (
    "remove",
    "delete",
    "erase",
    "take away",
    "get rid of",
    "clear away",
    "take off",
    "take out",
    "without",
    "move",
    "shift",
    "flip",
    "mirror the",
    "mirror it",
    "rotate",
    "zoom",
    "crop",
    "from above",
    "from below",
    "viewpoint",
    "angle",
    "say",
    "says",
    "read",
    "reads",
    "word",
    "words",
    "write",
    "written",
    "text",
    "letters",
    "caption",
    "sign to",
)
ADD_STARTS = ("add", "put", "place", "insert", "include")
REPLACE_WORDS = ("replace", "swap", "substitute", "exchange", "instead of")
COLOR_VERBS = ("paint", "color", "colour", "dye", "recolor", "recolour", "tint")
_INTO = re.compile(
    r"\b(?:turn|change|transform|convert|make)\s+(?:the\s+|his\s+|her\s+|its\s+|their\s+)?"
    r"[\w' -]+?\s+(?:into|to)\s+(.+)$"
)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_STOP = frozenset("a an the of and with on in at to it its is are his her their this that by for from".split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _has_phrase(text: str, phrases) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text) for p in phrases)


def added_words(source: str, target: str) -> set[str]:
    """Content words of the target caption that are not in the source caption."""
    return {w for w in words(target) if w not in _STOP} - set(words(source))


def classify_edit_type(instruction: str, source: str | None = None, target: str | None = None) -> str:
    """One of EDIT_TYPES for an instruction (and optionally its captions), by the ordered rules in the module doc."""
    ins = " ".join(words(instruction))
    ins_words = set(ins.split())
    added = added_words(source, target) if source is not None and target is not None else set()
    if _has_phrase(ins, OTHERS_WORDS):
        return "Others"
    if ins.split(" ", 1)[0] in ADD_STARTS:
        return "Add"
    if _has_phrase(ins, STYLE_PHRASES):
        return "Transform Global"
    if _has_phrase(ins, GLOBAL_WORDS):
        return "Change Global"
    if ins_words & TURN_WORDS:
        return "Turn"
    if _has_phrase(ins, REPLACE_WORDS):
        return "Replace"
    m = _INTO.search(ins)
    if m:
        tail = set(m.group(1).split()) - _STOP
        if tail & MATERIALS:
            return "Transform Local"
        if tail and tail <= (COLORS | {"bright", "dark", "light", "pale", "deep", "neon", "color", "colour"}):
            return "Change Color"
        if not (tail & COLORS):
            return "Replace"
    if ins_words & set(COLOR_VERBS):
        return "Change Color"
    if (ins_words | added) & MATERIALS:
        return "Transform Local"
    if (ins_words | added) & COLORS:
        return "Change Color"
    if ins_words:
        return "Change Local"
    return "Others"


def is_known_edit_type(name: object) -> bool:
    return isinstance(name, str) and name in EDIT_TYPES


# Types that region mode cannot serve: an added object is not in the source image, so there is nothing to ground and
# a full-image mask would make the "region" edit a free-form one (docs/method.md §4).
NOT_REGION_TYPES = frozenset({"Add"})


def choose_mode(global_seed: int, instruction_uid: str, region_fraction: float, edit_type: str | None = None) -> str:
    """'region' for about `region_fraction` of triplets, chosen deterministically from the instruction uid; always
    'free_form' for the types in NOT_REGION_TYPES (the draw is the same, so other triplets keep their mode)."""
    if not 0.0 <= region_fraction <= 1.0:
        raise ValueError(f"region_fraction must be in [0, 1], got {region_fraction}")
    draw = rng_for(global_seed, instruction_uid, "mode").random()
    if edit_type in NOT_REGION_TYPES:
        return "free_form"
    return "region" if draw < region_fraction else "free_form"
