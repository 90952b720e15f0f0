"""The graph commands end to end through click, on the embedded store under LINEAGE_HOME."""

from __future__ import annotations

import json
import os
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner
from graphdata import T0, model

from graph.records import DerivedEdge
from graph.sqlite import SqliteStore
from lineage.cli import main


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
    home = Path(os.environ["LINEAGE_HOME"])
    out = run("derivatives", "nobody/none", code=2)
    assert "LINEAGE_HOME" in out and "does not exist" in out and not home.exists()  # a typo'd home
    home.mkdir()
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
    # a port that is not a number is refused by its shape, before any driver or lookup (it printed an
    # 82-line traceback and exited 1)
    for uri in ("bolt://127.0.0.1:notaport", "bolt://127.0.0.1:70000", "bolt://:7687"):
        monkeypatch.setenv("LINEAGE_GRAPH", uri)
        out = run("stats", code=2)
        assert out.startswith("Error: LINEAGE_GRAPH") and "a port from 1 to 65535" in out and out.count("\n") == 1, out
    monkeypatch.setenv("LINEAGE_GRAPH", "bolt://neo:s3cret@127.0.0.1:x")
    out = run("stats", code=2)
    assert "s3cret" not in out and "neo:***@" in out


def test_an_exact_copy_answers_with_the_model_it_copies(loaded: None) -> None:
    a = json.loads(run("ancestors", "eve/quant-copy", "--json"))["ancestors"]
    assert [(r["id"], r["hops"], r["via"], r["child"]) for r in a] == [
        ("dave/quant", 1, "same_weights", "eve/quant-copy"), ("meta/base", 2, "detected", "dave/quant")]
    out = run("ancestors", "eve/quant-copy")
    assert "child" in out.splitlines()[1] and "next" not in out and "same_weights" in out


def test_family_tree_prints_each_edges_own_score(loaded: None) -> None:
    s = SqliteStore(Path(os.environ["LINEAGE_HOME"]) / "graph.sqlite")
    s.upsert_models([model("k-sft4", "zed/sft4")], T0)
    s.upsert_derived([DerivedEdge("k-sft4", "k-sft3", 0.9, z=30.0)], T0)
    s.close()
    out = run("family", "meta/base")
    # zed/sft4's own edge scores 0.9; the weakest on its chain is bob/sft3's 0.42 (in --json as min_score)
    assert "└─ zed/sft4  score 0.900" in out and "└─ bob/sft3  score 0.420" in out
    members = {m["id"]: m for m in json.loads(run("family", "meta/base", "--json"))["members"]}
    assert members["zed/sft4"]["min_score"] == pytest.approx(0.42)


def test_undeclared_with_an_unknown_family_is_an_error(loaded: None) -> None:
    out = run("undeclared", "--family", "lama-x", code=2)
    assert out.startswith("Error: no family 'lama-x'") and "llama-x" in out and out.count("\n") == 1


def test_a_closed_pipe_ends_quietly(loaded: None) -> None:
    """``lineage ancestors x | head -0``: the reader is gone before the first write."""
    import subprocess
    import sys

    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        p = subprocess.run([sys.executable, "-m", "lineage", "ancestors", "bob/sft3"], stdout=w_fd,
                           stderr=subprocess.PIPE, text=True, timeout=120, env={**os.environ})
    finally:
        os.close(w_fd)
    assert p.returncode == 141 and p.stderr == "", p.stderr


def test_fingerprint_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    out = run("fingerprint", str(Path(__file__).parents[1] / "data" / "golden-tiny-llama.lfp"), "-o",
              str(tmp_path / "no" / "such" / "x.lfp"), code=2)
    assert "is not a directory" in out and not (tmp_path / "no").exists()


def test_queries_work_on_a_home_this_user_may_only_read(loaded: None) -> None:
    """A read-only home (a shared volume, another user's service) answers every query; nothing is
    created or changed in it. Root is denied the override of file modes for the subprocess."""
    import shutil
    import stat
    import subprocess
    import sys

    home = Path(os.environ["LINEAGE_HOME"])
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot be denied write access")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    for p in [home, *home.iterdir()]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        probe = subprocess.run([*prefix, "touch", str(home / "probe")], capture_output=True)
        assert probe.returncode != 0, "the home is still writable"
        for args in (["derivatives", "meta/base"], ["ancestors", "bob/sft3"], ["family", "meta/base"],
                     ["undeclared"], ["stats"]):
            r = subprocess.run([*prefix, sys.executable, "-m", "lineage", *args, "--json"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
            assert r.returncode == 0, (args, r.stderr)
            json.loads(r.stdout)
    finally:
        for p in [home, *home.iterdir()]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before
