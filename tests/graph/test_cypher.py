"""Static check that every statement in graph/cypher.py stays valid for Neo4j 5 and Neo4j 25.

The ArcadeDB server used in CI accepts syntax Neo4j rejects, so passing the Bolt suite is not enough.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from graph import cypher

STATEMENTS = cypher.all_statements()

# (pattern, why it is not allowed). Case-insensitive, on the statement with string literals blanked out.
FORBIDDEN = [
    (r"\bexists\s*\(\s*\w+\.\w+\s*\)", "exists(n.prop) was removed in Neo4j 5: use IS NOT NULL"),
    (r"\bIN\s+TRANSACTIONS\b", "CALL ... IN TRANSACTIONS only runs in auto-commit transactions on Neo4j"),
    (r"\bCALL\s*\{", "CALL {} subqueries: importing WITH is deprecated, scope clauses are 5.23+; keep them out"),
    (r"\bCALL\s*\(", "CALL (x) {} scope clauses need Neo4j 5.23+"),
    (r"(?<![.\w])id\s*\(", "id() is deprecated; use stable keys"),
    (r"\belementId\s*\(", "elementId() is not portable; use stable keys"),
    (r"\b(datetime|date|localdatetime|time|duration|timestamp)\s*\(", "temporal functions differ across servers: pass epoch-ms"),
    (r"\bCREATE\s+CONSTRAINT\s+ON\b", "CREATE CONSTRAINT ON ... ASSERT was removed in Neo4j 5"),
    (r"\bASSERT\b", "ASSERT was removed in Neo4j 5"),
    (r"\bCREATE\s+INDEX\s+ON\b", "CREATE INDEX ON :L(p) was removed in Neo4j 5"),
    (r"\bdb\.indexes\b|\bdb\.constraints\b", "db.indexes()/db.constraints() were removed"),
    (r"\bSET\s+\w+\s*\+?=\s*(?!\$|row\b)\w+\s*(,|$|\n)", "SET n = r / n += r with an entity on the right is gone in Cypher 25"),
    (r"=~", "regex is not portable across the servers we test"),
    (r"->\s*\{\s*\d", "quantified path patterns need Neo4j 5.9+"),
    (r"\bSHORTEST\b|\bshortestPath\b", "SHORTEST / shortestPath differ across versions"),
    (r"\bCOUNT\s*\{|\bEXISTS\s*\{|\bCOLLECT\s*\{", "subquery expressions are not portable"),
    (r"^\s*CYPHER\s+\d", "version prefixes are only understood by Neo4j 2025.06+"),
    (r"\bapoc\.", "APOC is a plugin"),
    (r"\bLET\b|\bFILTER\b|\bNEXT\b|\bWHEN\b", "Cypher 25-only clauses"),
]


def _blank_strings(q: str) -> str:
    return re.sub(r"'(?:\\.|[^'\\])*'", "''", q)


@pytest.mark.parametrize("q", STATEMENTS, ids=[f"stmt{i}" for i in range(len(STATEMENTS))])
def test_statement_uses_the_portable_subset(q: str) -> None:
    body = _blank_strings(q)
    for pattern, why in FORBIDDEN:
        assert not re.search(pattern, body, re.IGNORECASE | re.MULTILINE), f"{why}:\n{q}"
    for open_, close in ("()", "[]", "{}"):
        assert body.count(open_) == body.count(close), f"unbalanced {open_}{close}:\n{q}"
    # MATCH of two endpoints in one comma pattern plans a cartesian product on some engines.
    assert not re.search(r"MATCH\s*\([^)]*\)\s*,\s*\(", body), q
    # Variable-length patterns must be bounded (cycles in bad data must terminate).
    for m in re.finditer(r"\*(\d*)\.\.(\d*)", body):
        assert m.group(2), f"unbounded variable-length pattern:\n{q}"
    assert not re.search(r"\*\s*\]", body), f"unbounded variable-length pattern:\n{q}"


def test_every_statement_is_checked_and_values_are_parameters() -> None:
    src = Path(cypher.__file__).read_text()
    tree = ast.parse(src)
    assigned = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names = {n for n in assigned if n.isupper() and isinstance(getattr(cypher, n), str) and not n.startswith("_")}
    checked = set(STATEMENTS)
    assert all(getattr(cypher, n) in checked for n in names)
    assert len(STATEMENTS) >= 30
    for q in STATEMENTS:
        # No literal values other than relationship type names in type() comparisons.
        body = re.sub(r"type\(r\) = 'DECLARES_BASE'", "", q)
        assert "'" not in body and '"' not in body, f"literal in a statement (use $parameters):\n{q}"


def test_backend_runs_only_statements_from_the_cypher_module() -> None:
    src = Path(cypher.__file__).with_name("neo4j.py").read_text()
    tree = ast.parse(src)
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr in ("_run", "_write_batches", "execute_query", "run"):
            arg = call.args[0] if call.args else None
            ok = (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "cypher") \
                or (isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Attribute)) \
                or (isinstance(arg, ast.Name) and arg.id in ("query", "q", "stmt"))
            assert ok, f"line {call.lineno}: a statement not taken from graph.cypher"
