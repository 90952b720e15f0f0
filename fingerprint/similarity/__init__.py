"""Comparison methods, by name: ``METHODS[name](a, b) -> CompareResult`` on two opened checkpoints.

``lineage`` (ours, the default), ``awm`` (faithful AWM), ``huref`` and ``reef`` (published baselines).
The verdict policy they share is :mod:`.verdict`; fingerprint files compare with
:func:`.lineage.compare_fingerprints`.
"""

from __future__ import annotations

from collections.abc import Callable

from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.similarity.awm import compare_awm
from fingerprint.similarity.huref import compare_huref
from fingerprint.similarity.lineage import compare_fingerprints, compare_lineage
from fingerprint.similarity.reef import compare_reef
from fingerprint.similarity.verdict import CompareResult

Method = Callable[[CanonicalModel, CanonicalModel], CompareResult]

METHODS: dict[str, Method] = {
    "lineage": compare_lineage,
    "awm": compare_awm,
    "huref": compare_huref,
    "reef": compare_reef,
}
#: One line per method, for ``--help``.
DESCRIPTIONS: dict[str, str] = {
    "lineage": "ours (default): robust to function-preserving attacks",
    "awm": "faithful AWM baseline",
    "huref": "HuRef invariant terms",
    "reef": "REEF representations (needs transformers)",
}


def compare(a: CanonicalModel, b: CanonicalModel, method: str = "lineage") -> CompareResult:
    """Compare two opened models with one of :data:`METHODS`.

    Raises:
        ComparisonError: an unknown method, or a pair the method cannot compare.
    """
    if method not in METHODS:
        raise ComparisonError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](a, b)


__all__ = ["DESCRIPTIONS", "METHODS", "CompareResult", "compare", "compare_fingerprints"]
