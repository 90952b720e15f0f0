"""The questions users ask, as plain functions over any :class:`graph.store.LineageStore`.

Backends return reachable edges (a recursive CTE in SQLite, hop-by-hop expansion in Neo4j); hop counts, the weakest score on
the way and the undeclared/misdeclared classification are computed here once, so both backends answer
identically. One exception, for speed: the embedded store keeps a closure of the detected edges and answers
detected ``derivatives`` from it under the same rules (``_bfs``'s docstring; tested against ``_bfs``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from graph.errors import InvalidRecordError, UnknownFamilyNameError, UnknownModelError
from graph.records import TYPED_RELATIONS, FamilyRecord, Lineage, ModelRecord
from graph.store import MAX_DEPTH, MODES, EdgeRow, LineageStore, Mode


def resolve(store: LineageStore, ident: str) -> ModelRecord:
    """The model whose repo id or stable key is ``ident`` (repo id wins when both match)."""
    found = store.get_models([ident])
    if not found:
        raise UnknownModelError(ident)
    return next((m for m in found if m.id == ident), found[0])


def _check(depth: int, min_score: float, mode: str) -> None:
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidRecordError(f"depth must be between 1 and {MAX_DEPTH}, got {depth}")
    if not -1.0 <= min_score <= 1.0:
        raise InvalidRecordError(f"min score must be in [-1, 1], got {min_score}")
    if mode not in MODES:
        raise InvalidRecordError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def _bfs(start: str, edges: Iterable[EdgeRow], *, upward: bool, depth: int) -> dict[str, tuple[int, float | None, EdgeRow]]:
    """Shortest hop count from ``start`` over ``edges``, level by level.

    Among a node's shortest chains it keeps the one whose weakest detected score is largest (a chain of
    declared edges only has no score and ranks last), then the smallest key of the node it comes from, so
    the answer is unique; the embedded store's closure (:mod:`graph.closure`) applies the same rule.
    Returns ``{key: (hops, min_score_on_path, last_edge)}``. The visited set makes cycles harmless.
    """
    nxt: dict[str, list[EdgeRow]] = defaultdict(list)
    for e in edges:
        nxt[e.src if upward else e.dst].append(e)
    best: dict[str, tuple[int, float | None, EdgeRow]] = {}
    level: dict[str, float | None] = {start: None}
    seen = {start}
    for hops in range(1, depth + 1):
        cand: dict[str, tuple[tuple[float, str], float | None, EdgeRow]] = {}
        for key, low in level.items():
            for e in nxt.get(key, ()):
                other = e.dst if upward else e.src
                if other in seen:
                    continue
                score = low if e.score is None else (e.score if low is None else min(low, e.score))
                rank = (float("inf") if score is None else -score, key)
                old = cand.get(other)
                if old is None or rank < old[0]:
                    cand[other] = (rank, score, e)
        if not cand:
            break
        for k, (_, score, e) in cand.items():
            best[k] = (hops, score, e)
        seen.update(cand)
        level = {k: score for k, (_, score, _) in cand.items()}
    return best


def _rows(store: LineageStore, start: str, best: dict[str, tuple[int, float | None, EdgeRow]], *,
          upward: bool) -> list[Lineage]:
    labels = store.labels([start, *best])
    out = []
    for key, (hops, low, e) in best.items():
        rid, lic = labels.get(key, (key, None))
        parent = e.dst if not upward else e.src
        out.append(Lineage(id=rid, key=key, hops=hops, min_score=low,
                           via="detected" if e.kind == "DERIVED_FROM" else "declared",
                           parent=labels.get(parent, (parent, None))[0], extra={"license": lic, "score": e.score}))
    return sorted(out, key=lambda r: (r.hops, r.id))


def derivatives(store: LineageStore, ident: str, *, depth: int = MAX_DEPTH, min_score: float = 0.0,
                mode: Mode = "detected", relation: str | None = None) -> list[Lineage]:
    """Models that derive from ``ident``, transitively up to ``depth`` hops.

    A model is reached in ``hops`` = the shortest chain child → … → ``ident``; ``min_score`` keeps only chains
    whose every detected edge scores at least that much (declared edges carry no score and always pass).
    Each detected row carries the typed ``relation`` of the edge it was reached by (None: not typed yet);
    ``relation`` keeps only the rows of that type.
    """
    _check(depth, min_score, mode)
    if relation is not None and relation not in TYPED_RELATIONS:
        raise InvalidRecordError(f"relation must be one of {', '.join(TYPED_RELATIONS)}, got {relation!r}")
    root = resolve(store, ident)
    rows = store.descendants(root.key, depth=depth, min_score=min_score) if mode == "detected" else None
    if rows is None:
        edges = store.reach(root.key, upward=False, mode=mode, depth=depth, min_score=min_score)
        rows = _rows(store, root.key, _bfs(root.key, edges, upward=False, depth=depth), upward=False)
    return _typed(store, rows, relation)


def _typed(store: LineageStore, rows: list[Lineage], relation: str | None) -> list[Lineage]:
    """Attach to each detected row the relation of its edge to the parent it was reached from (one batched
    read of those models' detected edges), and keep only ``relation``'s rows when it is given."""
    edges = store.detected_from([r.key for r in rows if r.via == "detected"]) if rows else []
    labels = store.labels(sorted({e.dst for e in edges})) if edges else {}
    typed = {(e.src, labels.get(e.dst, (e.dst, None))[0]): e.relation for e in edges}
    for r in rows:
        if r.via == "detected":
            r.extra["relation"] = typed.get((r.key, r.parent or ""))
    return rows if relation is None else [r for r in rows if r.extra.get("relation") == relation]


def ancestors(store: LineageStore, ident: str, *, depth: int = MAX_DEPTH, mode: Mode = "detected") -> list[Lineage]:
    """What ``ident`` comes from: every model up its chains, nearest first; ``parent`` holds the next model
    *down* the chain (the child the row was reached from; the CLI prints it as ``child``).

    An exact re-upload has no edge of its own (the pipeline records ``SAME_WEIGHTS`` to the first upload
    instead): its answer is that copy (``via`` = ``same_weights``, one hop) and then the copy's ancestors.
    """
    _check(depth, 0.0, mode)
    m = resolve(store, ident)
    edges = store.reach(m.key, upward=True, mode=mode, depth=depth, min_score=-1.0)
    rows = _rows(store, m.key, _bfs(m.key, edges, upward=True, depth=depth), upward=True)
    if rows or depth < 2:
        return rows
    for copy in store.copies_of(m.key):
        up = store.reach(copy, upward=True, mode=mode, depth=depth - 1, min_score=-1.0)
        if not up:
            continue
        cid, lic = store.labels([copy]).get(copy, (copy, None))
        above = _rows(store, copy, _bfs(copy, up, upward=True, depth=depth - 1), upward=True)
        for r in above:
            r.hops += 1
        return [Lineage(id=cid, key=copy, hops=1, min_score=None, via="same_weights", parent=m.id,
                        extra={"license": lic, "score": None}), *above]
    return rows


def family(store: LineageStore, ident: str) -> dict[str, Any]:
    """The whole tree of ``ident``'s base family: its root and every detected descendant with parent and score."""
    m = resolve(store, ident)
    fam = store.family_of(m.key)
    root_key = fam.root_key if fam and fam.root_key else None
    if root_key is None:
        ups = ancestors(store, m.id)
        root_key = max(ups, key=lambda r: r.hops).key if ups else m.key
    root = resolve(store, root_key)
    tree = derivatives(store, root.key)
    return {"family": fam.name if fam else None, "license": fam.license if fam else root.license,
            "root": root.id, "root_key": root.key, "members": [r.to_dict() for r in tree],
            "shared_init": shared_starts(store, root.key)}


def shared_starts(store: LineageStore, key: str) -> list[dict[str, Any]]:
    """The models ``key`` shares a random initialization with (``SHARES_INIT`` either way): trained apart
    from one start, so neither derives from the other; each with the weights' score and z."""
    rows = store.shared_init(key)
    other = [e.dst if e.src == key else e.src for e in rows]
    labels = store.labels(other) if other else {}
    return [{"id": labels.get(k, (k, None))[0], "key": k, "license": labels.get(k, (k, None))[1],
             "score": e.score, "z": e.z} for k, e in zip(other, rows)]


def undeclared(store: LineageStore, family_name: str | None = None) -> list[dict[str, Any]]:
    """Models whose weights derive from a base their card does not name.

    ``undeclared``: detected parent, no ``base_model`` at all. ``declared_differently``: the card names bases,
    but none of them is among the detected ancestors and none is in the detected family.
    Rows are sorted by repo id. Each row carries the model's licence and its family root's (``family_license``) as the cards give
    them; whether they differ is licence policy (``alerts.policy``).
    """
    if family_name is not None and store.family_named(family_name) is None:
        raise UnknownFamilyNameError(family_name, sorted(f.name for f, _ in store.families()))
    detected = [e for e in store.detected_edges(family_name) if e.verdict == "derived"]
    all_detected = store.detected_edges(None) if family_name is not None else detected
    parents: dict[str, list[str]] = defaultdict(list)
    for e in all_detected:
        if e.verdict == "derived":
            parents[e.src].append(e.dst)
    declared: dict[str, list[str]] = defaultdict(list)
    for e in store.declared_edges(sorted({e.src for e in detected})):
        declared[e.src].append(e.dst)
    keys = {e.src for e in detected} | {e.dst for e in detected} | {k for v in declared.values() for k in v}
    models = {m.key: m for m in store.get_models(sorted(keys))}
    fams = store.families_of(sorted({e.src for e in detected} | {k for v in declared.values() for k in v}))
    roots = {f.root_key for f in fams.values() if f.root_key}
    models.update({m.key: m for m in store.get_models(sorted(roots - set(models)))})
    return undeclared_rows(detected, parents, declared, models, fams)


def undeclared_rows(detected: Iterable[EdgeRow], parents: dict[str, list[str]], declared: dict[str, list[str]],
                    models: dict[str, ModelRecord], fams: dict[str, FamilyRecord]) -> list[dict[str, Any]]:
    """:func:`undeclared` on graph facts already read: the ``derived`` ``detected`` edges to judge;
    ``parents``: detected parents of every model on their way up (ancestry); ``declared``: declared bases
    of their children; ``models``: the records of both ends, declared bases and family roots; ``fams``:
    the family of each child and declared base that has one."""

    def ancestry(key: str) -> set[str]:
        out: set[str] = set()
        todo = list(parents.get(key, []))
        while todo and len(out) < 100_000:
            k = todo.pop()
            if k not in out:
                out.add(k)
                todo.extend(parents.get(k, []))
        return out

    out = []
    for e in sorted(detected, key=lambda e: (e.src, e.dst)):
        child, parent = models.get(e.src), models.get(e.dst)
        if child is None or parent is None:
            continue
        decl = declared.get(e.src, [])
        ups = ancestry(e.src)
        my_family = fams.get(e.src)
        if not decl:
            reason = "undeclared"
        elif any(d in ups or (my_family is not None and fams.get(d) == my_family) for d in decl):
            continue
        else:
            reason = "declared_differently"
        root_license = None
        if my_family is not None and my_family.root_key:
            r = models.get(my_family.root_key)
            root_license = r.license if r is not None else my_family.license
        out.append({"id": child.id, "key": child.key, "reason": reason, "detected_parent": parent.id,
                    "score": e.score, "declared": [models[d].id for d in decl if d in models],
                    "family": my_family.name if my_family else None, "license": child.license,
                    "family_license": root_license})
    return sorted(out, key=lambda r: (r["id"], r["detected_parent"]))  # by repo id: what a reader scans


def stats(store: LineageStore) -> dict[str, Any]:
    """Models per family, per month of creation (UTC), and per declared relation / detected verdict."""
    months: dict[str, int] = defaultdict(int)
    for day, n in store.created_per_day():
        months[(dt.date(1970, 1, 1) + dt.timedelta(days=day)).strftime("%Y-%m")] += n
    return {
        "counts": store.counts(),
        "families": [{"family": f.name, "root": f.root_key, "license": f.license, "models": n}
                     for f, n in store.families()],
        "per_month": dict(sorted(months.items())),
        "per_relation": dict(sorted(store.relation_counts().items())),
    }
