"""The graph commands end to end through click, on the embedded store under LINEAGE_HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner
from graphdata import load

from graph.sqlite import SqliteStore
from lineage.cli import main


@pytest.fixture
def loaded() -> None:
    s = SqliteStore(Path(os.environ["LINEAGE_HOME"]) / "graph.sqlite")
    s.ensure_schema()
    load(s)
    s.close()


def run(*args: str, code: int = 0) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


def test_queries_as_json(loaded: None) -> None:
    d = json.loads(run("derivatives", "meta/base", "--json"))
    assert [r["id"] for r in d["derivatives"]] == ["alice/sft", "carol/rl", "dave/quant", "bob/sft2", "bob/sft3"]
    d = json.loads(run("derivatives", "meta/base", "--declared", "--depth", "1", "--json"))
    assert d["mode"] == "declared" and len(d["derivatives"]) == 3
    a = json.loads(run("ancestors", "bob/sft3", "--json"))
    assert [r["id"] for r in a["ancestors"]] == ["bob/sft2", "alice/sft", "meta/base"]
    f = json.loads(run("family", "bob/sft3", "--json"))
    assert f["root"] == "meta/base" and len(f["members"]) == 5
    u = json.loads(run("undeclared", "--family", "llama-x", "--json"))
    assert {r["id"] for r in u["undeclared"]} == {"bob/sft3", "carol/rl"}
    s = json.loads(run("stats", "--json"))
    assert s["counts"]["Model"] == 9


def test_human_output(loaded: None, tmp_path: Path) -> None:
    out = run("family", "meta/base")
    assert "└─ alice/sft" in out and "      └─ bob/sft3" in out
    assert "bob/sft3" in run("undeclared")
    assert "llama-x" in run("stats")
    assert "No undeclared derivatives in family other." in run("undeclared", "--family", "other")
    assert "Nothing derives from bob/sft3" in run("derivatives", "bob/sft3")
    run("export", "--format", "graphml", "-o", str(tmp_path / "g.graphml"))
    assert nx.read_graphml(tmp_path / "g.graphml").number_of_nodes() == 11


def test_errors_are_one_line() -> None:
    out = run("derivatives", "nobody/none", code=2)
    assert out.strip() == "Error: no model 'nobody/none' in the lineage store"
    out = run("derivatives", "x", "--depth", "0", code=2)
    assert "Invalid value for '--depth'" in out


def test_unreachable_neo4j_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEAGE_GRAPH", "bolt://127.0.0.1:1")
    out = run("stats", code=2)
    assert out.startswith("Error: cannot reach Neo4j at bolt://127.0.0.1:1") and out.count("\n") == 1
    monkeypatch.setenv("LINEAGE_GRAPH", "mysql://x")
    assert "use 'embedded' or a Neo4j URI" in run("stats", code=2)
