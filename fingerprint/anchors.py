"""Which shared tokens anchor an alignment: a bottom-k sketch of the vocabulary by SHA-1.

Two models with the same vocabulary keep the same tokens and overlapping vocabularies keep overlapping
anchors, whatever the token ids or the vocabulary order. No torch here: the pairwise comparison and
the fingerprint files both use it.
"""

from __future__ import annotations

import hashlib

DEFAULT_ANCHORS = 4000
"""Anchor tokens kept: with an untied head at d=4096 their rows are 32.8 MB, so a 7B file stays under 50 MB."""


def token_hash(key: str) -> bytes:
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).digest()


def bottom_k(keys: list[str], k: int) -> list[str]:
    """The ``k`` keys with the smallest SHA-1, returned sorted (a deterministic, vocab-order-free sample)."""
    if len(keys) <= k:
        return sorted(keys)
    return sorted(sorted(keys, key=token_hash)[:k])
