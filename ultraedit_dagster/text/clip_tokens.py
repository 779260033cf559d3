"""Counting CLIP text tokens without importing torch: CLIP's byte-level BPE over the vocabulary open_clip ships.

Equivalent to open_clip's SimpleTokenizer for counting (checked in tests/text/test_text_assets.py); importing open_clip
itself takes tens of seconds because it pulls in torch and every model definition.
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from importlib import util as importlib_util
from pathlib import Path

import regex

_PAT = regex.compile(
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
)


def _vocab_path() -> Path:
    spec = importlib_util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is not installed: its BPE vocabulary is needed to count CLIP tokens")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


class ClipBPE:
    def __init__(self) -> None:
        merges = gzip.open(_vocab_path()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_encoder = _bytes_to_unicode()
        self.cache: dict[str, int] = {}

    def _bpe_len(self, token: str) -> int:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            first, second = best
            new: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        self.cache[token] = len(word)
        return len(word)

    def count(self, text: str) -> int:
        """BPE tokens of `text` (without the start / end tokens)."""
        try:
            import ftfy

            text = ftfy.fix_text(text)
        except ImportError:
            pass
        text = html.unescape(html.unescape(text)).strip()
        text = " ".join(text.split()).lower()
        total = 0
        for tok in _PAT.findall(text):
            total += self._bpe_len("".join(self.byte_encoder[b] for b in tok.encode("utf-8")))
        return total


@lru_cache(maxsize=1)
def clip_bpe() -> ClipBPE:
    return ClipBPE()
