"""Comparison methods, by name: ``METHODS[name](a, b) -> CompareResult`` on two opened checkpoints.

``lineage`` (ours, the default), ``awm`` (faithful AWM), ``huref`` and ``reef`` (published baselines).
The verdict policy they share is :mod:`.verdict`; fingerprint files compare with
:func:`.lineage.compare_fingerprints`.

The registry names each method's module and function and imports it on first use, so listing the names
(``--method`` choices, ``--help``) costs nothing. ``lineage`` on two checkpoints needs numpy and scipy's
LAP only; the baselines and the sketch path pull in torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fingerprint.canonical import CanonicalModel
    from fingerprint.similarity.verdict import CompareResult

Method = Callable[["CanonicalModel", "CanonicalModel"], "CompareResult"]


class Registry(Mapping[str, Method]):
    """Method name → function, from ``"module:function"`` references resolved on first lookup."""

    def __init__(self, refs: dict[str, str]) -> None:
        self._refs = refs
        self._loaded: dict[str, Method] = {}

    def __getitem__(self, name: str) -> Method:
        if name not in self._loaded:
            module, func = self._refs[name].split(":")
            self._loaded[name] = getattr(import_module(module), func)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


METHODS = Registry({
    "lineage": "fingerprint.similarity.lineage:compare_lineage",
    "awm": "fingerprint.similarity.awm:compare_awm",
    "huref": "fingerprint.similarity.huref:compare_huref",
    "reef": "fingerprint.similarity.reef:compare_reef",
})
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
        from fingerprint.errors import ComparisonError

        raise ComparisonError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](a, b)


__all__ = ["DESCRIPTIONS", "METHODS", "Method", "Registry", "compare"]
