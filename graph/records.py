"""Frozen records written to the lineage store, validated before any backend sees them.

Keys: a ``Model`` is keyed on the Hub's stable ``_id`` (``key``); its repo ``id`` (``org/name``) can change
with a rename and is a plain indexed property. Edges name both ends by ``key``. Times are epoch
milliseconds (integers everywhere: date types differ across graph servers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from graph.errors import InvalidRecordError

Relation = Literal["finetune", "adapter", "merge", "quantized", "unknown"]
RELATIONS: tuple[str, ...] = ("finetune", "adapter", "merge", "quantized", "unknown")
Verdict = Literal["derived", "inconclusive", "independent"]
#: What a detected edge's weights say it is (fingerprint.relation.RELATIONS, which this package may not
#: import; a test keeps the two equal), plus ``untyped`` for an edge the weights could not type.
TYPED_RELATIONS: tuple[str, ...] = ("copy", "quantized", "finetune", "adapter_merged", "continued_pretraining",
                                    "pruned", "upcycled", "vocab_changed", "merge", "untyped")
MAX_KEY = 512
MAX_EVIDENCE = 2000


def _key(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY or "\x00" in value:
        raise InvalidRecordError(f"{what} must be a non-empty string of at most {MAX_KEY} characters, got {value!r}")
    return value


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise InvalidRecordError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


def _bounded(text: str, what: str) -> None:
    if len(text) > MAX_EVIDENCE:
        raise InvalidRecordError(f"{what} is limited to {MAX_EVIDENCE} characters (store big evidence elsewhere)")


def _opt_int(value: int | None, what: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise InvalidRecordError(f"{what} must be a non-negative integer or None, got {value!r}")


@dataclass(frozen=True)
class ModelRecord:
    """A model repository and what the crawler learned about it."""

    key: str
    id: str
    sha: str | None = None
    author: str | None = None
    created_at_ms: int | None = None
    last_modified_ms: int | None = None
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    gated: bool = False
    architecture: str | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    vocab_size: int | None = None
    num_params: int | None = None
    fingerprint_version: str | None = None
    pipeline_tag: str | None = None
    library: str | None = None
    candidate_family: bool = False
    """No confident match, no declared base, looks like a full pretrain: flagged, not silently a root."""
    claims: str | None = None
    """A quote of the card text's "trained from scratch" claim, bounded (checked against the weights)."""

    def __post_init__(self) -> None:
        _key(self.key, "Model.key")
        _key(self.id, "Model.id")
        for name in ("created_at_ms", "last_modified_ms", "hidden_size", "num_layers", "vocab_size", "num_params"):
            _opt_int(getattr(self, name), f"Model.{name}")

    def props(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FamilyRecord:
    """A base family: a model trained from scratch (``root_key``) and everything derived from it."""

    name: str
    root_key: str | None = None
    display_name: str | None = None
    license: str | None = None

    def __post_init__(self) -> None:
        _key(self.name, "Family.name")
        if self.root_key is not None:
            _key(self.root_key, "Family.root_key")

    def props(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InFamily:
    """``(Model)-[:IN_FAMILY {via}]->(Family)``; a model is in at most one family."""

    model_key: str
    family: str
    via: Literal["declared", "matched", "root"] = "matched"

    def __post_init__(self) -> None:
        _key(self.model_key, "InFamily.model_key")
        _key(self.family, "InFamily.family")
        if self.via not in ("declared", "matched", "root"):
            raise InvalidRecordError(f"InFamily.via must be declared, matched or root, got {self.via!r}")


@dataclass(frozen=True)
class DerivedEdge:
    """``(child)-[:DERIVED_FROM]->(parent)``: what the weights say (detected)."""

    src: str
    dst: str
    score: float
    z: float | None = None
    verdict: Verdict = "derived"
    method: str = "lineage"
    method_version: str = "1"
    detected_at_ms: int = 0
    evidence: str = ""
    relation: str | None = None
    """The typed relation (``TYPED_RELATIONS``); None: not typed yet, and an upsert with None keeps what
    is stored (placement rewrites edges; typing them is a separate, slower job)."""
    relation_detail: str = ""
    """JSON: the type's rule, flags and statistics (bounded like ``evidence``)."""

    def __post_init__(self) -> None:
        _key(self.src, "DerivedEdge.src")
        _key(self.dst, "DerivedEdge.dst")
        if self.src == self.dst:
            raise InvalidRecordError(f"a model cannot derive from itself: {self.src!r}")
        if not isinstance(self.score, (int, float)) or not math.isfinite(self.score) or not -1.0 <= self.score <= 1.0:
            raise InvalidRecordError(f"DerivedEdge.score must be a finite number in [-1, 1], got {self.score!r}")
        if self.z is not None and not math.isfinite(self.z):
            raise InvalidRecordError(f"DerivedEdge.z must be finite, got {self.z!r}")
        if self.verdict not in ("derived", "inconclusive", "independent"):
            raise InvalidRecordError(f"DerivedEdge.verdict must be derived/inconclusive/independent, got {self.verdict!r}")
        _opt_int(self.detected_at_ms, "DerivedEdge.detected_at_ms")
        _bounded(self.evidence, "DerivedEdge.evidence")
        if self.relation is not None:
            _one_of(self.relation, TYPED_RELATIONS, "DerivedEdge.relation")
        _bounded(self.relation_detail, "DerivedEdge.relation_detail")

    def props(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TypedRelation:
    """The type a relation pass found for an existing ``DERIVED_FROM`` edge (``src`` → ``dst``)."""

    src: str
    dst: str
    relation: str
    detail: str = ""

    def __post_init__(self) -> None:
        _key(self.src, "TypedRelation.src")
        _key(self.dst, "TypedRelation.dst")
        _one_of(self.relation, TYPED_RELATIONS, "TypedRelation.relation")
        _bounded(self.detail, "TypedRelation.detail")


@dataclass(frozen=True)
class DeclaredEdge:
    """``(model)-[:DECLARES_BASE {relation, source}]->(base)``: what the model card claims."""

    src: str
    dst: str
    relation: str = "unknown"
    source: str = "model_card"

    def __post_init__(self) -> None:
        _key(self.src, "DeclaredEdge.src")
        _key(self.dst, "DeclaredEdge.dst")
        _one_of(self.relation, RELATIONS, "DeclaredEdge.relation")

    def props(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SameWeights:
    """``(a)-[:SAME_WEIGHTS {sha256}]->(b)``: identical weight files by LFS sha256, stored once with a < b."""

    a: str
    b: str
    sha256: str = ""

    def __post_init__(self) -> None:
        _key(self.a, "SameWeights.a")
        _key(self.b, "SameWeights.b")
        if self.a == self.b:
            raise InvalidRecordError("SAME_WEIGHTS needs two different models")

    def ordered(self) -> SameWeights:
        return self if self.a < self.b else SameWeights(self.b, self.a, self.sha256)

    def props(self) -> dict[str, Any]:
        return asdict(self.ordered())


@dataclass(frozen=True)
class SharedInit:
    """``(later)-[:SHARES_INIT {score, z}]->(earlier)``: the weights share a random start but neither is
    the other's trained parent (same seed and shapes, trained apart): not a derivative, so no lineage
    query follows it. ``src`` is the model placed later; its set of these is replaced on each placement."""

    src: str
    dst: str
    score: float
    z: float | None = None
    method_version: str = "1"
    detected_at_ms: int = 0

    def __post_init__(self) -> None:
        _key(self.src, "SharedInit.src")
        _key(self.dst, "SharedInit.dst")
        if self.src == self.dst:
            raise InvalidRecordError("SHARES_INIT needs two different models")
        if not isinstance(self.score, (int, float)) or not math.isfinite(self.score) or not -1.0 <= self.score <= 1.0:
            raise InvalidRecordError(f"SharedInit.score must be a finite number in [-1, 1], got {self.score!r}")
        if self.z is not None and not math.isfinite(self.z):
            raise InvalidRecordError(f"SharedInit.z must be finite, got {self.z!r}")
        _opt_int(self.detected_at_ms, "SharedInit.detected_at_ms")

    def props(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Lineage:
    """One row of a traversal answer: a model reached in ``hops`` steps, the weakest detected score on the way.

    Not frozen: a transitive answer builds ~10k of these, and a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) was a fifth of a 1M-model query.
    """

    id: str
    key: str
    hops: int
    min_score: float | None
    via: str
    parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return d
