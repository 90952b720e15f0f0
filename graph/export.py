"""Export the whole lineage graph: GraphML (via networkx), JSON, or a Cypher script that recreates it."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import networkx as nx

from graph.store import LineageStore

FORMATS = ("graphml", "json", "cypher")
_EDGE_TYPES = ("IN_FAMILY", "DERIVED_FROM", "DECLARES_BASE", "SAME_WEIGHTS", "SHARES_INIT")


def to_networkx(store: LineageStore) -> nx.MultiDiGraph:
    """Models and families as nodes (``label`` attribute), the five edge types as keyed edges."""
    d = store.dump()
    g = nx.MultiDiGraph()
    for m in d["models"]:
        g.add_node(m["key"], label="Model", **m)
    for f in d["families"]:
        g.add_node(f"family:{f['name']}", label="Family", **f)
    for t in _EDGE_TYPES:
        for e in d.get(t, []):
            dst = f"family:{e['dst']}" if t == "IN_FAMILY" else e["dst"]
            g.add_edge(e["src"], dst, key=t, type=t, **{k: v for k, v in e.items() if k not in ("src", "dst")})
    return g


def _graphml_safe(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    # GraphML has no null: drop missing attributes rather than write the string "None".
    h = nx.MultiDiGraph()
    h.add_nodes_from((n, {k: v for k, v in a.items() if v is not None}) for n, a in g.nodes(data=True))
    h.add_edges_from((u, v, k, {a: x for a, x in d.items() if x is not None}) for u, v, k, d in g.edges(keys=True, data=True))
    return h


def cypher_literal(v: Any) -> str:
    """A Cypher literal for ``v`` (strings single-quoted with backslash escapes; finite numbers only)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    s = str(v).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{s}'"


def _map(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"`{k}`: {cypher_literal(v)}" for k, v in d.items()) + "}"


def to_cypher(store: LineageStore) -> str:
    """A script of idempotent MERGE statements, one per line, that rebuilds the graph in Neo4j."""
    d = store.dump()
    out = io.StringIO()
    for m in d["models"]:
        out.write(f"MERGE (m:Model {{key: {cypher_literal(m['key'])}}}) SET m += {_map(m)};\n")
    for f in d["families"]:
        out.write(f"MERGE (f:Family {{name: {cypher_literal(f['name'])}}}) SET f += {_map(f)};\n")
    for e in d["IN_FAMILY"]:
        out.write(f"MATCH (a:Model {{key: {cypher_literal(e['src'])}}}) MATCH (f:Family {{name: {cypher_literal(e['dst'])}}}) "
                  f"MERGE (a)-[r:IN_FAMILY]->(f) SET r.via = {cypher_literal(e['via'])};\n")
    for t in ("DERIVED_FROM", "DECLARES_BASE", "SAME_WEIGHTS", "SHARES_INIT"):
        for e in d.get(t, []):
            props = {k: v for k, v in e.items() if k not in ("src", "dst")}
            out.write(f"MATCH (a:Model {{key: {cypher_literal(e['src'])}}}) MATCH (b:Model {{key: {cypher_literal(e['dst'])}}}) "
                      f"MERGE (a)-[r:{t}]->(b) SET r += {_map(props)};\n")
    return out.getvalue()


def export(store: LineageStore, fmt: str) -> str:
    """The graph as text in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return json.dumps(store.dump(), indent=1, sort_keys=True)
    if fmt == "cypher":
        return to_cypher(store)
    if fmt == "graphml":
        buf = io.BytesIO()
        nx.write_graphml(_graphml_safe(to_networkx(store)), buf)
        return buf.getvalue().decode("utf-8")
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
