"""alerts.findings, alerts.rules, alerts.licenses and alerts.outbox.sync on a hand-built graph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.findings import Finding, evaluate
from alerts.licenses import canonical, clean
from alerts.outbox import AlertStore
from alerts.rules import rules
from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord, SameWeights
from graph.sqlite import SqliteStore

T = 1_700_000_000_000


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "graph.sqlite")
    s.ensure_schema()
    yield s
    s.close()


def add(s: SqliteStore, key: str, license: str | None, family: str, parent: str | None = None,
        declared: tuple[str, ...] = (), created: int = 0, root: bool | None = None, **kw: str) -> None:
    s.upsert_models([ModelRecord(key=key, id=key, license=license, created_at_ms=T + created, **kw)], T)  # type: ignore[arg-type]
    if root if root is not None else (parent is None and not declared):
        s.upsert_families([FamilyRecord(family, key, family, license)], T)
        s.set_families([InFamily(key, family, "root")], T)
    else:
        s.set_families([InFamily(key, family, "matched")], T)
    if parent:
        s.upsert_derived([DerivedEdge(key, parent, 0.97, 25.0)], T)
    if declared:
        s.upsert_declared([DeclaredEdge(key, d, "finetune", "model_card") for d in declared], T)


def kinds(fs: list[Finding]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in fs:
        out.setdefault(f.model_id, set()).add(f.kind)
    return out


def test_licence_ids_map_to_the_licensedb() -> None:
    assert canonical("llama2").key == "llama-2-license-2023" and canonical("llama2").category == "Proprietary Free"
    assert canonical("Apache-2.0").key == "apache-2.0" and canonical("apache-2.0").spdx == "Apache-2.0"
    assert canonical("cc-by-nc-4.0").category == "Source-available"
    assert canonical("other", "Tongyi Qianwen License Agreement").key == "tongyi-qianwen-2023"
    assert canonical("other", None, "https://example.org/LICENSE").key is None
    assert canonical("unknown").key is None and canonical(None).label() == "none"
    assert rules().version >= 1 and all(r.clause for r in rules().rules)


def test_each_kind_is_found_and_honest_derivatives_are_not(store: SqliteStore) -> None:
    add(store, "meta/llama", "llama2", "llama")
    add(store, "ok/sft", "llama2", "llama", parent="meta/llama", declared=("meta/llama",))   # honest
    add(store, "frank/moe", "apache-2.0", "llama", parent="meta/llama", declared=("meta/llama",))  # declared, relicensed
    add(store, "judy/lora", "llama2", "llama", parent="ok/sft")                                 # no card base
    add(store, "org/apache", "apache-2.0", "apache")
    add(store, "carol/rl", "llama2", "llama", parent="meta/llama", declared=("org/apache",))    # names another family
    add(store, "ok/apache-ft", "mit", "apache", parent="org/apache", declared=("org/apache",))  # permissive: anything goes
    add(store, "mirror/sft", None, "llama", created=5, root=False)
    store.upsert_same_weights([SameWeights("mirror/sft", "ok/sft", "x")], T)
    fs = evaluate(store)
    k = kinds(fs)
    assert "ok/sft" not in k and "ok/apache-ft" not in k and "meta/llama" not in k
    assert k["frank/moe"] == {"license_conflict"}
    assert k["judy/lora"] == {"undeclared_base"}
    assert k["carol/rl"] == {"declared_differently"}  # llama2 is the strictest of its bases, and it keeps it
    assert k["mirror/sft"] == {"hidden_copy", "unknown_license"}
    conflict = next(f for f in fs if f.model_id == "frank/moe")
    assert conflict.severity == "high" and conflict.evidence["rule"] == "llama-2" and "§1.b.i" in conflict.evidence["clause"]
    assert conflict.base_id == "meta/llama" and conflict.evidence["declared"] == ["meta/llama"]
    assert conflict.evidence["score"] == 0.97 and conflict.evidence["z"] == 25.0
    assert conflict.evidence["card"] == {"license": "apache-2.0"}


def test_merges_are_judged_against_the_strictest_base_and_nc_nd_rules_hold(store: SqliteStore) -> None:
    add(store, "a/llama", "llama2", "llama")
    add(store, "b/apache", "apache-2.0", "apache")
    add(store, "m/merge-ok", "llama2", "apache", parent="b/apache", declared=("a/llama", "b/apache"))
    add(store, "m/merge-bad", "apache-2.0", "apache", parent="b/apache", declared=("a/llama", "b/apache"))
    add(store, "c/nc", "cc-by-nc-4.0", "nc")
    add(store, "c/nc-ft", "mit", "nc", parent="c/nc", declared=("c/nc",))
    add(store, "c/nc-ok", "cc-by-nc-sa-4.0", "nc", parent="c/nc", declared=("c/nc",))
    add(store, "d/nd", "cc-by-nd-4.0", "nd")
    add(store, "d/nd-ft", "cc-by-nd-4.0", "nd", parent="d/nd", declared=("d/nd",))
    add(store, "l3/base", "llama3", "l3")
    add(store, "x/my-model", "llama3", "l3", parent="l3/base", declared=("l3/base",))
    k = kinds(evaluate(store))
    assert "m/merge-ok" not in k and k["m/merge-bad"] == {"license_conflict"}
    assert k["c/nc-ft"] == {"license_conflict"} and "c/nc-ok" not in k
    assert k["d/nd-ft"] == {"license_conflict"}  # no shared derivatives at all
    assert k["x/my-model"] == {"attribution_missing"}  # llama3 derivatives' names start with "Llama"


def test_findings_appear_and_resolve_with_the_graph(store: SqliteStore, tmp_path: Path) -> None:
    add(store, "meta/llama", "llama2", "llama")
    add(store, "frank/moe", "apache-2.0", "llama", parent="meta/llama", declared=("meta/llama",))
    state = AlertStore(tmp_path / "alerts.sqlite")
    first = state.sync(evaluate(store))
    assert (first.opened, first.changed, first.resolved) == (1, 0, 0)
    again = state.sync(evaluate(store))  # the next pass: same finding, no event
    assert (again.opened, again.changed, again.resolved, again.unchanged) == (0, 0, 0, 1)
    assert len(state.events_after(0)) == 1
    store.upsert_models([ModelRecord(key="frank/moe", id="frank/moe", license="llama2")], T)  # the card is fixed
    fixed = state.sync(evaluate(store))
    assert fixed.resolved == 1 and [e.type for e in state.events_after(0)] == ["opened", "resolved"]
    assert state.findings(status="open") == [] and state.findings(status="resolved")[0]["model_id"] == "frank/moe"
    state.close()


def test_hostile_card_fields_are_bounded_and_stripped(store: SqliteStore) -> None:
    evil = "<script>alert(1)</script>\r\nBcc: victim@example\x1b[31m\u202e" + "x" * 100_000
    add(store, "meta/llama", "llama2", "llama")
    add(store, "evil/ft", "other", "llama", parent="meta/llama", license_name=evil)
    fs = evaluate(store)
    f = next(f for f in fs if f.model_id == "evil/ft" and f.kind == "unknown_license")
    assert len(f.license) < 260 and "\r" not in f.license and "\n" not in f.license and "\x1b" not in f.license
    assert "\u202e" not in f.license and f.license.endswith("…)")
    assert clean("a\x00b\u2028c") == "a b c" and clean("   ") is None


def test_licence_difference_is_decided_by_licence_knowledge_not_by_strings() -> None:
    from alerts.policy import differs

    assert not differs("apache-2.0", None)  # no family licence: nothing to differ from
    assert not differs("Apache-2.0", "apache-2.0")  # one licence, two spellings
    assert differs("mit", "llama2")
    assert differs(None, "llama2")
    assert differs("my-own-terms", "other-terms") and not differs("my-own-terms", "my-own-terms")


@pytest.fixture(params=["embedded", "neo4j"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "embedded":
        s: Any = SqliteStore(tmp_path / "graph.sqlite")
    else:
        from graph.neo4j import Neo4jStore, connect

        server = request.getfixturevalue("bolt")
        s = Neo4jStore(connect(server.uri, server.user, server.password), server.database, owns_driver=True)
        s.driver.execute_query("MATCH (n) DETACH DELETE n", database_=s.database)
    assert s.ensure_schema() == []
    yield s
    s.close()


def test_an_incremental_evaluation_finds_what_a_full_one_finds(any_store: Any, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """After each kind of write, the alerts state an incremental evaluation leaves (only the models the
    change log names, widened to a changed root's family, descendants, declarers and copies) equals the
    one full evaluations leave; a change in one family evaluates nothing of another."""
    import time
    from dataclasses import replace

    import graphdata

    from lineage import app as app_mod
    from lineage.app import open_app
    from lineage.settings import Settings

    store = any_store
    graphdata.load(store)
    monkeypatch.setattr(app_mod, "MARGIN_MS", 0)  # read the change log exactly from the last start
    ref = AlertStore(tmp_path / "ref.sqlite")

    def open_rows(st: AlertStore) -> set[tuple[str, str]]:
        return set(st.db.execute("SELECT dedup_key, digest FROM finding WHERE status = 'open'").fetchall())

    with open_app(Settings.from_env({"LINEAGE_HOME": str(tmp_path / "home")}), store=store) as app:
        first, _ = app.evaluate_alerts()  # no watermark yet: every model
        assert {f.model_id for f in first} >= {"carol/rl", "eve/quant-copy", "bob/sft3"}

        def step() -> set[str]:
            time.sleep(0.01)  # past the watermark
            evaluated, _ = app.evaluate_alerts()
            ref.sync(evaluate(store))
            assert open_rows(app.alert_state()) == open_rows(ref)
            return {f.model_id for f in evaluated}

        assert step() == set()  # nothing written: nothing evaluated
        base = store.get_models(["k-base"])[0]
        store.upsert_models([replace(base, license="mit")], T)  # the root relicensed: its family judged again
        assert "bob/sft3" in step()
        store.upsert_declared([DeclaredEdge("k-rl", "k-base", "finetune")], T)  # a card fixed
        step()
        store.drop_derived(["k-other-sft"], T)  # a detected parent removed
        step()
        store.upsert_declared([DeclaredEdge("k-sft3", "k-other", "finetune")], T)  # names another family's base
        assert "bob/sft3" in step()
        # sft re-placed under that base: two generations down, sft3's ancestry now holds what it declares
        store.upsert_derived([DerivedEdge("k-sft", "k-other", 0.9, 20.0)], T, replace=True)
        step()
        store.clear_placement(["k-quant-copy"], T, copies=True)  # an exact copy no longer one
        step()
        store.upsert_models([ModelRecord(key="k-new", id="zed/new", license="cc-by-nc-4.0")], T)
        store.set_families([InFamily("k-new", "other")], T)
        store.upsert_derived([DerivedEdge("k-new", "k-other", 0.9, 20.0)], T)
        assert step() == {"zed/new"}  # undeclared; and nothing of the llama-x family was evaluated


def test_a_declared_relation_the_weights_contradict_is_a_finding(store: SqliteStore) -> None:
    from graph.records import TypedRelation

    add(store, "meta/llama", "llama2", "llama")
    for key in ("q/sold-as-ft", "ok/quant", "ok/lora", "x/fake-quant", "u/untyped"):
        add(store, key, "llama2", "llama", parent="meta/llama", declared=("meta/llama",))
    claims = {"q/sold-as-ft": "finetune", "ok/quant": "quantized", "ok/lora": "finetune", "x/fake-quant": "quantized",
              "u/untyped": "quantized"}
    store.upsert_declared([DeclaredEdge(k, "meta/llama", rel, "model_card") for k, rel in claims.items()], T)
    typed = {"q/sold-as-ft": "quantized", "ok/quant": "quantized", "ok/lora": "adapter_merged", "x/fake-quant": "finetune",
             "u/untyped": "untyped"}
    store.set_relations([TypedRelation(k, "meta/llama", rel) for k, rel in typed.items()], T)
    fs = [f for f in evaluate(store) if f.kind == "relation_differs"]
    assert {f.model_id: f.severity for f in fs} == {"q/sold-as-ft": "medium", "x/fake-quant": "low"}
    sold = next(f for f in fs if f.model_id == "q/sold-as-ft")
    assert sold.reason == "the card calls it a finetune of meta/llama; the weights say quantized"
    assert sold.evidence["typed_relation"] == "quantized" and sold.base_id == "meta/llama"
    # an edge typed again to what the card says resolves it
    store.set_relations([TypedRelation("x/fake-quant", "meta/llama", "quantized")], T)
    assert {f.model_id for f in evaluate(store) if f.kind == "relation_differs"} == {"q/sold-as-ft"}


def test_a_from_scratch_claim_is_a_finding_only_with_a_detected_parent(store: SqliteStore) -> None:
    add(store, "meta/llama", "llama2", "llama")
    add(store, "x/liar", "llama2", "llama", parent="meta/llama", declared=("meta/llama",), claims="trained from scratch")
    add(store, "y/honest-root", "mit", "y", claims="We trained it from scratch.")  # a root: its claim holds
    fs = [f for f in evaluate(store) if f.kind == "scratch_claim"]
    assert [(f.model_id, f.base_id) for f in fs] == [("x/liar", "meta/llama")]
    assert fs[0].evidence["quote"] == "trained from scratch"
