"""Parsing and validating LLM edit triplets (`caption; instruction; new caption`), and instruction near-duplicates.

Real model output is messy. `parse_triplets` accepts: numbered or bulleted lines (`1.`, `2)`, `(3)`, `-`, `*`, `•`),
markdown emphasis / code fences / headings, straight or curly quotes around the line or around parts, labelled parts
(`Original caption: ...; Instruction: ...; New caption: ...`), labelled blocks over three lines, markdown table rows,
a title line or trailing commentary (lines without the separator are skipped), trailing notes in parentheses, extra
semicolons inside a caption (resolved against the caption that was sent, else by finding the imperative part), and
any number of triplets. `validate_triplet` then applies the dataset rules (docs/method.md §1).

No Dagster imports here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_CAPTION_WORDS = 60

_BULLET = re.compile(
    r"^\s*(?:[-*•·>]+|\(?\d{1,3}[.):\]]|\#{1,6}|(?:triplet|example|instance|edit)\s*\d*\s*[:.)-])\s*", re.I
)
_LABEL = re.compile(
    r"^\s*(?:original(?: image)? caption|source caption|original|source|caption|input caption|"
    r"edit(?:ing)? instruction|instruction|edit|new(?: image)? caption|edited caption|target caption|target|"
    r"output caption|new|result)\s*[:=-]\s*",
    re.I,
)
_BLOCK_LABEL = re.compile(
    r"^\s*(?P<label>original(?: image)? caption|source caption|caption|input caption|edit(?:ing)? instruction|"
    r"instruction|new(?: image)? caption|edited caption|target caption|output caption)\s*[:=-]\s*(?P<value>.+)$",
    re.I,
)
_TRAILING_NOTE = re.compile(r"\s*[\(\[](?:note|this|here|changed|edit|explanation|reason)\b[^\)\]]*[\)\]]\s*$", re.I)
_QUOTES = "\"'`“”‘’«»"
# single-marker markdown emphasis around words: *make it night*, _make it night_ (not snake_case or 2*3)
_EMPHASIS = re.compile(r"(?<![\w*])[*_](?=\S)([^*_]*?\S)[*_](?![\w*])")
_IMPERATIVE = frozenset(
    """add put place insert include replace swap substitute exchange make turn change transform convert render paint
    color colour dye recolor recolour remove delete erase take get clear move shift flip mirror rotate zoom crop show
    write give have let open close fill inflate blow cover set use""".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_STOP = frozenset("a an the of and with on in at to it its is are this that by for from into onto".split())


@dataclass(frozen=True)
class Triplet:
    source: str
    instruction: str
    target: str


@dataclass
class ParseResult:
    triplets: list[Triplet] = field(default_factory=list)
    skipped_lines: int = 0  # non-empty lines that held no triplet (titles, commentary)


def normalize_caption(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes, no trailing punctuation (InstructPix2Pix's comparison)."""
    t = " ".join(str(text).split()).strip().strip(_QUOTES).strip()
    t = t.rstrip(".!?;:,… ").strip(_QUOTES).rstrip(".!?;:,… ")
    return t.lower()


def word_count(text: str) -> int:
    return len(str(text).split())


def _clean_part(part: str) -> str:
    p = part.strip()
    p = p.replace("**", "").replace("__", "").strip()
    p = _EMPHASIS.sub(r"\1", p)
    p = _LABEL.sub("", p, count=1).strip()
    # strip a matching or dangling quote pair around the part
    while len(p) >= 1 and p[0] in _QUOTES and (p[-1] in _QUOTES or p.count(p[0]) == 1):
        p = p[1:-1].strip() if p[-1] in _QUOTES and len(p) > 1 else p[1:].strip()
    p = p.strip(_QUOTES).strip()
    return " ".join(p.split())


def _clean_line(line: str) -> str:
    s = line.strip()
    s = s.replace("**", "").replace("__", "")
    for _ in range(2):
        s = _BULLET.sub("", s, count=1).strip()
    s = _TRAILING_NOTE.sub("", s)
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1]
    return s.strip().strip("`").strip()


def _first_word(text: str) -> str:
    m = _WORD.search(text.lower())
    return m.group(0) if m else ""


def _split_parts(parts: list[str], sent_caption: str | None) -> Triplet | None:
    parts = [p for p in (_clean_part(p) for p in parts)]
    while parts and not parts[-1]:
        parts.pop()  # a trailing ';'
    if len(parts) < 3:
        return None
    if len(parts) == 3:
        return Triplet(*parts)
    # extra semicolons: the source caption is the prefix that equals the caption that was sent ...
    if sent_caption is not None:
        target_norm = normalize_caption(sent_caption)
        for i in range(1, len(parts) - 1):
            if normalize_caption("; ".join(parts[:i])) == target_norm:
                return Triplet("; ".join(parts[:i]), parts[i], "; ".join(parts[i + 1 :]))
    # ... else the instruction is the first later part that starts with an imperative verb
    for i in range(1, len(parts) - 1):
        if _first_word(parts[i]) in _IMPERATIVE:
            return Triplet("; ".join(parts[:i]), parts[i], "; ".join(parts[i + 1 :]))
    return Triplet(parts[0], parts[1], "; ".join(parts[2:]))


def parse_triplets(text: str, sent_caption: str | None = None) -> ParseResult:
    """Every `caption; instruction; new caption` triplet found in a model reply, in order."""
    result = ParseResult()
    block: dict[str, str] = {}
    in_fence_lang = False
    for raw in str(text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("```"):
            in_fence_lang = not in_fence_lang
            continue
        if set(line) <= set("|-: "):
            continue  # markdown table rule
        if line.startswith("|") and line.count("|") >= 4:
            cells = [c for c in (c.strip() for c in line.strip("|").split("|")) if c]
            low = line.lower()
            if len(cells) >= 3 and not ("instruction" in low and "caption" in low):
                t = _split_parts(cells[-3:], sent_caption)
                if t:
                    result.triplets.append(t)
                    continue
            result.skipped_lines += 1
            continue
        m = _BLOCK_LABEL.match(line.replace("**", "").lstrip("-*• ").strip())
        if m and ";" not in m.group("value"):
            label = m.group("label").lower()
            kind = (
                "instruction"
                if "instruction" in label
                else ("target" if any(k in label for k in ("new", "edited", "target", "output")) else "source")
            )
            block[kind] = _clean_part(m.group("value"))
            if len(block) == 3:
                result.triplets.append(Triplet(block["source"], block["instruction"], block["target"]))
                block = {}
            continue
        cleaned = _clean_line(line)
        if ";" not in cleaned:
            result.skipped_lines += 1
            continue
        t = _split_parts(cleaned.split(";"), sent_caption)
        if t is None:
            result.skipped_lines += 1
            continue
        result.triplets.append(t)
    return result


@dataclass(frozen=True)
class Validated:
    triplet: Triplet | None
    reason: str = ""  # why it was rejected (triplet is None)
    source_replaced: bool = False  # kept for the schema: a differing source is now rejected, never replaced


@dataclass(frozen=True)
class PromptEchoes:
    """What the prompt showed the model (docs/method.md §1): an answer that copies it is not a new edit."""

    instructions: frozenset[str] = frozenset()  # instruction keys of the listed and example instructions
    captions: frozenset[str] = frozenset()  # normalised source and target captions of the example triplets

    @classmethod
    def of(cls, instructions: list[str], examples: list[tuple[str, str, str]]) -> PromptEchoes:
        keys = {instruction_key(i) for i in instructions} | {instruction_key(e[1]) for e in examples}
        caps = {normalize_caption(e[0]) for e in examples} | {normalize_caption(e[2]) for e in examples}
        return cls(frozenset(keys), frozenset(caps))


# A refusal or an answer that obeyed an injected instruction, in any part of the triplet.
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)?t (?:help|do|assist|comply|provide|create|write)|"
    r"i cannot|i won'?t|i'?m unable|i am unable|as an ai|as a language model|(?:ignor|disregard)(?:e|ing) "
    r"(?:all |the )?(?:previous|prior|above) instructions|here is a (?:poem|story|song))\b",
    re.I,
)
# Minimal edit: the target keeps at least this share of the source's content words (and at least one), and adds
# at most max(MAX_ADDED_WORDS, number of source content words) new ones. The human seed pool's smallest share is
# 0.25 ("A boy waving his hand." -> "A boy jumping in the air."); its largest addition is 4 words.
MIN_KEPT_SHARE = 0.2
MAX_ADDED_WORDS = 8


def edit_size_problem(source: str, target: str) -> str:
    """Why `target` is not a minimal edit of `source` (content words kept and added), or ''."""
    src, tgt = content_tokens(source), content_tokens(target)
    if not src:
        return ""
    kept = len(src & tgt)
    if kept == 0 or kept / len(src) < MIN_KEPT_SHARE:
        return f"target is not an edit of the source (keeps {kept} of {len(src)} content words)"
    added = len(tgt - src)
    if added > max(MAX_ADDED_WORDS, len(src)):
        return f"target rewrites the source ({added} new content words)"
    return ""


def validate_triplet(
    t: Triplet,
    sent_caption: str | None = None,
    max_words: int = MAX_CAPTION_WORDS,
    echoes: PromptEchoes | None = None,
) -> Validated:
    """Apply the dataset rules; returns the triplet or None with the reason (docs/method.md §1).

    Rules: three non-empty parts; no refusal or obeyed injection; the source part matches the caption that was sent
    (after normalising case, spaces, quotes and trailing punctuation); each caption ≤ `max_words` whitespace words;
    target differs from source; the instruction is not a caption; the target is a minimal edit of the source; and
    nothing is copied from the prompt's own instructions and examples (`echoes`).
    """
    source, instruction, target = t.source.strip(), t.instruction.strip(), t.target.strip()
    if not source or not instruction or not target:
        return Validated(None, "empty part")
    # refusal wording the model wrote (not wording the caption itself carries)
    sent = (sent_caption or "").lower()
    if any(m.group(0).lower() not in sent for part in (source, instruction, target) for m in _REFUSAL.finditer(part)):
        return Validated(None, "refusal or off-topic answer")
    if sent_caption is not None and normalize_caption(source) != normalize_caption(sent_caption):
        return Validated(None, "source caption differs from the caption sent")
    if word_count(source) > max_words or word_count(target) > max_words:
        return Validated(None, f"caption longer than {max_words} words")
    if normalize_caption(target) == normalize_caption(source):
        return Validated(None, "target equals source")
    if normalize_caption(instruction) in (normalize_caption(source), normalize_caption(target)):
        return Validated(None, "instruction repeats a caption")
    if echoes is not None:
        if instruction_key(instruction) in echoes.instructions:
            return Validated(None, "instruction copied from the prompt's examples")
        if normalize_caption(target) in echoes.captions:
            return Validated(None, "target echoes an in-context example")
    problem = edit_size_problem(source, target)
    if problem:
        return Validated(None, problem)
    return Validated(Triplet(source, instruction, target))


# -- instruction similarity ---------------------------------------------------------------------------------------


def instruction_key(instruction: str) -> str:
    """Exact-duplicate key: normalised text (case, spaces, trailing punctuation, quotes)."""
    return normalize_caption(instruction)


def content_tokens(instruction: str) -> frozenset[str]:
    """Content words of an instruction: lower case, stop words removed, a plural 's' dropped."""
    out = set()
    for w in _WORD.findall(instruction.lower()):
        if w in _STOP:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(w)
    return frozenset(out)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_flags(instructions: list[str], threshold: float = 0.8) -> list[bool]:
    """Flag each instruction whose content-word Jaccard similarity with an EARLIER one is ≥ `threshold`.

    The first of a group stays unflagged. Uses prefix filtering (tokens ordered by rarity): two sets with Jaccard ≥ t
    must share one of the first |A| - ceil(t·|A|) + 1 rarest tokens, so only those candidates are compared.
    """
    import math
    from collections import Counter, defaultdict

    sets = [content_tokens(s) for s in instructions]
    freq = Counter(tok for s in sets for tok in s)
    index: dict[str, list[int]] = defaultdict(list)
    flags = [False] * len(sets)
    for i, s in enumerate(sets):
        ordered = sorted(s, key=lambda tok: (freq[tok], tok))
        prefix = ordered[: max(1, len(ordered) - math.ceil(threshold * len(ordered)) + 1)] if ordered else []
        seen: set[int] = set()
        for tok in prefix:
            for j in index[tok]:
                if j not in seen:
                    seen.add(j)
                    if jaccard(s, sets[j]) >= threshold:
                        flags[i] = True
                        break
            if flags[i]:
                break
        if not ordered and any(not sets[j] for j in range(i)):
            flags[i] = True
        for tok in prefix:
            index[tok].append(i)
    return flags
