"""web.app and web.views (the pages) over a real embedded store and alerts state: every page and its JSON twin state the same facts,
hostile ids stay text, writes need the token, parameters are bounded, errors are a page and JSON."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from graphdata import DAY, T0, load, model

from alerts.findings import evaluate
from alerts.outbox import AlertStore
from graph.records import DerivedEdge, FamilyRecord, InFamily, ModelRecord, SharedInit
from graph.sqlite import SqliteStore
from web.app import CSP, create_app

EVIL = '"><script>alert(1)</script>'
EVIL_ID = f"evil/{EVIL}"
TOKEN = "s3cret-token"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, SqliteStore, Path]]:
    store = SqliteStore(tmp_path / "graph.sqlite")
    store.ensure_schema()
    load(store)
    store.upsert_models([model("k-evil", EVIL_ID, author="evil", license=EVIL, day=70)], T0 + 100 * DAY)
    store.upsert_derived([DerivedEdge("k-evil", "k-base", 0.97, z=44.0, detected_at_ms=T0 + 200 * DAY,
                                      evidence='{"alignment": "identity", "layers": [[0, 0, 0.9, 0.8], [1, 1, 0.7, 0.6]]}')],
                         T0 + 100 * DAY)
    store.set_families([InFamily("k-evil", "llama-x")], T0 + 100 * DAY)
    store.upsert_families([FamilyRecord("llama-x", "k-base", "Llama X", "llama2")], T0 + 100 * DAY)
    alerts = AlertStore(tmp_path / "alerts.sqlite")
    alerts.sync(evaluate(store))
    alerts.close()
    with TestClient(create_app(store, tmp_path / "alerts.sqlite", TOKEN)) as client:
        yield client, store, tmp_path
    store.close()


def both(client: TestClient, url: str) -> tuple[str, dict[str, Any]]:
    page = client.get(url)
    path, _, query = url.partition("?")
    twin = client.get(("/index.json" if path == "/" else path + ".json") + (f"?{query}" if query else ""))
    assert page.status_code == twin.status_code == 200, (page.text[:300], twin.text[:300])
    assert page.headers["content-type"].startswith("text/html") and twin.headers["content-type"] == "application/json"
    assert page.headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
    assert client.get(url, headers={"Accept": "application/json"}).json() == twin.json()  # negotiation too
    return page.text, twin.json()


def text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_home_and_search(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, store, _ = site
    page, doc = both(client, "/?q=BOB/")
    assert [r["id"] for r in doc["results"]] == ["bob/sft2", "bob/sft3"]
    for r in doc["results"]:
        assert f'href="/model/{r["id"]}"' in page
    assert doc["counts"]["Model"] == store.counts()["Model"] and f"<b>{doc['counts']['Model']}</b>" in page
    assert doc["recent"][0]["child"] == EVIL_ID  # the latest detection first
    assert {f["family"]: f["root"] for f in doc["families"]} == {"llama-x": "meta/base", "other": "other/base"}
    assert doc["families_total"] == 2 and doc["candidates"] == []
    # the tiles say what a person counts, in words; the graph's bookkeeping stays in the twin's counts
    tiles = {t["label"]: t["count"] for t in doc["tiles"]}
    assert tiles["models"] == doc["counts"]["Model"] and tiles["exact copies"] == 1 and "PUBLISHED_BY" in doc["counts"]
    assert not {"PUBLISHED_BY", "HAS_LICENSE", "IN_FAMILY"} & set(text(page).split())


def test_model_page_states_what_its_twin_states(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, _, _ = site
    page, doc = both(client, "/model/carol/rl")
    assert doc["model"]["id"] == "carol/rl" and doc["model"]["hub_url"] == "https://huggingface.co/carol/rl"
    assert [p["parent"] for p in doc["detected_parents"]] == ["meta/base"]
    assert doc["declared_parents"] == [{"id": "other/base", "relation": "finetune", "confirmed": False}]
    body = text(page)
    assert "meta/base" in body and "other/base" in body and "finetune" in body
    assert any(a["kind"] for a in doc["alerts"]) and all(a["kind"] in body for a in doc["alerts"])
    page, doc = both(client, "/model/meta/base")
    assert doc["children_total"] == len(doc["children"]) >= 4
    assert all(c["id"] in text(page) for c in doc["children"])
    assert doc["copies"] == [] and doc["family"]["name"] == "llama-x" and doc["shared_init"] == []


def test_a_shared_random_start_is_shown_on_both_models_and_not_as_lineage(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, store, _ = site
    store.set_shared_init("k-evil", [SharedInit("k-evil", "k-other", 0.42, 36.0, "6", T0)], T0)
    page, doc = both(client, "/model/other/base")
    assert doc["shared_init"] == [{"id": EVIL_ID, "score": 0.42, "z": 36.0}]
    assert "Same random start" in page and "<script>alert(1)" not in page  # the hostile id is escaped here too
    assert EVIL_ID not in [c["id"] for c in doc["children"]]
    _, doc = both(client, "/model/" + EVIL_ID)
    assert [r["id"] for r in doc["shared_init"]] == ["other/base"]


def test_evidence_chart_and_hostile_ids_render_as_text(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, _, _ = site
    page = client.get("/model/" + EVIL_ID)
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    doc = client.get("/model/" + EVIL_ID + ".json").json()
    assert doc["model"]["id"] == EVIL_ID and doc["license"]["differs"]
    [e] = doc["detected_parents"]
    assert [x["score"] for x in e["evidence"]["layers"]] == [0.85, 0.65]
    assert page.text.count('class="bar"') == 2  # one bar per matched layer pair
    # the bars spread over the chart's width, each under its layer pair's label
    xs = [float(x) for x in re.findall(r'<rect x="([\d.]+)"[^>]*class="bar"', page.text)]
    assert len(xs) == 2 and max(xs) > 320 and ">0→0<" in page.text and ">1→1<" in page.text
    home = client.get("/").text
    assert "<script>alert(1)" not in home and "&lt;script&gt;" in home


def test_family_tree_twin_groups_and_expands(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, store, _ = site
    page, small = both(client, "/family/llama-x")  # a small family: the whole subtree at once
    assert {n["label"] for n in small["nodes"]} >= {"meta/base", "alice/sft", "bob/sft2", "bob/sft3", EVIL_ID}
    assert {(e["source"], e["target"]) for e in small["edges"]} >= {("k-sft", "k-sft2"), ("k-sft2", "k-sft3")}
    # the header counts the direct children drawn: bob/sft2 names the base on its card but its weights
    # place it under alice/sft, where it is drawn; it is not a second direct child
    direct = {e["target"] for e in small["edges"] if e["source"] == "k-base" and e["kind"] != "SAME_WEIGHTS"}
    assert small["children_total"] == len(direct) == 4 and small["declared_only"] == 0
    assert "4 direct children" in text(page)
    # an exact copy is drawn beside its twin (it has no placement of its own)
    [copy] = [n for n in small["nodes"] if n["kind"] == "copy"]
    assert copy["label"] == "eve/quant-copy" and {"source": "k-quant", "target": "k-quant-copy", "kind": "SAME_WEIGHTS",
                                                   "score": None} in small["edges"]
    assert not small["candidate"] and small["shared_init"] == []
    # 30 more fine-tunes of the base from three organisations: more than GROUP_AT, so they are grouped
    extra = [model(f"k-ft{i}", f"org{i % 3}/ft{i}", day=80 + i) for i in range(30)]
    store.upsert_models(extra, T0 + 100 * DAY)
    store.upsert_derived([DerivedEdge(m.key, "k-base", 0.8) for m in extra], T0 + 100 * DAY)
    page, doc = both(client, "/family/llama-x")
    # 4 detected children, bob/sft2 (declares the base, detected under alice/sft), and the 30
    assert doc["root"] == "meta/base" and doc["grouped"] and doc["children_total"] == 35
    groups = [n for n in doc["nodes"] if n["kind"] == "group"]
    assert sum(g["count"] for g in groups) + len([n for n in doc["nodes"] if n["kind"] == "model"]) == 35
    assert 'data-src="/family/llama-x.json"' in page and "/static/vendor/cytoscape.min.js" in page
    g = next(x for x in groups if x["count"] == 10)
    more = client.get("/family/llama-x.json", params={"expand": g["group"]}).json()
    assert len(more["nodes"]) == len(doc["nodes"]) - 1 + g["count"]
    focus = client.get("/family/llama-x.json", params={"focus": "alice/sft"}).json()
    assert focus["focus"] == "alice/sft" and [n["label"] for n in focus["nodes"] if n["kind"] == "ancestor"] == ["meta/base"]


def test_a_candidate_family_says_why_and_names_its_shared_start(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, store, _ = site
    other = store.get_models(["k-other"])[0]
    store.upsert_models([ModelRecord(**{**other.props(), "candidate_family": True})], T0)
    page, doc = both(client, "/family/other")
    assert doc["candidate"] and doc["shared_init"] == [] and "no indexed base matched" in text(page)
    store.set_shared_init("k-other", [SharedInit("k-other", "k-base", 0.42, 36.0, "6", T0)], T0)
    page, doc = both(client, "/family/other")
    assert doc["shared_init"] == [{"id": "meta/base", "score": 0.42, "z": 36.0}]
    assert "same random start as meta/base (score 0.420), not derived from it" in " ".join(text(page).split())
    _, base = both(client, "/family/llama-x")  # the other side says it too, without calling itself a candidate
    assert base["shared_init"][0]["id"] == "other/base" and not base["candidate"]


def test_suspects_filter_and_sort(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, _, _ = site
    page, doc = both(client, "/suspects?sort=id")
    ids = [r["id"] for r in doc["suspects"]]
    assert ids == sorted(ids) and "carol/rl" in ids and EVIL_ID in ids
    assert all(i in text(page) for i in ids) and "<script>alert(1)" not in page
    _, doc = both(client, "/suspects?reason=declared_differently")
    assert [r["id"] for r in doc["suspects"]] == ["carol/rl"]


def test_alerts_writes_need_the_token(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, store, tmp = site
    page, doc = both(client, "/alerts")
    assert 'action="/alerts/mute"' in page
    assert doc["total"] >= 2 and all(a["model_id"] in text(page) for a in doc["alerts"])
    key = doc["alerts"][0]["dedup_key"]
    r = client.post(f"/alerts/{key}/ack", data={"token": "wrong"})
    assert r.status_code == 403 and "wrong token" in r.text
    r = client.post(f"/alerts/{key}/ack.json", data={}, headers={"Accept": "application/json"})
    assert r.status_code in (403, 404)
    r = client.post(f"/alerts/{key}/ack", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303
    acked = client.get("/alerts.json").json()["alerts"]
    assert next(a for a in acked if a["dedup_key"] == key)["acked"]
    r = client.post("/alerts/mute", data={"scope": "organization", "value": "evil"},
                    headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"})
    assert r.json() == {"muted": {"scope": "organization", "value": "evil"}}
    with TestClient(create_app(store, tmp / "alerts.sqlite", None)) as ro:  # no token configured: read-only
        r = ro.post(f"/alerts/{key}/ack", data={"token": ""}, headers={"Accept": "application/json"})
        assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]
        assert '<form method="post"' not in ro.get("/alerts").text


def test_errors_are_a_page_and_json_and_parameters_are_bounded(site: tuple[TestClient, SqliteStore, Path]) -> None:
    client, _, _ = site
    r = client.get("/model/nobody/nothing")
    assert r.status_code == 404 and "no model" in r.text and r.headers["content-type"].startswith("text/html")
    assert client.get("/model/nobody/nothing.json").json() == {
        "error": {"status": 404, "message": "no model 'nobody/nothing' in the graph"}}
    assert client.get("/?q=" + "x" * 201).status_code == 400
    assert client.get("/index.json?limit=100000").status_code == 400
    r = client.get("/index.json?limit=abc")
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("bad parameter limit")
    assert client.get("/suspects.json?sort=evil").status_code == 400
    assert client.get("/nowhere").status_code == 404 and client.get("/nowhere.json").json()["error"]["status"] == 404
    schema = client.get("/openapi.json").json()
    assert {"/", "/model/{ident}", "/family/{name}", "/suspects", "/alerts"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # the Swagger page would load from a CDN


def test_vendored_files_are_the_recorded_ones() -> None:
    vendor = Path(__file__).parents[2] / "web" / "static" / "vendor"
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert (vendor / "cytoscape.LICENSE").exists() and (vendor / "cytoscape-dagre.LICENSE").exists()
