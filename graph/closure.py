"""Materialized transitive closure of the detected ``DERIVED_FROM`` edges, for the embedded store.

Why: at 1M models a recursive CTE spends ~100 ms inside SQLite on a 10k-descendant family (one index
seek per node for the recursion, another for its edges, another for its label) before any Python runs;
with the closure, ``derivatives`` is one range scan plus the labels.

A row ``(anc, dsc, hops, low, parent, score)`` says that ``dsc`` reaches ``anc`` by following detected
edges upward: ``hops`` is the shortest chain (≤ ``MAX_DEPTH``); among the shortest chains, ``low`` is the
largest weakest edge score, ``parent`` is ``dsc``'s direct parent on such a chain (the smallest key on a
tie) and ``score`` the score of ``dsc → parent``. :func:`graph.queries._bfs` computes the same thing
downward from ``anc``, so the closure and the traversal answer identically (tested on graphs with ties,
merges and cycles).

Maintenance: a change to the edges out of ``s`` changes the rows of ``s`` and of its descendants (found in
the closure itself) and of no other node. Those rows are recomputed inside the write's transaction from
each direct parent's own closure::

    closure(x) = best over edges x → p (score s) of {(p, 1, s)} ∪ {(a, h + 1, min(s, l)) : (a, h, l) ∈ closure(p)}

A parent that is itself being recomputed is walked from the raw edges (a level-synchronous BFS) instead
of read from the table, so the recomputed nodes need no order between them, and cycles in bad data end
at ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable

from graph.store import MAX_DEPTH

VERSION = "1"
DDL = """
CREATE TABLE IF NOT EXISTS derived_closure (
  anc TEXT NOT NULL, dsc TEXT NOT NULL, hops INTEGER NOT NULL, low REAL NOT NULL, parent TEXT NOT NULL,
  score REAL NOT NULL, PRIMARY KEY (anc, dsc)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS closure_dsc ON derived_closure(dsc, anc, hops, low);  -- covers closure(p) reads
"""
_CHUNK = 5000

Reach = dict[str, tuple[int, float]]
"""``{ancestor: (hops, low)}`` of one node."""


def _in(keys: Iterable[str]) -> str:
    # Keys travel as one JSON array parameter whatever their count (no statement built from data).
    return json.dumps(sorted(set(keys)))


def out_edges(db: sqlite3.Connection, srcs: Iterable[str]) -> list[tuple[str, str, float]]:
    """``(src, dst, score)`` of every detected edge out of ``srcs``."""
    return db.execute("SELECT src, dst, score FROM derived_from WHERE src IN (SELECT value FROM json_each(?))",
                      (_in(srcs),)).fetchall()


def _up_edges(db: sqlite3.Connection, srcs: Iterable[str]) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for s, d, score in out_edges(db, srcs):
        if s != d:
            out[s].append((d, score))
    return out


def _walk(db: sqlite3.Connection, sources: set[str]) -> dict[str, Reach]:
    """``closure(p)`` for every source from the raw edges: one query per level for all sources together."""
    reach: dict[str, Reach] = {p: {} for p in sources}
    level: dict[str, dict[str, float]] = {p: {p: float("inf")} for p in sources}
    for hops in range(1, MAX_DEPTH):  # a parent's rows are used one hop further down: stop one short
        up = _up_edges(db, {a for lv in level.values() for a in lv})
        nxt: dict[str, dict[str, float]] = {}
        for p, lv in level.items():
            seen = reach[p]
            cand: dict[str, float] = {}
            for a, low in lv.items():
                for b, s in up.get(a, ()):
                    if b != p and b not in seen:
                        v = min(low, s)
                        if v > cand.get(b, -float("inf")):
                            cand[b] = v
            if cand:
                seen.update((b, (hops, v)) for b, v in cand.items())
                nxt[p] = cand
        if not nxt:
            break
        level = nxt
    return reach


def _stored(db: sqlite3.Connection, nodes: set[str]) -> dict[str, Reach]:
    out: dict[str, Reach] = {p: {} for p in nodes}
    for d, a, hops, low in db.execute("SELECT dsc, anc, hops, low FROM derived_closure "
                                      "WHERE dsc IN (SELECT value FROM json_each(?))", (_in(nodes),)):
        out[d][a] = (hops, low)
    return out


def _descendants(db: sqlite3.Connection, nodes: set[str]) -> set[str]:
    return {d for (d,) in db.execute("SELECT dsc FROM derived_closure WHERE anc IN (SELECT value FROM json_each(?))",
                                     (_in(nodes),))}


def refresh(db: sqlite3.Connection, changed: set[str], *, from_edges: bool = False) -> int:
    """Recompute the closure rows of ``changed`` (nodes whose outgoing edges changed) and their descendants.

    Call inside the write's transaction, after the edges are written. ``from_edges`` walks every parent
    from the raw edges (used to build the closure of a store that had none). Returns rows written.
    """
    affected = set(changed) if from_edges else set(changed) | _descendants(db, changed)
    written = 0
    todo = sorted(affected)
    for i in range(0, len(todo), _CHUNK):
        nodes = set(todo[i : i + _CHUNK])
        parents = _up_edges(db, nodes)
        sources = {p for ps in parents.values() for p, _ in ps}
        walk = sources if from_edges else sources & affected
        reach = _walk(db, walk)
        reach.update(_stored(db, sources - walk))
        rows: list[tuple[str, str, int, float, str, float]] = []
        for x in nodes:
            best: dict[str, tuple[int, float, str, float]] = {}
            for p, s in parents.get(x, ()):
                for a, (hops, low) in [(p, (0, float("inf"))), *reach[p].items()]:
                    if a == x or hops + 1 > MAX_DEPTH:
                        continue
                    cand = (hops + 1, min(s, low), p, s)
                    old = best.get(a)
                    # Shortest first, then the strongest weakest link, then the smallest parent key.
                    if old is None or (cand[0], -cand[1], cand[2]) < (old[0], -old[1], old[2]):
                        best[a] = cand
            rows.extend((a, x, *v) for a, v in best.items())
        db.execute("DELETE FROM derived_closure WHERE dsc IN (SELECT value FROM json_each(?))", (_in(nodes),))
        db.executemany("INSERT INTO derived_closure VALUES (?, ?, ?, ?, ?, ?)", rows)
        written += len(rows)
    return written


def rebuild(db: sqlite3.Connection) -> int:
    """Build the closure of every node from the raw edges (a store written before the closure existed)."""
    db.execute("DELETE FROM derived_closure")
    srcs = sorted(s for (s,) in db.execute("SELECT DISTINCT src FROM derived_from"))
    return sum(refresh(db, set(srcs[i : i + _CHUNK]), from_edges=True) for i in range(0, len(srcs), _CHUNK))
