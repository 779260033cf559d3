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

The classifier (`classify_edit_type`) reads the phrase structure of the instruction, not single keywords: which verb
starts it, what its object is (the whole image - "it", "the photo", "the scene" - or one thing; definite "the dog" or
indefinite "a dog"), and what the object becomes (the complement after into / to / as / "make X ..."). A colour,
material or time word counts as the new value only at the end of its phrase or before a preposition; before another
noun it is a modifier that names the object ("the glass vase", "a winter coat", "the ice cream"). A complement with an
article is judged by its head noun ("a mug of hot chocolate" is a mug: Replace; "a deep forest green" is a colour).
The first rule that fires wins:

1. Others: text edits (write, rename, say / read / spell with quoted or capitalised text, lettering, font);
   removals (remove, erase, get rid of, take X off, disappear, "out of the picture", "have no ..."); viewpoint
   (a leading flip / mirror / rotate / zoom / crop, "from above", "bird's-eye view", "show X from ..."); moving an
   object (move / shift / slide X to a position). Moving or relocating to a place ("to a busy street") is Change Global.
2. Transform Global: the whole image is the object ("make it ...", "render the photo as ...", "apply a ... look") and
   the complement is a style or medium, or any style phrase (watercolor, fresco, linocut, grayscale, 8-bit, ...).
   A whole-image edit whose complement is lighting, a time / weather or a place goes to those types instead.
3. Change Global: background / backdrop / setting / surroundings words; lighting ("lit by", "bathe X in ... light",
   "lighting"); a definite subject put / placed / set / shown in a place ("put the dog in a snowy forest").
4. Turn: a time-of-day, season or weather value ("make it a crisp winter morning", "add falling snow").
5. Change Global: a place turned into or replaced by another place ("turn the room into a library").
6. Replace: "a <colour> one" is Change Color; "instead of" (Change Color between two colours); "where the X is";
   replace / swap / substitute / exchange / trade / switch.
7. Add: add / insert / include / put / place / draw / ... with an object; give X Y (unless Y is a colour, material,
   expression or hair / pose: those change X); have / let / show + an indefinite object; "there should be ...".
8. "turn / change / make X into / to / a Y": a colour → Change Color, a material or pattern → Transform Local, an
   expression → Change Local, a place → Change Global, a count → Change Local, another thing → Replace.
9. A colour verb (paint, dye, tint, recolour) or colour noun (hue, shade) → Change Color; a material, pattern or
   "made of / out of / carved from", or "cover X with Y" → Transform Local; a colour value → Change Color; the words
   the edit adds to the caption (target words not in the source), when the captions are given; else Change Local.

Tests: `tests/text/test_edit_types_heldout.py` (held-out set written independently of the seeds: ≥ 90% accuracy,
recall ≥ 0.8 per type) and `tests/text/test_text_seeds_types.py` (the seed pool).
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


def _lex(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _phrases(text: str) -> tuple[str, ...]:
    return tuple(" ".join(p.split()) for p in text.split(",") if p.strip())


COLORS = _lex(
    """red orange yellow green blue purple violet pink white black grey gray brown beige tan teal turquoise cyan
    magenta maroon burgundy navy crimson scarlet lavender lilac olive mint ivory cream golden ginger coral indigo
    amber emerald silvery mustard khaki aqua peach plum fuchsia vermilion ochre azure cobalt blond blonde auburn
    reddish bluish greenish yellowish pinkish purplish brownish greyish grayish colorful colourful multicolored
    multicoloured rainbow pastel"""
)
# what a colour is called when it is the thing given ("a pink hue", "a coat of paint")
COLOR_NOUNS = _lex("color colour colors colours hue hues shade tone tint paint paintjob coat dye")
MATERIALS = _lex(
    """wood wooden glass marble stone metal metallic steel iron gold silver bronze copper brass plastic rubber paper
    cardboard leather wool woolen knitted knit crocheted fabric silk velvet denim cotton lace straw wicker bamboo ice
    crystal porcelain ceramic clay concrete brick bricks gingerbread chocolate candy acrylic transparent furry fluffy
    moss mossy striped stripes pattern patterned floral checkered checked plaid tartan polka dotted dots spotted rusty
    rusted rust sculpture lego origami fur feathers feathered chrome sequined sequins jade granite obsidian quartz
    diamond pearl ivory glitter glittery sparkly tweed suede satin corduroy linen burlap mesh tiles tiled mosaic
    stony rocky woven embroidered camouflage snakeskin print prints crocodile texture textured grain surface
    finish carved sculpted molded cast forged blown frosted mirrored reflective translucent holographic neon"""
)
# a material word before these is the object, not its new material ("the ice cream", "the glass of water")
MATERIAL_COMPOUNDS = _lex("cream cube cubes cubes skates skating rink of")
STYLE_PHRASES = _phrases(
    """watercolor, watercolour, oil painting, painting style, pencil sketch, sketch, charcoal, drawing, drawn,
    cartoon, anime, manga, pixel art, pixelated, comic, impressionist, impressionism, cubist, cubism,
    surrealist, surreal, van gogh, monet, picasso, rembrandt, da vinci, dali, warhol, ghibli, pixar, disney,
    ukiyo e, woodblock, woodcut, linocut, pop art, mosaic, low poly, 3d render, 3d model, claymation,
    illustration, in the style of, black and white, grayscale, greyscale, monochrome, sepia, stained glass,
    blueprint, ink wash, engraving, etching, pastel drawing, art style, art nouveau, art deco, a painting, an
    painting, like a painting, into a painting, vintage photo, old photo, polaroid, film noir, noir, cyberpunk,
    steampunk, vaporwave, synthwave, line art, graffiti, fresco, tapestry, embroidery, cross stitch,
    needlepoint, collage, postcard, poster, gouache, crayon, crayons, chalk, pastels, marker, airbrush, clay
    model, miniature, video game, 8 bit, 16 bit, retro game, diorama, papercraft, paper cut, cut out,
    daguerreotype, tintype, film photo, film grain, film still, infrared, hdr, tilt shift, double exposure, long
    exposure, soft focus, bokeh, vignette, lomo, negative, x ray, thermal, hologram, renaissance, baroque,
    medieval manuscript, psychedelic, minimalist, abstract, expressionist, expressionism, fauvist, art, artwork,
    aesthetic, filter, grade, graded, render, rendering, cel shaded, vector, doodle, caricature, silhouette,
    storybook, children's book, print, painted, hand drawn, hand painted, photorealistic, hyperrealistic,
    cinematic, sculpture, statue"""
)
# weak style words count only when the whole image is the subject ("make it look like a sculpture", not "make the
# apple look like a glass sculpture")
WEAK_STYLE = frozenset(
    {"art", "print", "painted", "sculpture", "statue", "render", "rendering", "abstract", "negative"}
)
TURN_WORDS = _lex(
    """night nighttime midnight midsummer midwinter evening dusk dawn sunset sunrise morning noon midday afternoon
    daytime day daylight
    twilight winter wintertime summer summertime autumn fall spring springtime season snow snowy snowing snowfall
    snowflakes rain rainy raining rainfall drizzle drizzling downpour shower showers storm stormy thunderstorm
    lightning fog foggy mist misty haze hazy overcast cloudy sunny weather frozen frost frosty blizzard hail sleet
    hailstorm sandstorm monsoon windy tornado hurricane"""
)
TURN_PHRASES = _phrases(
    """the weather, the season, time of day, time of year, golden hour, blue hour, sun go down, sun goes down, sun
    set, sun sets, sun setting, sun rise, sun rises, sun rising, sun come up, sun comes up, sun is setting,
    night fall, get dark, gets dark, getting dark, turn dark, late at night, break of day, first light, last
    light, after dark, before dawn"""
)
# a time / weather word before these names an object ("a summer dress", "a snow globe"), not a change of time
TURN_COMPOUNDS = _lex(
    """dress dresses coat coats jacket hat hats boots boot globe globes man men ball balls board boards plow shovel cone
    cones suit suits gear camp clothes outfit shirt tire tires fort angel angels flake light lights lamp sky
    skies"""
)
TURN_HEADS = _lex(
    """day days shower showers hour time season weather evening morning night afternoon eve christmas holiday feel vibe
    mood atmosphere"""
)
PLACES = _lex(
    """beach beaches forest forests jungle rainforest desert dunes street streets city cities town village cafe
    restaurant bar diner kitchen library office classroom room bedroom bathroom hallway corridor park garden gardens
    field fields meadow meadows mountain mountains mountaintop hill hills hillside valley lake river ocean sea seaside
    shore coast underwater space outer moon mars planet station platform temple castle palace hall church cathedral
    cabin farm farmyard barn island harbor harbour port market marketplace mall stadium arena studio rooftop lot
    highway cave canyon glacier tundra savanna savannah swamp marsh reef countryside skyline alley square plaza
    courtyard backyard balcony attic basement subway airport spaceship spacecraft landscape scenery galaxy universe
    wasteland ruins canal pond creek stream trail path pathway pyramid pyramids arctic antarctica tropics volcano
    waterfall prairie vineyard orchard greenhouse
    gym hospital museum gallery theater theatre stage bakery shop store supermarket warehouse factory laboratory lab
    airport train-station pier dock marina boardwalk cliff cliffs oasis lagoon bay fjord woods woodland grove
    clearing cemetery graveyard playground schoolyard campus neighborhood neighbourhood suburb downtown metropolis
    arcade casino ballroom dungeon throne tavern inn hotel lobby penthouse loft apartment living dining venue
    sunflower lavender tulip poppy wheat rice paddy bamboo snowfield icefield mountainside seabed seafloor
    background backdrop surroundings environment setting location"""
)
LIGHT_WORDS = _lex(
    """lighting lit light lights glow glowing illuminated illuminate illumination candlelight spotlight spotlights
    moonlight sunlight lamplight firelight torchlight backlit backlighting neon-lit shadows shadow rays beams"""
)
GLOBAL_WORDS = _phrases(
    """background, backdrop, setting, surroundings, environment, scenery, location, whole image, entire image,
    landscape, take place, takes place, taken in, taken on, taken at, taken underwater, change where, move where"""
)
EXPRESSIONS = _lex(
    """smile smiles smiling grin grinning frown frowning laugh laughing scowl sneer pout tears crying cry yawn
    surprised shocked angry sad happy sleepy tired expression face puddle"""
)
NUMBERS = _lex("two three four five six seven eight nine ten eleven twelve dozen several many few")
TEXT_NOUNS = _lex(
    """text word words wording lettering letters writing inscription caption headline slogan title label name sign
    signs banner poster graffiti number numbers menu plate placard billboard marquee"""
)
REMOVE_PHRASES = _phrases(
    """remove, removed, removing, delete, erase, eliminate, get rid of, take away, take out, take off the, take off
    his, take off her, disappear, disappears, vanish, vanishes, clear away, clear off, clear the, clean up,
    clean off, wipe, edit out, cut out, without, no longer, leave the, strip away, pluck, empty the room, empty
    the street, go away, goes away, gone, out of the picture, out of the frame, out of the shot, out of the
    image, out of the photo, out of the scene, nobody, no one, no longer, no more"""
)
VIEW_VERBS = _lex("flip mirror rotate zoom crop reframe tilt pan")
VIEW_PHRASES = _phrases(
    """mirror image, mirrored, flipped, rotated, zoomed, cropped, upside down, show only, only show, zoom in, zoom
    out, bird's eye, birds eye, from above, from below, from behind, from the side, from the front, from the
    back, from the left, from the right, from overhead, from directly, from a low, from a high, from a distance,
    from far, from the air, from ground level, overhead view, top view, side view, aerial view, front view, rear
    view, wide shot, wide angle, close up view, closer view, angle, perspective, viewpoint, point of view, pan
    the camera, tilt the camera, zoom out, widen the shot, widen the view, frame it, reframe, left half, right
    half, top half, bottom half, part of the picture, part of the image, get closer, come closer, step back,
    further away, farther away"""
)
MOVE_VERBS = _lex("move shift slide push pull drag reposition nudge")
RELOCATE_VERBS = _lex("relocate transport teleport transplant send")
PLACE_VERBS = _lex("put place set position move bring take have let show")
ADD_VERBS = _lex(
    """add insert include put place draw stick attach hang plant scatter sprinkle drop throw pop paste position
    introduce perch decorate top garnish adorn accessorize"""
)
REPLACE_VERBS = _lex("replace swap substitute exchange trade switch")
COLOR_VERBS = _lex("paint painted repaint color colour colored coloured dye dyed recolor recolour tint tinted")
CHANGE_VERBS = _lex("turn change transform convert make morph alter switch")
DETERMINERS = _lex("the a an his her its their this that these those my your our some")
INDEFINITE = _lex("a an some two three four five several few many another one more lots")
PREPS = _lex(
    """in on at into onto inside under over above below behind beside near next to by from of with for across along
    around through against between among upon"""
)
# tokens that end a noun phrase: a colour / material / time word just before one of these is the new value
_ENDERS = PREPS | _lex("and or but instead like so that as than then too")
# what a person "is given" that changes them rather than adds an object
GIVEN_ATTRIBUTES = _lex("hair hairstyle haircut pose posture tan wrinkles complexion")
# base-form verbs that show a "make X <verb> ..." instruction is an action, not "make X a Y"
COMMON_VERBS = _lex(
    """grow wear hold have eat drink carry ride read play get look become seem appear hug kiss throw catch kick open
    close wave point raise lift pick drop lose take give"""
)
_WEATHER_ADJS = _lex("clear bright hot cold warm crisp cool dark grey gray gloomy wet dry chilly freezing humid calm")
_POLITE = _phrases(
    """please, kindly, could you, can you, would you, will you, i want you to, i'd like you to, let's, lets, now,
    then, also, just, try to, go ahead and, you should, and"""
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset("a an the of and with on in at to it its is are his her their this that by for from".split())


def words(text: str) -> list[str]:
    """Lower-case word tokens; hyphenated words are split ("bird's-eye" -> "bird's", "eye")."""
    return _WORD.findall(text.lower())


def _has_phrase(text: str, phrases) -> bool:
    return any(re.search(rf"(?<![\w'-]){re.escape(p)}(?![\w-])", text) for p in phrases)


def added_words(source: str, target: str) -> set[str]:
    """Content words of the target caption that are not in the source caption."""
    return {w for w in words(target) if w not in _STOP} - set(words(source))


def _values(
    toks: list[str],
    lexicon: frozenset[str],
    compounds: frozenset[str] = frozenset(),
    heads: frozenset[str] = frozenset(),
) -> list[str]:
    """Lexicon words used as a new value: at the end, or before a word that ends the phrase (a preposition, 'and',
    an adverb in -ly) or before another lexicon word / one of `heads`. A lexicon word before any other noun is a
    modifier of that noun ("the glass vase", "a winter coat") and does not count (docs/method.md §1)."""
    out = []
    for i, w in enumerate(toks):
        if w not in lexicon:
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if nxt is not None and nxt in compounds:
            continue
        if nxt in _WEATHER_ADJS and i + 2 < len(toks):
            nxt = toks[i + 2]
        if nxt is None or nxt in _ENDERS or nxt.endswith("ly") or nxt in lexicon or nxt in heads:
            out.append(w)
    return out


def _strip_polite(toks: list[str]) -> list[str]:
    changed = True
    while changed and toks:
        changed = False
        text = " ".join(toks)
        for p in _POLITE:
            if text == p or text.startswith(p + " "):
                toks = toks[len(p.split()) :]
                changed = True
                break
    return toks


def _np_after(toks: list[str], i: int) -> list[str]:
    """The noun phrase that starts at token i: up to a preposition, a gerund, 'should' / 'is' or the end."""
    out = []
    for w in toks[i:]:
        if out and (
            w in PREPS
            or (w in {"a", "an", "the"} and any(x not in DETERMINERS for x in out))
            or w in {"should", "is", "are", "be", "to", "that", "who", "which", "where", "instead"}
            or (w.endswith("ing") and len(w) > 5 and w not in {"ring", "wing", "string", "building", "king"})
        ):
            break
        out.append(w)
    return out


def _global_subject(text: str) -> bool:
    """The instruction's object is the whole image ("make it ...", "turn the photo into ...", "apply a ... look")."""
    m = re.match(
        r"^(?:[a-z']+\s+){1,2}?(it|this|everything|all|the (?:whole|entire) \w+|(?:the|this) (?:image|photo|"
        r"photograph|picture|pic|scene|shot|frame|composition|artwork))\b",
        text,
    )
    return m is not None or text.startswith(("apply ", "add a filter", "use a ", "give everything"))


def _head(np_: list[str]) -> str | None:
    """The head noun of a phrase: its last word before 'of' / a preposition."""
    core = _np_after(np_, 0) if np_ else []
    return core[-1] if core else None


def _complement_kind(toks: list[str], subject: list[str] | None = None) -> str | None:
    """What a 'becomes / gets' complement is: a colour, a material, an expression, a place or (None) a thing.

    A complement with an article is judged by its head noun ("a mug of hot chocolate" is a mug, "a deep forest green"
    is a colour); when the head is the edited object itself ("a stone teapot" for the teapot) its modifiers decide. A
    bare complement ("solid gold", "navy blue") is judged by its value words (docs/method.md §1)."""
    if not toks:
        return None
    if toks[0] in {"a", "an"} and toks[-1] == "one" and len(toks) > 2:
        mods = set(toks[1:-1])  # "a happy one": the same object with a new property
        return "color" if mods & COLORS else "material" if mods & MATERIALS else "expression"
    if toks[0] in INDEFINITE | {"the"} and len(toks) > 1:
        head = _head(toks[1:])
        subj_head = _head(subject) if subject else None
        core = _np_after(toks[1:], 0)
        container = len(toks) > len(core) + 1 and toks[len(core) + 1] == "of"  # "a glass of juice" is a glass
        if head in COLORS or (head in COLOR_NOUNS and (head != "coat" or container)):  # a coat of paint, not a coat
            return "color"
        if (head in MATERIALS and not container) or head in {"pattern", "patterns", "texture", "finish", "surface"}:
            return "material"
        if head in EXPRESSIONS:
            return "expression"
        if head in PLACES:
            return "place"
        if head is not None and subj_head is not None and head.rstrip("s") == subj_head.rstrip("s"):
            mods = _np_after(toks[1:], 0)[:-1]
            if set(mods) & MATERIALS:
                return "material"
            if set(mods) & COLORS:
                return "color"
        return None
    if set(toks) & COLOR_NOUNS and set(toks) & (COLORS | {"same", "different", "color", "colour"}):
        return "color"
    if _values(toks, COLORS, heads=COLOR_NOUNS) and not _values(toks, MATERIALS, MATERIAL_COMPOUNDS):
        return "color"
    if _values(toks, MATERIALS, MATERIAL_COMPOUNDS):
        return "material"
    if set(toks) & EXPRESSIONS:
        return "expression"
    if set(toks) & PLACES and not set(toks) & {"background", "backdrop"}:
        return "place"
    return None


def classify_edit_type(instruction: str, source: str | None = None, target: str | None = None) -> str:
    """One of EDIT_TYPES for an instruction (and optionally its captions), by the ordered rules in the module doc."""
    raw = instruction
    toks = _strip_polite(words(raw))
    if not toks:
        return "Others"
    text = " ".join(toks)
    first = toks[0]
    tokset = set(toks)
    added = added_words(source, target) if source is not None and target is not None else set()
    is_global = _global_subject(text)

    # 1. Others: text edits, removals, viewpoint changes, moving an object within the picture
    quoted_or_caps = bool(re.search(r"[\"“”]|'[^']+'(?!\w)", raw)) or bool(re.search(r"\b[A-Z]{2,}\b", raw))
    if (
        tokset
        & {
            "write",
            "writes",
            "written",
            "rename",
            "renamed",
            "spell",
            "spells",
            "spelling",
            "lettering",
            "inscription",
            "text",
            "wording",
        }
        or (tokset & {"say", "says", "saying", "read", "reads", "reading"} and (quoted_or_caps or tokset & TEXT_NOUNS))
        or (
            tokset & TEXT_NOUNS & {"word", "words", "letters", "name", "title", "headline", "slogan", "caption"}
            and first in CHANGE_VERBS | {"replace", "swap"}
        )
        or (tokset & TEXT_NOUNS and quoted_or_caps and first in CHANGE_VERBS)
        or tokset & {"font", "capitals", "uppercase", "lowercase", "typeface", "handwriting"}
        or (tokset & {"letters", "words", "lettering"} and not tokset & {"remove", "add"})
    ):
        return "Others"
    if (
        _has_phrase(text, REMOVE_PHRASES)
        or re.search(r"\b(?:have|with|leave|show|make|there (?:are|is|should be)) no\b", text)
        or re.search(r"\btake (?:the|his|her|its|their) [\w' ]+ off\b", text)
    ):
        if not (text.startswith("leave the") and not re.search(r"\b(empty|bare|blank|clear|vacant)\b", text)):
            return "Others"
    if (
        first in VIEW_VERBS
        or _has_phrase(text, VIEW_PHRASES)
        or re.search(r"\b(?:view|show|see|photograph|shoot) (?:it|this|everything|the [\w']+(?: [\w']+)?) from\b", text)
    ):
        return "Others"
    if first in MOVE_VERBS | RELOCATE_VERBS:
        dest = re.search(r"\b(?:to|into|onto|in|on|at)\s+(?:a|an|some)\s+([\w' ]+)$", text)
        if (
            first in RELOCATE_VERBS
            or is_global
            or (dest and set(dest.group(1).split()) & PLACES)
            or re.search(r"\bto [A-Z]", raw)
        ):
            return "Change Global"
        return "Others"

    # 2. Transform Global: a style or medium, for the whole image
    strong_style = [p for p in STYLE_PHRASES if p not in WEAK_STYLE and _has_phrase(text, (p,))]
    if is_global or first in {
        "render",
        "redo",
        "redraw",
        "reimagine",
        "stylize",
        "stylise",
        "style",
        "apply",
        "recreate",
        "rerender",
    }:
        if (tokset & LIGHT_WORDS - {"shadow", "shadows"}) and not strong_style:
            return "Change Global"
        if strong_style or _has_phrase(text, WEAK_STYLE):
            return "Transform Global"
        if first in PLACE_VERBS and tokset & PLACES:
            return "Change Global"  # "place the scene in a busy street at night": the place is the edit
        if _turn(toks, text):
            return "Turn"
        if _has_phrase(text, GLOBAL_WORDS) or tokset & PLACES:
            return "Change Global"
        rest = toks[toks.index("it") + 1 :] if "it" in toks else toks[1:]
        if rest and rest[0] in NUMBERS | {"one", "just"}:
            return "Change Local"
        return "Transform Global"
    if strong_style and not _values(toks, MATERIALS, MATERIAL_COMPOUNDS):
        return "Transform Global"

    # 3. Change Global: background, setting, lighting, or the subject taken to another place
    adds_in_background = first in ADD_VERBS | {"show", "have", "let", "there"} and "in the background" in text
    if _has_phrase(text, GLOBAL_WORDS) and not adds_in_background:
        return "Change Global"
    if not (_values(toks, COLORS) and not is_global) and (
        re.search(
            r"\b(?:lighting|lit (?:by|with|from|up)|illuminated|illuminate|glow|candlelight|spotlight|moonlight|"
            r"sunlight|lamplight|firelight|backlit)\b",
            text,
        )
        or re.search(r"\b(?:in|with|under)\s+(?:a\s+|an\s+)?(?:[\w-]+\s+){0,3}light\b", text)
        or text.startswith(("light the", "bathe ", "flood the"))
    ):
        return "Change Global"
    if first in PLACE_VERBS | {"surround", "seat"}:
        place = re.search(
            r"\b(?:in|on|at|into|inside|onto|to|with|among|amid|near|by)\s+(?:a|an|some)?\s*([\w' ]+)$", text
        )
        subj = toks[1] if len(toks) > 1 else ""
        definite = subj in {"the", "them", "him", "her", "it", "his", "their", "everyone", "everybody", "us", "me"}
        proper = place is not None and re.search(
            r"\b(?:in|on|at|to)\s+(?:a\s+|an\s+)?(?:[a-z]+\s+){0,3}[A-Z][a-z]", raw
        )
        if (
            place
            and (definite or first == "surround")
            and (set(place.group(1).split()) & PLACES - {"background", "backdrop"} or proper)
        ):
            return "Change Global"

    # 4. Turn: time of day, season, weather
    if _turn(toks, text):
        return "Turn"
    # a place turned into another place ("turn the room into a library", "replace the street with a river")
    if first in REPLACE_VERBS | CHANGE_VERBS and len(toks) > 2 and toks[1] in DETERMINERS:
        if set(_np_after(toks, 1)) & PLACES - {"lot", "stage", "bar", "plate", "lab"}:
            return "Change Global"

    # 5. Replace by wording ("instead of", "where the X is") and explicit swap verbs
    color_swap = re.search(r"\b(?:a|an)\s+(\w+)\s+one\b", text)
    if color_swap and color_swap.group(1) in COLORS:
        return "Change Color"
    if "instead" in tokset:
        around = toks[max(0, toks.index("instead") - 3) : toks.index("instead") + 4]
        if len(set(around) & COLORS) >= 2 or (set(around) & COLORS and "be" in tokset):
            return "Change Color"
        return "Replace"
    if re.search(r"\bwhere (?:the|a|an|his|her) [\w' ]+ (?:is|was|used to be|stands|stood|sits|sat)\b", text):
        return "Replace"
    if first in REPLACE_VERBS and not text.startswith(("switch to", "switch it")):
        return "Replace"

    # 6. Add: a new object, person or element enters the scene
    add_obj: list[str] | None = None
    if first in ADD_VERBS:
        add_obj = _np_after(toks, 1)
    elif first in {"give", "have", "let", "show", "get"} and len(toks) > 1:
        if first == "give":
            # give X Y: Y is what the object gets
            rest = toks[1:]
            j = next((k for k, w in enumerate(rest) if k > 0 and w in INDEFINITE | {"the"}), None)
            y = rest[j:] if j is not None else rest[2:]
            if set(y) & GIVEN_ATTRIBUTES:
                return "Change Local"  # "give the woman short hair" changes her hair
            kind = _complement_kind(y, _np_after(rest, 0))
            if kind == "color":
                return "Change Color"
            if kind == "material":
                return "Transform Local"
            if kind == "expression":
                return "Change Local"
            add_obj = y
        elif toks[1] in INDEFINITE or (
            toks[1] not in DETERMINERS
            and toks[1] not in {"them", "him", "it", "us", "me"}
            and not toks[1].endswith("'s")
        ):
            add_obj = _np_after(toks, 1)
    elif first == "there" or (first in {"a", "an", "some"} and _has_phrase(text, ("should", "could", "would"))):
        add_obj = _np_after(toks, 2 if first == "there" else 0)
    if add_obj is not None:
        if set(add_obj) & EXPRESSIONS:
            return "Change Local"  # "add a smile to her face" changes an expression
        heads = [w for w in add_obj if w in TURN_WORDS and w not in {"fall", "spring", "day"}]
        if heads and not set(add_obj) & TURN_COMPOUNDS:
            return "Turn"
        return "Add"

    # 7. "turn / change / make X into / to / a Y": what Y is decides
    m = re.search(
        r"\b(?:turn|change|transform|convert|make|morph|alter|switch)\s+(.+?)\s+(?:into|to|from)\s+(.+)$", text
    ) or re.search(
        r"^(?:make|turn|paint|have)\s+((?:the|his|her|its|their|this|that)\s+[\w' ]+?)\s+"
        r"((?:a|an)\s+.+)$",
        text,
    )
    if m and first in CHANGE_VERBS | {"paint", "have"} and not set(m.group(1).split()) & COMMON_VERBS:
        tail = m.group(2).split()
        kind = _complement_kind(tail, m.group(1).split())
        if "from" in tail or (len(set(toks) & COLORS) >= 2 and " from " in f" {text} "):
            kind = "color" if set(toks) & COLORS else kind
        if kind == "color":
            return "Change Color"
        if kind == "material":
            return "Transform Local"
        if kind == "expression":
            return "Change Local"
        if kind == "place":
            return "Change Global"
        if tail[0] in NUMBERS or (len(tail) > 1 and tail[1] in NUMBERS):
            return "Change Local"
        if not set(tail) & _lex("bigger smaller larger taller shorter older younger size half double twice"):
            return "Replace"

    # "make the pigeons seagulls": a plural object made into another plural noun that is no known property
    if (
        first == "make"
        and len(toks) >= 3
        and toks[1] in DETERMINERS
        and toks[-1].endswith("s")
        and toks[-2].endswith("s")
    ):
        if not {toks[-1], toks[-1][:-1]} & (COLORS | MATERIALS | TURN_WORDS | EXPRESSIONS) and len(toks) <= 5:
            return "Replace"

    # 8. Colour, material, then any other attribute change
    if first in COLOR_VERBS or tokset & COLOR_VERBS - {"painted"}:
        return "Change Color"
    if set(toks) & COLOR_NOUNS - {"coat"} and set(toks) & (COLORS | {"same", "different"}):
        return "Change Color"
    if _values(toks, MATERIALS, MATERIAL_COMPOUNDS) or re.search(
        r"\b(?:made|carved|crafted|built|woven|cast) "
        r"(?:of|from|out of|in)\b|\bout of\b",
        text,
    ):
        return "Transform Local"
    if first == "cover" or first in {"wrap", "coat"}:
        return "Transform Local"
    if _values(toks, COLORS, heads=COLOR_NOUNS):
        return "Change Color"
    if added & MATERIALS:
        return "Transform Local"
    if added & COLORS:
        return "Change Color"
    return "Change Local"


def _turn(toks: list[str], text: str) -> bool:
    if _has_phrase(text, TURN_PHRASES):
        return True
    vals = _values(toks, TURN_WORDS, TURN_COMPOUNDS, heads=TURN_HEADS)
    # "fall" and "spring" are also verbs / objects: they count after "to / in / it / the / early / late"
    for w in vals:
        if w in {"fall", "spring"}:
            i = toks.index(w)
            if i > 0 and toks[i - 1] in {"to", "in", "the", "it", "early", "late", "of", "a", "into", "night", "mid"}:
                return True
            continue
        return True
    return False


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
