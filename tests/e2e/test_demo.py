"""lineage demo end to end on the tiny zoo: stand-in → crawl → fingerprints → index → graph, against ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprint.canonical import open_model
from fingerprint.inspect import inspect_model
from fingerprint.io.gguf import CHUNK
from fingerprint.sketch import load, sketch_model
from graph.sqlite import SqliteStore
from lineage.demo import UNCATALOGUED, run_demo
from lineage.settings import Settings
from zoo.manifest import Manifest
from zoo.quality import placement_quality

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["embedded", "neo4j"])
def test_whole_loop_matches_ground_truth(tiny_zoo: Manifest, backend: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    root, models = tiny_zoo.root, tiny_zoo
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if backend == "neo4j":
        server = request.getfixturevalue("bolt")
        monkeypatch.setenv("LINEAGE_GRAPH", server.uri)
        monkeypatch.setenv("LINEAGE_NEO4J_USER", server.user)
        monkeypatch.setenv("LINEAGE_NEO4J_PASSWORD", server.password)
        monkeypatch.setenv("LINEAGE_NEO4J_DATABASE", server.database)
        from graph.neo4j import Neo4jStore, connect

        s = Neo4jStore(connect(server.uri, server.user, server.password), server.database, owns_driver=True)
        s.driver.execute_query("MATCH (n) DETACH DELETE n", database_=server.database)
        s.close()
    settings = Settings.from_env()
    doc = run_demo(root, settings, quiet=True)
    # the phases add up to the whole run (the last line once counted the crawl alone)
    assert set(doc["phases"]) == {"bootstrap", "crawl", "relations", "report"}
    assert abs(sum(doc["phases"].values()) - doc["seconds"]) <= 0.3 and doc["phases"]["crawl"] > 0
    from lineage.store import open_store

    store = open_store(settings)
    dump = store.dump()
    nodes = {m["key"]: m for m in dump["models"]}
    by_id = {m["id"]: m for m in nodes.values()}
    family_of = {r["src"]: r["dst"] for r in dump["IN_FAMILY"]}
    fam_root = {f["name"]: nodes[f["root_key"]]["id"] for f in dump["families"] if f.get("root_key")}
    store.close()
    truth = {m.id: m for m in models}
    root_id = {m.name: m.id for m in models}
    # every zoo model is a node, in the family of (one of) its true roots
    for mid, m in truth.items():
        assert mid in by_id, mid
        fam = family_of.get(by_id[mid]["key"])
        assert fam is not None, mid
        assert fam_root[fam] in {root_id[r] for r in m.roots}, (mid, fam_root[fam], m.roots)
    # the bases the catalog left out were found as candidate families, with their derivatives under them
    for name in UNCATALOGUED:
        assert by_id[root_id[name]]["candidate_family"] in (True, 1)
    # llama-c starts from llama-a's random initialization: SHARES_INIT, not a derivative of it
    shared = {(nodes[r["src"]]["id"], nodes[r["dst"]]["id"]) for r in dump["SHARES_INIT"]}
    assert shared == {(root_id["llama-c"], root_id["llama-a"])}, shared
    f_c = next(f for f in doc["families"] if f["root"] == root_id["llama-c"])
    assert [r["id"] for r in f_c["shared_init"]] == [root_id["llama-a"]]
    # no detected edge between independent families
    roots = {mid: set(m.roots) for mid, m in truth.items()}
    edges = {}
    for e in dump["DERIVED_FROM"]:
        a, b = nodes[e["src"]]["id"], nodes[e["dst"]]["id"]
        edges[a] = b
        if a in roots and b in roots:
            assert roots[a] & roots[b], (a, b)
    # exact re-uploads: SAME_WEIGHTS, not a byte of their weights read
    same = {frozenset((nodes[r["src"]]["id"], nodes[r["dst"]]["id"])) for r in dump["SAME_WEIGHTS"]}
    for mirror in [r for r in doc["served_by_repo"] if r.startswith("mirror/")]:
        original = next(m.id for m in models if m.id.split("/")[1] == mirror.split("/")[1])
        assert frozenset((mirror, original)) in same
        assert doc["served_by_repo"][mirror] == 0
    # each family's count is its tree (root + members) plus its exact copies, each naming what it copies
    for f in doc["families"]:
        assert f["members"] == len(f["tree"]) + 1 + len(f["copies"]), f["family"]
        # a descendant filed under another family is a merge of the two (llama-ab-merge under llama-b)
        for r in f["merged_in"]:
            assert r["family"] != f["family"] and len(truth[r["id"]].parents) > 1, r
        for c in f["copies"]:
            assert frozenset((c["id"], c["copy_of"])) in same, c
    assert any(c["id"].startswith("mirror/") for f in doc["families"] for c in f["copies"])
    q = placement_quality(models, dump)
    acc, chain = q["direct_parent_accuracy"], q["multi_generation_accuracy"]
    print(f"\n{backend}: direct parent accuracy {acc:.3f} over {q['single_parent_n']}, multi-generation {chain:.3f}")
    assert q["family_accuracy"] == 1.0 and q["cross_family_edges"] == 0
    # the target (the one miss, bob/llama-c-cpt under its SFT sibling, is in the README)
    assert acc >= 0.98 and chain >= 0.95, q["misplaced"]
    # merges keep all their parents (one of them in another family), and no fine-tune gets a second one
    assert q["merges_n"] == 3 and q["merges_with_all_parents"] == 1.0 and q["false_merges"] == [], q
    check_relations(models, dump, doc)
    check_alerts(models, settings, doc)
    if backend == "embedded":
        check_reads_and_rerun(root, models, settings, doc)


# the relation each zoo recipe makes (docs/method/relations.md); a merge is typed on each of its edges
EXPECTED = {"sft": "finetune", "rl": "finetune", "multimodal": "finetune", "continued-pretraining": "continued_pretraining",
            "pruning": "pruned", "upcycling": "upcycled", "vocab-extension": "vocab_changed", "lora": "adapter_merged",
            "quantized": "quantized", "attack": "copy", "merge": "merge", "merge-unrelated": "merge"}


def check_relations(models: Manifest, dump: dict[str, Any], doc: dict[str, Any]) -> None:
    """The demo typed every detected edge from the weights, by ranged reads of the stand-in; each edge to
    a true parent has the relation its recipe makes (the issue's goal: >= 95%)."""
    nodes = {m["key"]: m["id"] for m in dump["models"]}
    truth = models.by_name()
    by_id = {m.id: m for m in models}
    assert doc["relations"]["later"] == 0 and doc["relations"]["typed"] > 0
    right, wrong = 0, []
    for e in dump["DERIVED_FROM"]:
        if e["verdict"] != "derived":
            continue
        assert e["relation"] is not None, e  # every detected edge was typed in the pass
        child, parent = by_id.get(nodes[e["src"]]), by_id.get(nodes[e["dst"]])
        if child is None or parent is None or parent.name not in child.parents or child.category not in EXPECTED:
            continue
        if e["relation"] == EXPECTED[child.category]:
            right += 1
        else:
            wrong.append((child.id, e["relation"], EXPECTED[child.category]))
    assert right >= 0.95 * (right + len(wrong)) and right >= 60, wrong
    assert truth["llama-a-lora"].id in {nodes[e["src"]] for e in dump["DERIVED_FROM"] if e["relation"] == "adapter_merged"}
    # a merge's recipe, against its parents' family root: the TIES merge is named and weighed
    ties = [json.loads(e["relation_detail"])["recipe"] for e in dump["DERIVED_FROM"]
            if nodes[e["src"]] == truth["llama-a-merge-ties"].id]
    assert ties and all(r["method"] == "ties" and np.allclose(r["weights"], [0.5, 0.5], atol=0.02) for r in ties), ties


PERMISSIVE = ("apache-2.0", "mit")
CARD_FINDINGS = {"undeclared_base", "declared_differently", "hidden_copy"}


def check_alerts(models: Manifest, settings: Settings, doc: dict[str, Any]) -> None:
    """Every dishonest card yields a finding about its card, every honest derivative with a compatible
    licence yields none, and declared derivatives that relicense are found (the README's table)."""
    from alerts.outbox import AlertStore

    state = AlertStore(settings.home / "alerts.sqlite")
    found: dict[str, set[str]] = {}
    for f in state.findings():
        found.setdefault(f["model_id"], set()).add(f["kind"])
    state.close()
    by = models.by_name()
    # a base that only shares llama-a's random start is no derivative of it: nothing to alert about
    assert by["llama-c"].id not in found, found.get(by["llama-c"].id)
    table: dict[str, list[int]] = {}  # kind -> [true positives, false positives]
    misses = []
    for m in models:
        if m.is_base:
            continue
        roots = {by[r].card.license for r in m.roots}
        compatible = all(r in PERMISSIVE or r == m.card.license for r in roots)  # a merge: every restrictive root kept
        kinds = found.get(m.id, set())
        card_kinds, licence_kinds = kinds & CARD_FINDINGS, kinds - CARD_FINDINGS
        for k in card_kinds:
            table.setdefault(k, [0, 0])[0 if not m.card_honest else 1] += 1
        for k in licence_kinds:
            table.setdefault(k, [0, 0])[0 if not compatible else 1] += 1
        if not m.card_honest and not card_kinds:
            misses.append(m.id)
        assert not (m.card_honest and compatible and kinds), (m.id, kinds)  # honest and compatible: silent
        if not compatible:
            assert "license_conflict" in kinds, (m.id, m.card.license, roots)
    print("\nfindings on the tiny zoo, kind: true positives / false positives")
    for k, (tp, fp) in sorted(table.items()):
        print(f"  {k}: {tp} / {fp}")
    print(f"  dishonest cards without a card finding: {misses}")
    assert all(fp == 0 for _, fp in table.values()), table
    assert "license_conflict" in found["frank/llama-a-moe"]  # declared honestly, relicensed apache-2.0 in llama2
    # the Q4_K copy is a real (Q5_0-fallback) quantization now, not a byte copy of the Q8_0 one: its card
    # names no base, so the finding is the undeclared base; the card-less mirrors are hidden copies
    assert "undeclared_base" in found["quant/llama-a-sft-q4k"] and "hidden_copy" in found["mirror/llama-a-sft"]
    # The one dishonest card no rule flags: heidi's names the family root (its grandparent's parent)
    # instead of its parent. The graph places it under its real parent, but the claim is still true (it
    # derives from the root) and the licence is the root's: no rule is broken.
    assert set(misses) <= {"heidi/llama-a-sft-sft2-sft3"}, misses
    assert doc["alerts"]["findings"] == sum(len(v) for v in found.values()) and doc["alerts"]["sent"] > 0


def check_reads_and_rerun(root: Path, models: Manifest, settings: Settings, doc: dict[str, Any]) -> None:
    """Bytes served ≤ what `lineage inspect` says is needed (+ the header read); fingerprints equal the
    local ones; a second run changes nothing."""
    crawl = settings.home / "crawl" / "crawl.sqlite"
    import sqlite3

    with sqlite3.connect(crawl) as con:
        rows = con.execute("SELECT id, record FROM result WHERE status='fingerprinted'").fetchall()
    by_id = {m.id: m for m in models}
    checked = 0
    for rid, rec in rows:
        if rid not in by_id:
            continue
        path = root / by_id[rid].path
        target = next(iter(sorted(path.glob("*.gguf"))), path)
        need = inspect_model(target)
        small = sum(f.stat().st_size for f in path.iterdir() if f.suffix not in (".safetensors", ".gguf"))
        reads = 2 if rid in doc["catalog"] else 1  # catalog bases are read by the bootstrap and the crawl
        # the header read: 100 kB for safetensors, 1 MiB chunks for a GGUF's metadata (its vocabulary)
        header = CHUNK if target.suffix == ".gguf" else 100_000
        assert doc["served_by_repo"][rid] <= reads * (need["bytes_needed"] + header + small), rid
        remote = load(json.loads(rec)["fingerprint"])
        local = sketch_model(open_model(target))
        assert remote.keys == local.keys and np.array_equal(remote.embed, local.embed), rid
        assert all(np.array_equal(a, b) for a, b in zip(remote.q, local.q, strict=True)), rid
        checked += 1
    assert checked >= 70
    before = SqliteStore(settings.home / "graph.sqlite")
    dump = before.dump()
    before.close()
    again = run_demo(root, settings, quiet=True)
    assert again["crawl"]["discovered"] == 0 and again["crawl"]["processed"] == 0
    after = SqliteStore(settings.home / "graph.sqlite")
    strip = lambda d: {k: [{a: b for a, b in r.items() if not a.endswith("_ms")} for r in v] for k, v in d.items()}  # noqa: E731
    assert strip(after.dump()) == strip(dump)
    after.close()
