"""Deterministic ids and random streams.

Every row's uid is a hash of its inputs, and every random choice is drawn from a generator seeded by
(global seed, uid, purpose), so re-materializing a shard reproduces it bit for bit whatever the batch order.
"""

from __future__ import annotations

import hashlib

import numpy as np


def make_uid(*parts: object, length: int = 16) -> str:
    """A stable hex id from the given parts (order matters)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x1f")  # unit separator: ("ab","c") != ("a","bc")
    return h.hexdigest()[:length]


def seed_for(global_seed: int, uid: str, purpose: str) -> int:
    """A 63-bit seed for one random purpose of one row."""
    digest = hashlib.sha256(f"{global_seed}\x1f{uid}\x1f{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def rng_for(global_seed: int, uid: str, purpose: str) -> np.random.Generator:
    """A numpy Generator private to (global seed, uid, purpose)."""
    return np.random.default_rng(seed_for(global_seed, uid, purpose))
