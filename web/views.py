"""The data behind every page: one function per page, returning the JSON twin's document.

The HTML page renders exactly this document (``web/templates``), so a page and its ``.json`` twin state
the same facts. Everything here reads the store (and, for alerts, the alerts state) and nothing else.
Every parameter is bounded before it reaches a query; every id and card string stays data (the
templates escape it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from alerts import policy
from alerts.outbox import AlertStore
from alerts.policy import differs
from graph import queries
from graph.errors import UnknownModelError
from graph.records import DerivedEdge, FamilyRecord, ModelRecord
from graph.store import EdgeRow, LineageStore
from web.errors import BadRequestError, NotFoundError

MAX_QUERY = 200
MAX_LIMIT = 500
#: more direct children than this are shown as "N more" groups (by relation, then organisation)
GROUP_AT = 12
#: families listed on the home page (the largest first)
HOME_FAMILIES = 50
#: a subtree this small is shown whole; a larger one a level at a time
SMALL_TREE = 150
#: at most this many groups around one model (the smaller ones pooled per relation)
MAX_GROUPS = 24
HUB = "https://huggingface.co"
#: the home page's count tiles, in words (the graph's bookkeeping, ``IN_FAMILY``, ``PUBLISHED_BY``,
#: ``HAS_LICENSE``, stays in the twin's ``counts``)
TILES = (("Model", "models"), ("Family", "families"), ("DERIVED_FROM", "detected derivations"),
         ("DECLARES_BASE", "declared bases"), ("SAME_WEIGHTS", "exact copies"),
         ("SHARES_INIT", "shared random starts"), ("Organization", "organisations"), ("License", "licences"))


def bounded(value: int | None, default: int, top: int = MAX_LIMIT) -> int:
    if value is None:
        return default
    if not 1 <= value <= top:
        raise BadRequestError(f"limit must be between 1 and {top}")
    return value


def _text(q: str | None, what: str = "q") -> str:
    q = (q or "").strip()
    if len(q) > MAX_QUERY:
        raise BadRequestError(f"{what} is longer than {MAX_QUERY} characters")
    return q


def _model_doc(m: ModelRecord) -> dict[str, Any]:
    return {"key": m.key, "id": m.id, "author": m.author, "license": m.license, "gated": m.gated,
            "architecture": m.architecture, "hidden_size": m.hidden_size, "num_layers": m.num_layers,
            "created_at_ms": m.created_at_ms, "candidate_family": m.candidate_family, "claims": m.claims,
            "hub_url": f"{HUB}/{m.id}"}


def _evidence(raw: str) -> dict[str, Any]:
    """The stored evidence of an edge; layer scores as ``{layer_a, layer_b, q, k, score}``."""
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {"text": raw[:500]}
    if not isinstance(doc, dict):
        return {"text": str(doc)[:500]}
    layers = [{"layer_a": a, "layer_b": b, "q": q, "k": k, "score": round((q + k) / 2, 4)}
              for a, b, q, k in (x for x in doc.get("layers", []) if isinstance(x, list) and len(x) == 4)]
    return {**{k: v for k, v in doc.items() if k != "layers"}, "layers": layers}


def _edge_doc(e: DerivedEdge, labels: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    return {"child": labels.get(e.src, (e.src, None))[0], "parent": labels.get(e.dst, (e.dst, None))[0],
            "score": e.score, "z": e.z, "verdict": e.verdict, "method": e.method, "method_version": e.method_version,
            "detected_at_ms": e.detected_at_ms, "evidence": _evidence(e.evidence),
            "relation": e.relation, "relation_detail": _relation_detail(e.relation_detail)}


def _relation_detail(raw: str) -> dict[str, Any]:
    """What a typing pass stored of an edge's relation: its rule, flags, drift (JSON; anything else as text)."""
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {"text": raw[:500]}
    return doc if isinstance(doc, dict) else {"text": str(doc)[:500]}


def home(store: LineageStore, q: str | None = None, limit: int | None = None,
         aggregates: Callable[[str, Callable[[], Any]], Any] = lambda name, f: f()) -> dict[str, Any]:
    """Counts, a prefix search by model id, the latest detections and candidate families to review.

    ``aggregates(name, compute)`` may serve the whole-graph counts from a cache (they scan every model)."""
    q = _text(q)
    n = bounded(limit, 20)
    recent = store.recent_derived(n)
    labels = store.labels(sorted({k for e in recent for k in (e.src, e.dst)}))
    fams: list[tuple[FamilyRecord, int]] = aggregates("families", store.families)
    top = sorted(fams, key=lambda fc: (-fc[1], fc[0].name))[:HOME_FAMILIES]
    roots = {m.key: m for m in store.get_models([f.root_key for f, _ in fams if f.root_key])}
    candidates = [(f, n) for f, n in fams if f.root_key in roots and roots[f.root_key].candidate_family]

    def fam_doc(f: FamilyRecord, count: int) -> dict[str, Any]:
        r = roots.get(f.root_key or "")
        return {"family": f.name, "root": r.id if r else None, "license": f.license, "models": count,
                "candidate": bool(r and r.candidate_family)}

    counts = aggregates("counts", store.counts)
    return {
        "counts": counts,
        "tiles": [{"label": label, "count": counts.get(k, 0)} for k, label in TILES],
        "query": q,
        "results": [_model_doc(m) for m in store.search(q, n)] if q else [],
        "recent": [_edge_doc(e, labels) for e in recent],
        "families_total": len(fams),
        "families": [fam_doc(f, c) for f, c in top],
        "candidates": [fam_doc(f, c) for f, c in sorted(candidates, key=lambda fc: fc[0].name)][:MAX_LIMIT],
    }


def _resolve(store: LineageStore, ident: str) -> ModelRecord:
    ident = _text(ident, "model id")
    try:
        return queries.resolve(store, ident)
    except UnknownModelError:
        raise NotFoundError(f"no model {ident!r} in the graph") from None


def _children(store: LineageStore, key: str) -> list[EdgeRow]:
    """Direct children of ``key``: detected and declared edges into it, one row per child (detected wins)."""
    rows = store.reach(key, upward=False, mode="both", depth=1, min_score=-1.0)
    detected = {e.src: e for e in rows if e.dst == key and e.kind == "DERIVED_FROM"}
    declared = {e.src: e for e in rows if e.dst == key and e.kind != "DERIVED_FROM" and e.src not in detected}
    return (sorted(detected.values(), key=lambda e: (-(e.score or 0.0), e.src))
            + sorted(declared.values(), key=lambda e: e.src))


def model(store: LineageStore, alerts: AlertStore | None, ident: str) -> dict[str, Any]:
    """One model: declared and detected parents and children, copies, licence, evidence, alerts."""
    m = _resolve(store, ident)
    parents = store.parent_edges(m.key)
    declared = store.declared_edges([m.key])
    children = _children(store, m.key)
    copies = store.copies_of(m.key)
    fam = store.family_of(m.key)
    root_key = fam.root_key if fam is not None else None
    labels = store.labels([m.key, *(e.dst for e in parents), *(e.dst for e in declared),
                           *(e.src for e in children[:MAX_LIMIT]), *copies, *([root_key] if root_key else [])])

    def name(k: str) -> str:
        return labels.get(k, (k, None))[0]

    detected_ids = {name(e.dst) for e in parents if e.verdict == "derived"}
    declared_ids = [name(e.dst) for e in declared]
    root_license = None
    if fam is not None and root_key:
        root_license = labels[root_key][1] if root_key in labels else fam.license
    findings = []
    if alerts is not None:
        findings = [_alert_doc(f) for f in alerts.findings(status="all", model=m.id)]
    return {
        "model": _model_doc(m),
        "family": {"name": fam.name, "license": root_license} if fam else None,
        "license": {"model": m.license, "family": root_license,
                    "differs": differs(m.license, root_license)},
        "detected_parents": [_edge_doc(e, labels) for e in parents],
        "declared_parents": [{"id": name(e.dst), "relation": e.relation, "confirmed": name(e.dst) in detected_ids}
                             for e in declared],
        "undeclared": bool(detected_ids) and not declared_ids,
        "children": [{"id": name(e.src), "kind": e.kind, "score": e.score, "relation": e.relation}
                     for e in children[:MAX_LIMIT]],
        "children_total": len(children),
        "copies": sorted(name(k) for k in copies),
        "shared_init": [{"id": r["id"], "score": r["score"], "z": r["z"]} for r in queries.shared_starts(store, m.key)],
        "alerts": findings,
    }


def _node(m_id: str, key: str, lic: str | None, score: float | None, kind: str, relation: str | None,
          family_license: str | None) -> dict[str, Any]:
    return {"id": key, "label": m_id, "kind": "model", "score": score, "edge": kind, "relation": relation,
            "license": lic, "license_differs": differs(lic, family_license)}


def _groups(children: list[EdgeRow], repo_id: Callable[[str], str]) -> list[tuple[str, list[EdgeRow]]]:
    """Children grouped as ``relation:organisation``; past :data:`MAX_GROUPS` groups, the smaller ones are
    pooled per relation into ``relation:*`` (a base with thousands of fine-tuners stays a few dozen nodes).
    Largest first; members best score first."""
    by: dict[str, list[EdgeRow]] = defaultdict(list)
    gids = []
    for e in children:
        rel = e.relation or ("detected" if e.kind == "DERIVED_FROM" else "declared")
        gid = rel + ":" + repo_id(e.src).partition("/")[0]
        gids.append(gid)
        by[gid].append(e)
    ranked = sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    if len(ranked) <= MAX_GROUPS:
        return ranked
    keep = ranked[: MAX_GROUPS - 4]
    kept = {gid for gid, _ in keep}
    pools: dict[str, list[EdgeRow]] = defaultdict(list)
    for e, gid in zip(children, gids):  # in the children's order: no second sort
        if gid not in kept:
            pools[gid.partition(":")[0] + ":*"].append(e)
    return keep + sorted(pools.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def family(store: LineageStore, name: str, focus: str | None = None, expand: str | None = None) -> dict[str, Any]:
    """One level of a family's tree around ``focus`` (default: the root): the focus, its parent chain, and
    its direct children, more than :data:`GROUP_AT` of them grouped by relation and organisation into
    ``group`` nodes; ``expand`` (a group's id) lists that group's members instead of its count."""
    name = _text(name, "family")
    fam = store.family_named(name)
    if fam is None:
        raise NotFoundError(f"no family {name!r}")
    root = fam.root_key
    if root is None:
        raise NotFoundError(f"family {name!r} has no root model")
    center = _resolve(store, focus).key if focus else root
    chain = queries.ancestors(store, center) if center != root else []
    children = _children(store, center)
    labels = store.labels([center, root, *(r.key for r in chain), *(e.src for e in children)])
    lic = labels.get(root, (None, fam.license))[1]

    def label(k: str) -> tuple[str, str | None]:
        return labels.get(k, (k, None))

    nodes = [{**_node(label(center)[0], center, label(center)[1], None, "", None, lic), "kind": "focus"}]
    edges: list[dict[str, Any]] = []
    key_of = {r.id: r.key for r in chain}
    for r in chain:  # nearest first: r.parent is the next model down
        nodes.append({**_node(r.id, r.key, label(r.key)[1], r.min_score, "DERIVED_FROM", None, lic), "kind": "ancestor"})
        edges.append({"source": r.key, "target": key_of.get(r.parent or "", center), "kind": "DERIVED_FROM"})
    grouped = len(children) > GROUP_AT
    subtree = queries.derivatives(store, label(center)[0]) if not grouped and expand is None else None
    if subtree is not None and len(subtree) <= SMALL_TREE:  # a small family: the whole detected subtree at once
        in_tree = {r.key for r in subtree} | {center}
        key_of = {r.id: r.key for r in subtree}
        for r in subtree:
            nodes.append(_node(r.id, r.key, r.extra.get("license"), r.extra.get("score"), "DERIVED_FROM",
                               r.extra.get("relation"), lic))
            edges.append({"source": key_of.get(r.parent or "", center), "target": r.key, "kind": "DERIVED_FROM",
                          "score": r.extra.get("score")})
        # children only a card names: drawn under the focus, unless the weights placed them deeper in the tree
        shown = [e for e in children if e.src not in in_tree]
        for e in shown:
            nodes.append(_node(label(e.src)[0], e.src, label(e.src)[1], None, e.kind, e.relation, lic))
            edges.append({"source": center, "target": e.src, "kind": e.kind, "score": None})
        direct = sum(1 for r in subtree if r.hops == 1) + len(shown)
        declared_only = len(shown)
    else:
        subtree = None
        _one_level(nodes, edges, center, children, grouped, expand, label, lic)
        direct, declared_only = len(children), sum(1 for e in children if e.kind != "DERIVED_FROM")
    _copies(store, nodes, edges, lic)
    cand = store.get_models([root])
    return {"family": fam.name, "license": lic, "root": label(root)[0], "focus": label(center)[0],
            "expanded": expand, "children_total": direct, "declared_only": declared_only, "grouped": grouped,
            "candidate": bool(cand and cand[0].candidate_family),
            "shared_init": [{"id": r["id"], "score": r["score"], "z": r["z"]} for r in queries.shared_starts(store, root)],
            "descendants": len(subtree) if subtree is not None else None, "nodes": nodes, "edges": edges}


def _copies(store: LineageStore, nodes: list[dict[str, Any]], edges: list[dict[str, Any]], lic: str | None) -> None:
    """Each drawn model's exact copies (``SAME_WEIGHTS``), as ``copy`` nodes beside it: a copy has no
    placement of its own, so without this it would be in the family and nowhere in its tree."""
    drawn = {n["id"] for n in nodes}
    found: dict[str, str] = {}
    for n in [n for n in nodes if n["kind"] in ("model", "focus", "ancestor")]:
        for k in store.copies_of(n["id"]):
            if k not in drawn and k not in found:
                found[k] = n["id"]
    labels = store.labels(sorted(found))
    for k, twin in found.items():
        m_id, m_lic = labels.get(k, (k, None))
        nodes.append({**_node(m_id, k, m_lic, None, "SAME_WEIGHTS", None, lic), "kind": "copy"})
        edges.append({"source": twin, "target": k, "kind": "SAME_WEIGHTS", "score": None})


def _one_level(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], center: str, children: list[EdgeRow],
               grouped: bool, expand: str | None, label: Callable[[str], tuple[str, str | None]],
               lic: str | None) -> None:
    """The focus's direct children as nodes, grouped (see :func:`_groups`) unless few, ``expand`` open."""
    for gid, members in _groups(children, lambda k: label(k)[0]):
        if grouped and gid != expand and len(members) > 1:
            node_id = f"group:{center}:{gid}"
            what = gid.replace(":*", ": other organisations")
            nodes.append({"id": node_id, "label": f"{len(members)} more: {what}", "kind": "group", "group": gid,
                          "count": len(members)})
            edges.append({"source": center, "target": node_id, "kind": "group"})
            continue
        shown = members[:MAX_LIMIT]
        for e in shown:
            nodes.append(_node(label(e.src)[0], e.src, label(e.src)[1], e.score, e.kind, e.relation, lic))
            edges.append({"source": center, "target": e.src, "kind": e.kind, "score": e.score})
        if len(members) > len(shown):  # a group larger than a page: the rest stays a count
            node_id = f"rest:{center}:{gid}"
            nodes.append({"id": node_id, "label": f"{len(members) - len(shown)} not shown: {gid}", "kind": "rest",
                          "count": len(members) - len(shown)})
            edges.append({"source": center, "target": node_id, "kind": "group"})


def suspects(store: LineageStore, reason: str | None = None, family_name: str | None = None,
             sort: str = "score", limit: int | None = None) -> dict[str, Any]:
    """Undeclared and misdeclared derivatives, with licence differences: filterable and sortable."""
    if reason not in (None, "", "undeclared", "declared_differently"):
        raise BadRequestError("reason must be undeclared or declared_differently")
    if sort not in ("score", "id", "family"):
        raise BadRequestError("sort must be score, id or family")
    fam = _text(family_name, "family") or None
    rows = policy.suspects(store, fam)
    if reason:
        rows = [r for r in rows if r["reason"] == reason]
    key = {"score": lambda r: -(r["score"] or 0.0), "id": lambda r: r["id"], "family": lambda r: (r["family"] or "", r["id"])}
    rows.sort(key=key[sort])
    n = bounded(limit, 200)
    return {"reason": reason or None, "family": fam, "sort": sort, "total": len(rows), "suspects": rows[:n]}


def _alert_doc(f: dict[str, Any]) -> dict[str, Any]:
    keep = ("dedup_key", "kind", "severity", "model_id", "organization", "base_id", "family", "license", "reason",
            "status", "acked", "muted", "first_seen_ms", "resolved_ms")
    return {k: f.get(k) for k in keep}


def alert_list(alerts: AlertStore | None, status: str | None = None, kind: str | None = None,
               limit: int | None = None) -> dict[str, Any]:
    """Findings from the alerts state: ``open`` (default), ``resolved`` or ``all``, optionally one kind."""
    status = status or "open"
    if status not in ("open", "resolved", "all"):
        raise BadRequestError("status must be open, resolved or all")
    kind = _text(kind, "kind") or None
    n = bounded(limit, 200)
    rows = alerts.findings(status=status, kind=kind, limit=n) if alerts is not None else []
    return {"status": status, "kind": kind, "enabled": alerts is not None, "total": len(rows),
            "alerts": [_alert_doc(f) for f in rows]}
