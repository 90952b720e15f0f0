"""The one interface both backends implement, and the small rows they return.

Backends do the storage work (batched idempotent upserts, reachability inside the database);
the query semantics (hops, weakest score on the way, what counts as undeclared) live once in
:mod:`graph.queries` on top of these primitives, so the embedded store and Neo4j cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol

from graph.records import (
    DeclaredEdge,
    DerivedEdge,
    FamilyRecord,
    InFamily,
    Lineage,
    ModelRecord,
    SameWeights,
    SharedInit,
    TypedRelation,
)

Mode = Literal["detected", "declared", "both"]
MODES: tuple[str, ...] = ("detected", "declared", "both")
MAX_DEPTH = 32
"""Hard bound on every traversal: lineage chains are short; a cycle in bad data must still terminate."""
BATCH = 5000
"""Rows per write transaction (the Neo4j ingestion guide's 1k-10k range)."""


class EdgeRow(NamedTuple):
    """A lineage edge as traversals return it: ``src`` derives from / declares ``dst`` (model keys).

    A named tuple, not a dataclass: traversals build tens of thousands of them per query.
    """

    src: str
    dst: str
    kind: str
    score: float | None = None
    verdict: str | None = None
    relation: str | None = None
    z: float | None = None  # filled by detected_edges only (the alerts' evidence); traversals leave it None


class LineageStore(Protocol):
    """Storage primitives. Every write is an idempotent upsert keyed on stable keys."""

    backend: str

    def ensure_schema(self) -> list[str]:
        """Create tables/constraints/indexes if missing; return notes on features the server lacks."""
        ...

    def upsert_models(self, rows: Sequence[ModelRecord], now_ms: int) -> int: ...

    def upsert_families(self, rows: Sequence[FamilyRecord], now_ms: int) -> int: ...

    def set_families(self, rows: Sequence[InFamily], now_ms: int) -> int:
        """Put each model in exactly one family (replacing an earlier membership)."""
        ...

    def upsert_derived(self, rows: Sequence[DerivedEdge], now_ms: int, *, replace: bool = False) -> int:
        """Write DERIVED_FROM edges (both ends must exist; returns how many were written).

        ``replace=True``: for every child in ``rows``, DERIVED_FROM edges to parents not in ``rows`` are
        deleted, so a re-detection that moves a model to another parent updates it in place.
        """
        ...

    def set_relations(self, rows: Sequence[TypedRelation], now_ms: int) -> int:
        """Store the type of existing ``DERIVED_FROM`` edges (an edge that is gone is skipped); returns how
        many were set. Re-placing an edge keeps its type (``DerivedEdge.relation`` None)."""
        ...

    def untyped_derived(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(src, dst)`` of ``derived`` edges not typed yet, oldest detection first."""
        ...

    def drop_derived(self, srcs: Sequence[str], now_ms: int) -> int:
        """Delete every DERIVED_FROM edge out of the models ``srcs`` (a model that turned out to be a copy,
        or a root, keeps no detected parent); returns how many were deleted."""
        ...

    def clear_placement(self, keys: Sequence[str], now_ms: int, *, copies: bool = False) -> int:
        """Undo what placing the models ``keys`` wrote: their family membership, their ``DERIVED_FROM``
        parents, their ``SHARES_INIT`` relations and their candidate-family flag; with ``copies``, their
        ``SAME_WEIGHTS`` pairs too. Nodes, declared bases and families stay (:meth:`drop_families` removes
        the families left empty). Returns how many memberships were removed."""
        ...

    def drop_families(self, names: Sequence[str], now_ms: int) -> int:
        """Delete the families ``names`` that have no member left (a candidate family whose root joined
        an older family); a family with members is kept. Returns how many were deleted."""
        ...

    def upsert_declared(self, rows: Sequence[DeclaredEdge], now_ms: int) -> int: ...

    def upsert_same_weights(self, rows: Sequence[SameWeights], now_ms: int) -> int: ...

    def set_shared_init(self, src: str, rows: Sequence[SharedInit], now_ms: int) -> int:
        """Make ``rows`` (all from ``src``) exactly ``src``'s ``SHARES_INIT`` relations; returns those written."""
        ...

    def shared_init(self, key: str | None) -> list[EdgeRow]:
        """``SHARES_INIT`` relations from or to ``key`` (every one when None), with score and z."""
        ...

    def get_models(self, idents: Sequence[str]) -> list[ModelRecord]:
        """Models whose key or repo id is in ``idents``."""
        ...

    def labels(self, keys: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """``{key: (repo id, licence)}`` for the keys that exist (cheap: traversal answers need only these)."""
        ...

    def reach(self, key: str, *, upward: bool, mode: Mode, depth: int, min_score: float) -> list[EdgeRow]:
        """Every edge on a path of at most ``depth`` hops that ends (or, upward, starts) at ``key``,
        following ``mode`` edges whose score is at least ``min_score`` (declared edges have no score)."""
        ...

    def descendants(self, key: str, *, depth: int, min_score: float) -> list[Lineage] | None:
        """Detected derivatives from a materialized closure, exactly as :func:`graph.queries.derivatives`
        would compute them from :meth:`reach`; None when the backend keeps none or it cannot answer."""
        ...

    def family_of(self, key: str) -> FamilyRecord | None: ...

    def family_members(self, name: str) -> list[str]: ...

    def detected_edges(self, family: str | None) -> list[EdgeRow]:
        """All DERIVED_FROM edges whose child is in ``family`` (all of them for None)."""
        ...

    def declared_edges(self, srcs: Sequence[str] | None) -> list[EdgeRow]:
        """DECLARES_BASE edges from ``srcs`` (every one when None)."""
        ...

    def copies(self) -> list[EdgeRow]:
        """Every SAME_WEIGHTS pair (unordered: ``src`` < ``dst`` by key; which one is the re-upload is the
        caller's judgement, e.g. the later-created one)."""
        ...

    def families(self) -> list[tuple[FamilyRecord, int]]:
        """Every family with its member count."""
        ...

    def created_per_day(self) -> list[tuple[int, int]]:
        """(days since the epoch, models created that day); the caller turns days into months."""
        ...

    def relation_counts(self) -> dict[str, int]: ...

    def copies_of(self, key: str) -> list[str]:
        """Keys of the models with exactly ``key``'s weight files (``SAME_WEIGHTS`` either way)."""
        ...

    # -- what changed, and batched reads of a set of models (the alerts' incremental evaluation) ------
    def touched_since(self, ms: int) -> list[str]:
        """Keys of the models a write concerned at or after ``ms`` (wall-clock epoch ms): a model written,
        its family membership set or removed, a detected or declared edge out of it written or deleted,
        an exact-copy pair it is part of, a family it is the root of written."""
        ...

    def families_of(self, keys: Sequence[str]) -> dict[str, FamilyRecord]:
        """The family of each of ``keys`` that has one (:meth:`family_of`, in one read)."""
        ...

    def detected_from(self, srcs: Sequence[str]) -> list[EdgeRow]:
        """The ``DERIVED_FROM`` edges out of ``srcs``, with score, verdict and z."""
        ...

    def declarers_of(self, dsts: Sequence[str]) -> list[str]:
        """Keys of the models whose card declares one of ``dsts``."""
        ...

    def children_of(self, dsts: Sequence[str]) -> list[str]:
        """Keys of the models with a detected parent among ``dsts``."""
        ...

    def copies_among(self, keys: Sequence[str]) -> list[EdgeRow]:
        """The ``SAME_WEIGHTS`` pairs with at least one end in ``keys`` (ordered as :meth:`copies`)."""
        ...

    def family_named(self, name: str) -> FamilyRecord | None:
        """The family called ``name`` (its root and licence), without counting its members."""
        ...

    def search(self, prefix: str, limit: int) -> list[ModelRecord]:
        """Models whose repo id starts with ``prefix``, case-insensitively, in id order (an indexed range)."""
        ...

    def recent_derived(self, limit: int) -> list[DerivedEdge]:
        """The latest ``DERIVED_FROM`` edges by detection time, with their evidence."""
        ...

    def parent_edges(self, key: str) -> list[DerivedEdge]:
        """The ``DERIVED_FROM`` edges out of ``key`` (its detected parents), best score first, with evidence."""
        ...

    def counts(self) -> dict[str, int]:
        """Nodes and edges by label/type."""
        ...

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Everything, for export: models, families, and each edge type."""
        ...

    def close(self) -> None: ...


def batches(rows: Sequence[Any], size: int = BATCH) -> list[Sequence[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
