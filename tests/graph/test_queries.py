"""One behavioural suite for both lineage stores: embedded SQLite and Neo4j over Bolt (a real ArcadeDB server)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from boltserver import BoltServer
from graphdata import DAY, DECLARED, DERIVED, MODELS, T0, load, model

from graph import queries
from graph.errors import InvalidRecordError, StoreAuthError, StoreUnavailableError, UnknownModelError
from graph.export import export
from graph.neo4j import Neo4jStore, connect
from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord, SharedInit, TypedRelation
from graph.sqlite import SqliteStore
from graph.store import LineageStore


def _clear(store: Neo4jStore) -> None:
    store.driver.execute_query("MATCH (n) DETACH DELETE n", database_=store.database)


@pytest.fixture(params=["embedded", "neo4j"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LineageStore]:
    if request.param == "embedded":
        s: LineageStore = SqliteStore(tmp_path / "graph.sqlite")
    else:
        server: BoltServer = request.getfixturevalue("bolt")
        s = Neo4jStore(connect(server.uri, server.user, server.password), server.database, owns_driver=True)
        _clear(s)
    assert s.ensure_schema() == []
    assert s.ensure_schema() == []  # idempotent
    yield s
    s.close()


def _strip_times(dump: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {k: [{a: b for a, b in r.items() if not a.endswith("updated_at_ms")} for r in v] for k, v in dump.items()}


def test_writes_and_counts(store: LineageStore) -> None:
    load(store)
    c = store.counts()
    assert (c["Model"], c["Family"], c["IN_FAMILY"]) == (len(MODELS), 2, len(MODELS))
    assert (c["DERIVED_FROM"], c["DECLARES_BASE"], c["SAME_WEIGHTS"]) == (len(DERIVED), len(DECLARED), 1)
    assert c["Organization"] == len({m.author for m in MODELS})
    assert c["PUBLISHED_BY"] == c["HAS_LICENSE"] == len(MODELS)
    d = store.dump()
    sft = next(e for e in d["DERIVED_FROM"] if e["src"] == "k-sft")
    assert (sft["dst"], sft["score"], sft["z"], sft["evidence"], sft["verdict"]) == ("k-base", 0.91, 40.0, "layers 2/2", "derived")
    assert d["SAME_WEIGHTS"] == [{"src": "k-quant", "dst": "k-quant-copy", "sha256": "ab" * 32}]  # stored once, ordered
    got = store.get_models(["alice/sft"])[0]
    assert got == MODELS[1]


def test_writing_the_same_batch_twice_changes_nothing(store: LineageStore) -> None:
    load(store)
    before, counts = store.dump(), store.counts()
    load(store, now=T0 + 200 * DAY)
    assert store.counts() == counts
    assert _strip_times(store.dump()) == _strip_times(before)


def test_edges_to_missing_models_are_not_written(store: LineageStore) -> None:
    store.upsert_models(MODELS[:1], T0)
    assert store.upsert_derived([DerivedEdge("k-nope", "k-base", 0.5)], T0) == 0
    assert store.upsert_declared([DeclaredEdge("k-base", "k-nope")], T0) == 0
    assert store.counts()["DERIVED_FROM"] == store.counts()["DECLARES_BASE"] == 0


def test_rename_updates_in_place(store: LineageStore) -> None:
    load(store)
    renamed = ModelRecord(**{**MODELS[1].props(), "id": "alice-org/sft-renamed", "author": "alice-org"})
    store.upsert_models([renamed], T0 + 300 * DAY)
    assert store.counts()["Model"] == len(MODELS)
    with pytest.raises(UnknownModelError):
        queries.derivatives(store, "alice/sft")
    assert [r.id for r in queries.derivatives(store, "alice-org/sft-renamed")] == ["bob/sft2", "bob/sft3"]
    assert "alice-org/sft-renamed" in [r.id for r in queries.derivatives(store, "meta/base")]
    assert store.counts()["PUBLISHED_BY"] == len(MODELS)


def test_redetection_moves_the_parent(store: LineageStore) -> None:
    load(store)
    store.upsert_derived([DerivedEdge("k-sft3", "k-sft", 0.7, z=20.0)], T0 + 300 * DAY, replace=True)
    up = queries.ancestors(store, "bob/sft3")
    assert [(r.id, r.hops) for r in up] == [("alice/sft", 1), ("meta/base", 2)]
    assert store.counts()["DERIVED_FROM"] == len(DERIVED)


def test_dropping_parents_and_empty_families(store: LineageStore) -> None:
    load(store)
    assert store.drop_derived(["k-sft2"], T0) == 1  # sft2 turned out to be a root: its subtree moves up
    assert [r.id for r in queries.ancestors(store, "bob/sft3")] == ["bob/sft2"]
    assert store.drop_derived(["k-sft2"], T0) == 0  # idempotent
    store.upsert_families([FamilyRecord("cand", "k-other-sft", "cand (candidate)", None)], T0)
    store.set_families([InFamily("k-other-sft", "cand", "root")], T0)
    assert store.drop_families(["cand"], T0) == 0  # it has a member: kept
    store.set_families([InFamily("k-other-sft", "other-x", "matched")], T0)
    assert store.drop_families(["cand", "no-such-family"], T0) == 1
    assert "cand" not in {f.name for f, _ in store.families()} and store.family_of("k-other-sft").name == "other-x"


def test_clearing_placements(store: LineageStore) -> None:
    """clear_placement undoes exactly what placing wrote (membership, parents, shared starts, the
    candidate flag; copies only when asked), keeps nodes and declared bases, and is idempotent."""
    load(store)
    store.set_shared_init("k-other-sft", [SharedInit("k-other-sft", "k-base", 0.4, 30.0, "6", T0)], T0)
    store.upsert_models([ModelRecord(**{**MODELS[7].props(), "candidate_family": True})], T0)
    before = store.counts()
    assert store.clear_placement(["k-sft2", "k-other-sft", "k-quant-copy", "k-other"], T0) == 4
    c = store.counts()
    assert (c["IN_FAMILY"], c["DERIVED_FROM"], c["SHARES_INIT"]) == (before["IN_FAMILY"] - 4, before["DERIVED_FROM"] - 2, 0)
    assert (c["Model"], c["DECLARES_BASE"], c["SAME_WEIGHTS"]) == (before["Model"], before["DECLARES_BASE"], 1)
    assert store.family_of("k-sft2") is None and store.family_of("k-sft").name == "llama-x"
    assert [r.id for r in queries.ancestors(store, "bob/sft3")] == ["bob/sft2"]  # the closure follows
    assert not store.get_models(["k-other"])[0].candidate_family
    assert store.clear_placement(["k-sft2", "k-other-sft", "k-quant-copy", "k-other"], T0) == 0  # idempotent
    assert store.clear_placement(["k-quant"], T0, copies=True) == 1
    assert store.counts()["SAME_WEIGHTS"] == 0 and store.copies_of("k-quant-copy") == []
    assert store.drop_families(["other", "llama-x"], T0) == 1  # "other" lost both members
    assert store.clear_placement([], T0) == 0


def test_shared_init_is_replaced_per_model_and_is_not_lineage(store: LineageStore) -> None:
    """SHARES_INIT: each placement sets exactly its model's set (a re-placement replaces it, a replay
    changes nothing); it reads either way, is dumped, exported and counted, and no lineage query follows it."""
    load(store)
    rows = [SharedInit("k-other", "k-base", 0.42, 36.0, "6", T0), SharedInit("k-other", "k-sft", 0.41, 35.0, "6", T0)]
    assert store.set_shared_init("k-other", rows, T0) == 2
    assert store.set_shared_init("k-other", rows, T0 + 1) == 2  # a replay
    assert [(e.src, e.dst, e.score) for e in store.shared_init("k-base")] == [("k-other", "k-base", 0.42)]
    assert store.set_shared_init("k-other", rows[:1], T0) == 1  # placed again: only the family root is kept
    assert [(e.src, e.dst) for e in store.shared_init(None)] == [("k-other", "k-base")]
    assert [r["id"] for r in queries.shared_starts(store, "k-other")] == ["meta/base"]
    assert queries.family(store, "other/base")["shared_init"][0]["score"] == 0.42
    assert "other/base" not in {r.id for r in queries.derivatives(store, "meta/base")}
    assert store.counts()["SHARES_INIT"] == 1 and len(store.dump()["SHARES_INIT"]) == 1
    assert "SHARES_INIT" in export(store, "cypher") and "SHARES_INIT" in export(store, "graphml")
    assert store.set_shared_init("k-other", [SharedInit("k-other", "k-missing", 0.4)], T0) == 0  # unknown model
    assert store.shared_init("k-other") == []
    with pytest.raises(InvalidRecordError):
        SharedInit("k-a", "k-a", 0.4)


def test_derivatives_depth_score_and_modes(store: LineageStore) -> None:
    load(store)
    rows = queries.derivatives(store, "meta/base")
    assert [(r.id, r.hops, r.parent) for r in rows] == [
        ("alice/sft", 1, "meta/base"), ("carol/rl", 1, "meta/base"), ("dave/quant", 1, "meta/base"),
        ("bob/sft2", 2, "alice/sft"), ("bob/sft3", 3, "bob/sft2")]
    assert rows[-1].min_score == pytest.approx(0.42)
    assert [r.id for r in queries.derivatives(store, "meta/base", depth=1)] == ["alice/sft", "carol/rl", "dave/quant"]
    assert "bob/sft3" not in [r.id for r in queries.derivatives(store, "meta/base", min_score=0.5)]
    declared = queries.derivatives(store, "meta/base", mode="declared")
    assert [(r.id, r.hops, r.via) for r in declared] == [
        ("alice/sft", 1, "declared"), ("bob/sft2", 1, "declared"), ("dave/quant", 1, "declared")]
    both = {r.id: r.hops for r in queries.derivatives(store, "meta/base", mode="both")}
    assert both == {"alice/sft": 1, "carol/rl": 1, "dave/quant": 1, "bob/sft2": 1, "bob/sft3": 2}
    assert queries.derivatives(store, "bob/sft3") == []
    assert [r.id for r in queries.derivatives(store, "other/base", mode="declared")] == ["carol/rl", "other/sft"]


def test_ancestors_and_family(store: LineageStore) -> None:
    load(store)
    assert [(r.id, r.hops) for r in queries.ancestors(store, "bob/sft3")] == [
        ("bob/sft2", 1), ("alice/sft", 2), ("meta/base", 3)]
    assert queries.ancestors(store, "meta/base") == []
    fam = queries.family(store, "bob/sft2")
    assert (fam["family"], fam["root"], fam["license"]) == ("llama-x", "meta/base", "llama2")
    assert {m["id"]: m["parent"] for m in fam["members"]} == {
        "alice/sft": "meta/base", "carol/rl": "meta/base", "dave/quant": "meta/base",
        "bob/sft2": "alice/sft", "bob/sft3": "bob/sft2"}


def test_undeclared(store: LineageStore) -> None:
    load(store)
    listed = queries.undeclared(store)
    assert [r["id"] for r in listed] == sorted(r["id"] for r in listed)  # by repo id, not by internal key
    rows = {r["id"]: r for r in listed}
    assert set(rows) == {"bob/sft3", "carol/rl"}
    assert rows["bob/sft3"]["reason"] == "undeclared"
    assert rows["bob/sft3"]["family_license"] == "llama2" and rows["bob/sft3"]["license"] != "llama2"
    assert rows["carol/rl"]["reason"] == "declared_differently" and rows["carol/rl"]["declared"] == ["other/base"]
    assert [r["id"] for r in queries.undeclared(store, "other")] == []
    assert {r["id"] for r in queries.undeclared(store, "llama-x")} == {"bob/sft3", "carol/rl"}


def test_stats(store: LineageStore) -> None:
    load(store)
    s = queries.stats(store)
    assert {f["family"]: f["models"] for f in s["families"]} == {"llama-x": 7, "other": 2}
    assert s["per_month"] == {"2023-11": 2, "2023-12": 3, "2024-01": 4}
    assert s["per_relation"] == {"declared:finetune": 4, "declared:quantized": 1, "detected:derived": 6}


def test_exports(store: LineageStore, tmp_path: Path) -> None:
    load(store)
    doc = json.loads(export(store, "json"))
    assert len(doc["models"]) == len(MODELS) and len(doc["DERIVED_FROM"]) == len(DERIVED)
    path = tmp_path / "g.graphml"
    path.write_text(export(store, "graphml"))
    g = nx.read_graphml(path)
    assert g.number_of_nodes() == len(MODELS) + 2
    assert g.number_of_edges() == len(DERIVED) + len(DECLARED) + 1 + len(MODELS)
    ET.parse(path)
    script = export(store, "cypher")
    assert script.count("\n") == len(MODELS) + 2 + len(MODELS) + len(DERIVED) + len(DECLARED) + 1


def test_cypher_export_replays_into_neo4j(bolt: BoltServer, tmp_path: Path) -> None:
    """Export from the embedded store, run the script on the Bolt server, and get the same graph back."""
    src = SqliteStore(tmp_path / "g.sqlite")
    src.ensure_schema()
    load(src)
    src.upsert_models([model("k-evil", "x/it's \\ a }'); MATCH (n) DETACH DELETE n //", day=3)], T0)
    dst = Neo4jStore(connect(bolt.uri, bolt.user, bolt.password), bolt.database, owns_driver=True)
    _clear(dst)
    for line in export(src, "cypher").splitlines():
        dst.driver.execute_query(line, database_=bolt.database)
    a, b = src.dump(), dst.dump()
    assert a == b
    dst.close()


def test_empty_unknown_and_bad_arguments(store: LineageStore) -> None:
    for q in (queries.derivatives, queries.ancestors, queries.family):
        with pytest.raises(UnknownModelError, match="no model 'nobody/none'"):
            q(store, "nobody/none")
    assert queries.undeclared(store) == []
    assert queries.stats(store)["families"] == []
    load(store)
    with pytest.raises(InvalidRecordError):
        queries.derivatives(store, "meta/base", depth=0)
    with pytest.raises(InvalidRecordError):
        queries.derivatives(store, "meta/base", mode="sideways")  # type: ignore[arg-type]


def test_cycle_in_bad_data_terminates(store: LineageStore) -> None:
    load(store)
    store.upsert_derived([DerivedEdge("k-base", "k-sft3", 0.5)], T0)  # base -> sft3 -> sft2 -> sft -> base
    t = time.perf_counter()
    down = queries.derivatives(store, "meta/base")
    up = queries.ancestors(store, "meta/base")
    fam = queries.family(store, "bob/sft2")
    assert time.perf_counter() - t < 30
    assert len({r.id for r in down}) == len(down) and "meta/base" not in {r.id for r in down}
    assert {r.id for r in up} == {"bob/sft3", "bob/sft2", "alice/sft"}
    assert fam["root"] == "meta/base"


def _traversed(store: SqliteStore, key: str, depth: int) -> list[Any]:
    """Detected derivatives the general way: reachable edges from the recursive CTE, then ``_bfs``."""
    edges = store.reach(key, upward=False, mode="detected", depth=depth, min_score=0.0)
    return queries._rows(store, key, queries._bfs(key, edges, upward=False, depth=depth), upward=False)


def test_closure_answers_exactly_like_the_traversal(tmp_path: Path) -> None:
    """Random graphs with merges, tied scores and cycles, written in pieces, re-detected with
    ``replace``, then rebuilt from scratch: the embedded store's closure gives the traversal's answer for
    every node and depth (hops, weakest score, parent on ties)."""
    import random

    rnd = random.Random(7)
    store = SqliteStore(tmp_path / "g.sqlite")
    store.ensure_schema()
    n = 60
    store.upsert_models([model(f"k{i}", f"org/m{i:02d}") for i in range(n)], T0)

    def check() -> None:
        for i in range(n):
            for depth in (1, 2, 3, 32):
                fast = store.descendants(f"k{i}", depth=depth, min_score=0.0)
                assert fast is not None and fast == _traversed(store, f"k{i}", depth), (i, depth)

    edges = [DerivedEdge(f"k{i}", f"k{rnd.randrange(i)}", rnd.choice([0.4, 0.6, 0.8])) for i in range(1, n)]
    edges += [DerivedEdge(f"k{i}", f"k{rnd.randrange(i)}", rnd.choice([0.4, 0.6, 0.8])) for i in rnd.sample(range(2, n), 25)]
    rnd.shuffle(edges)  # children before parents, several calls: the closure must not depend on the order
    for part in (edges[:30], edges[30:55], edges[55:]):
        store.upsert_derived(part, T0)
    check()
    # Bad data: back edges that close cycles, then a re-detection that moves parents.
    store.upsert_derived([DerivedEdge("k3", "k40", 0.6), DerivedEdge("k1", "k59", 0.8)], T0)
    check()
    store.upsert_derived([DerivedEdge("k40", "k2", 0.7), DerivedEdge("k59", "k0", 0.4)], T0, replace=True)
    check()
    # A re-detection that keeps one of two stored parents unchanged and drops the other.
    store.upsert_derived([DerivedEdge("k30", "k20", 0.6), DerivedEdge("k30", "k10", 0.8)], T0)
    check()
    store.upsert_derived([DerivedEdge("k30", "k20", 0.6)], T0, replace=True)
    assert [e.dst for e in store.reach("k30", upward=True, mode="detected", depth=1, min_score=0.0)] == ["k20"]
    check()
    big = max(range(n), key=lambda i: len(_traversed(store, f"k{i}", 32)))
    assert len(_traversed(store, f"k{big}", 32)) >= n // 2  # the comparison covered real transitive answers
    # A store written before the closure existed builds it on open.
    with store.db:
        store.db.execute("DELETE FROM derived_closure")
        store.db.execute("DELETE FROM meta WHERE k = 'closure'")
    assert store.descendants("k0", depth=32, min_score=0.0) is None  # no closure: the caller traverses
    store.ensure_schema()
    check()
    # A min score above the weakest stored edge cuts chains: the closure declines and the CTE answers.
    assert store.descendants("k0", depth=32, min_score=0.5) is None
    assert all(r.min_score is not None and r.min_score >= 0.5 for r in queries.derivatives(store, "org/m00", min_score=0.5))
    store.close()


HOSTILE = ["o'brien/model", 'a"b', "x}) DETACH DELETE n //", "MATCH (n) RETURN n", "名前/モデル-ü", "\\'; DROP TABLE model; --",
           "$now", "`tick`", "{key: 1}"]


def test_hostile_ids_reach_every_query_as_data(store: LineageStore) -> None:
    models = [model(f"key-{h}", h, author=h, license=h) for h in HOSTILE]
    store.upsert_models(models, T0)
    store.upsert_derived([DerivedEdge(f"key-{a}", f"key-{b}", 0.9) for a, b in zip(HOSTILE[1:], HOSTILE)], T0)
    store.upsert_declared([DeclaredEdge(f"key-{a}", f"key-{b}") for a, b in zip(HOSTILE[1:], HOSTILE)], T0)
    store.set_families([InFamily(f"key-{h}", HOSTILE[0]) for h in HOSTILE], T0)
    assert store.counts()["Model"] == len(HOSTILE)
    for i, h in enumerate(HOSTILE):
        assert queries.resolve(store, h).id == h
        assert len(queries.derivatives(store, h, mode="both")) == len(HOSTILE) - 1 - i
        assert len(queries.ancestors(store, h)) == i
        assert queries.family(store, h)["root"] == HOSTILE[0]
    assert {r["id"] for r in queries.undeclared(store, HOSTILE[0])} == set()
    for h in HOSTILE:
        with pytest.raises(UnknownModelError):
            queries.derivatives(store, h + "-missing")
    json.loads(export(store, "json"))
    assert store.counts()["Model"] == len(HOSTILE)


@pytest.mark.slow
def test_search_recent_detections_and_parent_edges(store: LineageStore) -> None:
    load(store)
    assert [m.id for m in store.search("BOB/", 10)] == ["bob/sft2", "bob/sft3"]  # case-insensitive prefix
    assert [m.id for m in store.search("o", 1)] == ["other/base"]  # bounded, in id order
    assert store.search("zz", 5) == [] and store.search('"><script>', 5) == []
    store.upsert_derived([DerivedEdge("k-quant", "k-base", 0.99, z=60.0, detected_at_ms=T0 + 9),
                          DerivedEdge("k-rl", "k-base", 0.95, z=50.0, detected_at_ms=T0 + 5)], T0 + 10)
    recent = store.recent_derived(2)
    assert [(e.src, e.detected_at_ms) for e in recent] == [("k-quant", T0 + 9), ("k-rl", T0 + 5)]
    [up] = store.parent_edges("k-sft")
    assert (up.dst, up.score, up.z, up.evidence) == ("k-base", 0.91, 40.0, "layers 2/2")
    assert store.parent_edges("k-base") == []
    assert store.family_named("llama-x") == FamilyRecord("llama-x", "k-base", "Llama X", "llama2")
    assert store.family_named("nope") is None
    assert store.copies_of("k-quant") == ["k-quant-copy"] and store.copies_of("k-quant-copy") == ["k-quant"]
    assert store.copies_of("k-base") == []


def test_typed_relations_are_stored_kept_by_placement_and_filtered(store: LineageStore, tmp_path: Path) -> None:
    load(store)
    untyped = store.untyped_derived(100)
    assert ("k-quant", "k-base") in untyped and len(untyped) == len(DERIVED)
    assert store.untyped_derived(2) == untyped[:2]  # oldest detection first, bounded
    n = store.set_relations([TypedRelation("k-quant", "k-base", "quantized", '{"rule": "rms(d/step) 0.29"}'),
                             TypedRelation("k-sft", "k-base", "finetune"),
                             TypedRelation("k-sft", "k-nobody", "copy")], T0 + 200 * DAY)  # no such edge: skipped
    assert n == 2
    assert ("k-quant", "k-base") not in store.untyped_derived(100)
    # placement re-writes edges without a type: the stored type stays (and a typed write replaces it)
    store.upsert_derived([DerivedEdge("k-quant", "k-base", 0.98, z=59.0)], T0 + 201 * DAY, replace=True)
    [e] = store.parent_edges("k-quant")
    assert (e.score, e.relation, e.relation_detail) == (0.98, "quantized", '{"rule": "rms(d/step) 0.29"}')
    rows = queries.derivatives(store, "meta/base")
    assert {r.id: r.extra.get("relation") for r in rows if r.hops == 1} == {
        "alice/sft": "finetune", "dave/quant": "quantized", "carol/rl": None}
    assert [r.id for r in queries.derivatives(store, "meta/base", relation="quantized")] == ["dave/quant"]
    assert queries.derivatives(store, "meta/base", relation="merge") == []
    with pytest.raises(InvalidRecordError, match="relation must be one of"):
        queries.derivatives(store, "meta/base", relation="bogus")
    with pytest.raises(InvalidRecordError):
        TypedRelation("k-quant", "k-base", "bogus")
    dumped = {(r["src"], r["dst"]): r["relation"] for r in store.dump()["DERIVED_FROM"]}
    assert dumped[("k-quant", "k-base")] == "quantized" and dumped[("k-rl", "k-base")] is None


def test_a_store_from_before_typed_relations_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    first = SqliteStore(tmp_path / "graph.sqlite")
    first.ensure_schema()
    first.close()
    old = sqlite3.connect(tmp_path / "graph.sqlite")  # as the previous version wrote it: no relation columns
    old.executescript("ALTER TABLE derived_from DROP COLUMN relation_detail; ALTER TABLE derived_from DROP COLUMN relation; "
                      "ALTER TABLE model DROP COLUMN claims;")
    old.close()
    with pytest.raises(StoreUnavailableError, match="open it once with write access"):
        SqliteStore(tmp_path / "graph.sqlite", read_only=True).ensure_schema()
    s = SqliteStore(tmp_path / "graph.sqlite")
    s.ensure_schema()
    load(s)
    assert s.set_relations([TypedRelation("k-sft", "k-base", "finetune")], T0) == 1
    s.close()


@pytest.mark.slow
def test_large_batch_load(store: LineageStore) -> None:
    """100k models and 100k DERIVED_FROM edges in one call each; a second load changes nothing."""
    n = 100_000
    models = [ModelRecord(key=f"k{i}", id=f"org{i % 97}/m{i}", author=f"org{i % 97}") for i in range(n)]
    edges = [DerivedEdge(f"k{i}", f"k{(i - 1) // 4}", 0.9) for i in range(1, n)]
    edges.append(DerivedEdge("k0", f"k{n - 1}", 0.1))  # and one bad-data cycle for good measure
    assert store.upsert_models(models, T0) == n
    assert store.upsert_derived(edges, T0) == n
    store.upsert_derived(edges[:1000], T0 + 1)
    c = store.counts()
    assert (c["Model"], c["DERIVED_FROM"]) == (n, n)
    assert [r.id for r in queries.derivatives(store, "org0/m0", depth=1)] == [f"org{i}/m{i}" for i in range(1, 5)]
    assert len(queries.derivatives(store, "org0/m0", depth=3, min_score=0.5)) == 4 + 16 + 64
    assert [r.hops for r in queries.ancestors(store, f"org{(n - 1) % 97}/m{n - 1}")][:3] == [1, 2, 3]


def test_unreachable_server_and_wrong_password(bolt: BoltServer) -> None:
    with pytest.raises(StoreUnavailableError, match="cannot reach Neo4j"):
        connect("bolt://127.0.0.1:1", "neo4j", "x")
    with pytest.raises(StoreAuthError, match="refused the credentials"):
        connect(bolt.uri, bolt.user, "wrong-password")
    with pytest.raises(StoreUnavailableError, match="no database"):
        s = Neo4jStore(connect(bolt.uri, bolt.user, bolt.password), "no-such-db", owns_driver=True)
        try:
            s.get_models(["x"])
        finally:
            s.close()
