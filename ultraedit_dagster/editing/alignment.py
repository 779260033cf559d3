"""Token alignment between a source and a target caption, for Prompt-to-Prompt "refine" control.

Works on CLIP token ids (what the text encoder actually sees), not on whitespace words: a word the BPE splits into
several tokens aligns token by token, and a shared word keeps its attention even when its neighbours change.

The alignment is a global (Needleman-Wunsch) alignment with match = +1, mismatch = -1, gap = 0 — i.e. a longest
common subsequence of the token ids, monotone in both captions. Only *equal* tokens are ever aligned: a replaced
word is unaligned on both sides (its target tokens keep their own cross-attention, weight alpha = 0). Ties are
broken deterministically (the traceback from the end prefers a match, then leaving the target token unaligned, then
leaving the source token unaligned), so the same caption pair always gives the same mapping.

`refine_mapping` lifts the content alignment to the encoder's fixed-length sequence (77 for CLIP):
position 0 (start token) → 0; target content tokens → their aligned source positions (alpha 1) or themselves (alpha
0); the target's end token and the padding after it → the source's end token and padding, position for position from
the end token (alpha 1), clamped to the last position. The padding embeddings of CLIP carry the whole prompt (causal
attention) and receive much of the attention mass, so they are mapped like P2P does, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def align_tokens(source: list[int], target: list[int]) -> list[int]:
    """For each target token, the index of the equal source token it aligns to, or -1.

    Monotone: aligned pairs (i, j) are increasing in both i and j. The number of aligned pairs is the length of a
    longest common subsequence of `source` and `target`.
    """
    n, m = len(source), len(target)
    # score[i, j] = best score aligning source[:i] with target[:j]; match +1, mismatch never taken (-1 < two gaps)
    score = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(1, n + 1):
        si = source[i - 1]
        for j in range(1, m + 1):
            best = max(score[i - 1, j], score[i, j - 1])
            if si == target[j - 1]:
                best = max(best, score[i - 1, j - 1] + 1)
            score[i, j] = best
    mapping = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        if source[i - 1] == target[j - 1] and score[i, j] == score[i - 1, j - 1] + 1:
            mapping[j - 1] = i - 1
            i -= 1
            j -= 1
        elif score[i, j] == score[i, j - 1]:
            j -= 1  # target token j-1 unaligned (inserted / replaced)
        else:
            i -= 1  # source token i-1 unaligned (deleted / replaced)
    return mapping


@dataclass(frozen=True)
class RefineMapping:
    """Target position j reads source position `mapper[j]` with weight `alphas[j]` (length = max_length)."""

    mapper: np.ndarray  # int64 [max_length]
    alphas: np.ndarray  # float32 [max_length], 1.0 where the target token follows the source's attention

    @property
    def aligned_content(self) -> int:
        return int(self.alphas.sum())


def content_ids(input_ids: list[int], bos_id: int, eos_id: int) -> list[int]:
    """The caption's tokens between the start token and the first end token (padding excluded)."""
    ids = list(input_ids)
    if ids and ids[0] == bos_id:
        ids = ids[1:]
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return ids


def refine_mapping(source_ids: list[int], target_ids: list[int], max_length: int = 77) -> RefineMapping:
    """Lift `align_tokens` of the content tokens to full encoder positions (start token at 0, end token after).

    `source_ids` / `target_ids` are the content tokens only (no start / end / padding), already truncated so that
    start + content + end fits in `max_length`.
    """
    ls, lt = len(source_ids), len(target_ids)
    if ls + 2 > max_length or lt + 2 > max_length:
        raise ValueError(f"captions of {ls} / {lt} tokens do not fit in {max_length} positions with start/end tokens")
    mapper = np.arange(max_length, dtype=np.int64)
    alphas = np.zeros(max_length, dtype=np.float32)
    alphas[0] = 1.0  # start token
    content = align_tokens(source_ids, target_ids)
    for j, i in enumerate(content):
        if i >= 0:
            mapper[1 + j] = 1 + i
            alphas[1 + j] = 1.0
    # end token and padding, aligned from the end token onwards
    for k in range(max_length - (lt + 1)):
        mapper[lt + 1 + k] = min(ls + 1 + k, max_length - 1)
        alphas[lt + 1 + k] = 1.0
    return RefineMapping(mapper=mapper, alphas=alphas)


def identity_mapping(max_length: int = 77) -> RefineMapping:
    return RefineMapping(np.arange(max_length, dtype=np.int64), np.ones(max_length, dtype=np.float32))
