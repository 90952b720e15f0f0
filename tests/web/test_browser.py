"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): every page
loads without a console error, the tree matches its JSON twin, groups expand, clicks navigate, hostile
ids stay text, no edge crosses a label, no word of a table is split, and no page scrolls sideways on a
phone."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from graphdata import DAY, T0, load, model

from alerts.findings import evaluate
from alerts.outbox import AlertStore
from graph.records import DerivedEdge, InFamily
from graph.sqlite import SqliteStore
from web.app import create_app

CHROMIUM = "/usr/bin/chromium"
EVIL_ID = 'evil/"><img src=x onerror=alert(1)>'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    home = tmp_path_factory.mktemp("web")
    store = SqliteStore(home / "graph.sqlite")
    store.ensure_schema()
    load(store)
    extra = [model(f"k-ft{i}", f"org{i % 3}/ft{i}", day=80 + i) for i in range(30)]
    extra.append(model("k-evil", EVIL_ID, author="evil", day=70))
    store.upsert_models(extra, T0 + 100 * DAY)
    store.upsert_derived([DerivedEdge(m.key, "k-base", 0.8) for m in extra], T0 + 100 * DAY)
    store.set_families([InFamily(m.key, "llama-x") for m in extra], T0 + 100 * DAY)
    alerts = AlertStore(home / "alerts.sqlite")
    alerts.sync(evaluate(store))  # findings with long ids and kinds, for the alerts table
    alerts.close()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(store, home / "alerts.sqlite"), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.errors.append("dialog: " + d.message), d.dismiss()))  # type: ignore[attr-defined]
    yield pg
    ctx.close()


@pytest.mark.parametrize("path", ["/", "/?q=org1/", "/model/meta/base", "/model/alice/sft", "/suspects", "/alerts",
                                  "/family/llama-x", "/model/nobody/none"])
def test_every_page_loads_without_a_console_error(server: str, page: Any, path: str) -> None:
    r = page.goto(server + path)
    assert r.status == (404 if "nobody" in path else 200)
    if path.startswith("/family"):
        page.wait_for_selector("#tree[data-ready='1']", timeout=15000)
    page.wait_for_load_state("networkidle")
    errors = [e for e in page.errors if not ("404" in e and "nobody" in path)]
    assert errors == [], errors


def test_tree_matches_its_twin_groups_expand_and_clicks_navigate(server: str, page: Any) -> None:
    page.goto(server + "/family/llama-x")
    page.wait_for_selector("#tree[data-ready='1']", timeout=15000)
    twin = page.request.get(server + "/family/llama-x.json").json()
    assert page.evaluate("() => window.__cy.nodes().length") == len(twin["nodes"])
    assert page.evaluate("() => window.__cy.edges().length") == len(twin["edges"])
    group = next(n for n in twin["nodes"] if n["kind"] == "group")
    before = page.evaluate("() => window.__cy.nodes().length")
    # braces: an arrow returning the collection would make Playwright serialize Cytoscape's graph (15 s)
    page.evaluate(f"() => {{ window.__cy.getElementById({group['id']!r}).emit('tap'); }}")
    page.wait_for_selector("#tree[data-expanded='1']", timeout=15000)
    after = page.evaluate("() => window.__cy.nodes().length")
    assert after == before - 1 + group["count"]  # the group node gives way to its members
    child = next(n for n in twin["nodes"] if n["kind"] == "model")
    with page.expect_navigation():
        page.evaluate(f"() => {{ window.__cy.getElementById({child['id']!r}).emit('tap'); }}")
    assert page.url.endswith("/model/" + child["label"]) and page.errors == []


def test_hostile_ids_render_as_text(server: str, page: Any) -> None:
    page.goto(server + "/?q=evil")
    link = page.locator("ul.results a").first
    assert link.inner_text() == EVIL_ID  # shown as text
    assert page.locator("img[src=x]").count() == 0 and page.errors == []
    page.goto(server + "/model/" + EVIL_ID.replace('"', "%22").replace(">", "%3E").replace("<", "%3C").replace(" ", "%20"))
    assert page.locator("h1").inner_text() == EVIL_ID and page.locator("img[src=x]").count() == 0
    page.goto(server + "/family/llama-x")
    page.wait_for_selector("#tree[data-ready='1']", timeout=15000)
    labels = page.evaluate("() => window.__cy.nodes().map(n => n.data('label'))")
    assert EVIL_ID in labels or any(lbl.startswith("1 more") or "more:" in lbl for lbl in labels)
    assert page.errors == []


#: every edge against every node's box, its label included (a margin for the border): the edges that pass
#: through a box or a label. Liang-Barsky clipping of the segment to the box.
CROSSINGS = """() => {
  const out = [];
  const hits = (p, q, b) => {
    let t0 = 0, t1 = 1;
    const dx = q.x - p.x, dy = q.y - p.y;
    for (const [num, den] of [[p.x - b.x1, -dx], [b.x2 - p.x, dx], [p.y - b.y1, -dy], [b.y2 - p.y, dy]]) {
      if (den === 0) { if (num < 0) return false; continue; }
      const t = num / den;
      if (den < 0) { t0 = Math.max(t0, t); } else { t1 = Math.min(t1, t); }
      if (t0 > t1) return false;
    }
    return true;
  };
  window.__cy.edges().forEach(e => {
    const p = e.sourceEndpoint(), q = e.targetEndpoint();
    window.__cy.nodes().forEach(n => {
      // its own two ends too: an edge may end at a box's border, never run through its label
      const b = n.boundingBox({ includeLabels: true }), m = 2.5;
      if (hits(p, q, { x1: b.x1 + m, x2: b.x2 - m, y1: b.y1 + m, y2: b.y2 - m })) out.push(e.id() + " crosses " + n.data("label"));
    });
  });
  return out;
}"""


@pytest.mark.parametrize("path", ["/family/llama-x", "/family/llama-x?focus=alice/sft"])
def test_no_edge_crosses_a_label_and_the_details_start_on_the_focus(server: str, page: Any, path: str) -> None:
    page.goto(server + path)
    page.wait_for_selector("#tree[data-ready='1']", timeout=15000)
    twin = page.request.get(server + path.replace("/family/llama-x", "/family/llama-x.json")).json()
    assert page.evaluate(CROSSINGS) == []
    assert page.locator("#details").inner_text().splitlines()[:2] == [twin["focus"], "the focus of this view"]
    # every box of a column is as wide as the column's widest: labels fit inside their boxes
    outside = page.evaluate("""() => window.__cy.nodes().filter(n => {
        const b = n.boundingBox({ includeLabels: false }), l = n.boundingBox({ includeLabels: true });
        return l.x1 < b.x1 - 0.5 || l.x2 > b.x2 + 0.5; }).map(n => n.data('label'))""")
    assert outside == [] and page.errors == []


def test_the_alerts_table_splits_no_word_at_1400_px(server: str, page: Any) -> None:
    page.goto(server + "/alerts")
    assert page.locator("tbody tr").count() >= 4
    # an id, a kind, a licence or a state on two lines would have two client rects
    split = page.evaluate("""() => [...document.querySelectorAll('td a, td .tag, td.nowrap')].filter(el => {
        const r = document.createRange();
        r.selectNodeContents(el);
        const tops = [...r.getClientRects()].map(x => x.top);
        return Math.max(...tops) - Math.min(...tops) > 8;  // a second line (boxes of one line differ by a pixel or two)
      }).map(el => el.textContent)""")
    assert split == [] and page.errors == []


@pytest.mark.parametrize("path", ["/", "/model/alice/sft", "/family/llama-x", "/suspects", "/alerts", "/model/nobody/none"])
def test_no_page_scrolls_sideways_on_a_phone(server: str, browser: Any, path: str) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    pg = ctx.new_page()
    pg.goto(server + path)
    if path.startswith("/family"):
        pg.wait_for_selector("#tree[data-ready='1']", timeout=15000)
    wide = pg.evaluate("() => document.documentElement.scrollWidth")
    tree = pg.evaluate("() => { const t = document.getElementById('tree'); return t ? t.clientWidth : null; }")
    ctx.close()
    assert wide <= 390 and (tree is None or tree > 300), (wide, tree)


def test_an_evidence_report_renders_offline_without_errors(browser: Any, tmp_path: Path) -> None:
    """`lineage compare --report` on a merged LoRA: the page loads from disk, asks for nothing else, runs no
    script, and shows the verdict, the relation and the spectrum a person reads."""
    import json as _json

    from click.testing import CliRunner
    from safetensors.numpy import load_file

    from lineage.cli import main
    from tests.tinymodels import build_hf, llama_config, save_state_dict, write_wordlevel_tokenizer

    base = build_hf("llama", tmp_path / "base", seed=0, config=llama_config())
    write_wordlevel_tokenizer(base, 512)
    sd = load_file(str(base / "model.safetensors"))
    rng = np.random.default_rng(1)
    lora = {k: (v + 0.05 * v.std() * rng.standard_normal((v.shape[0], 4)) @ rng.standard_normal((4, v.shape[1])))
            .astype(np.float32) if k.endswith("proj.weight") else v for k, v in sd.items()}
    child = save_state_dict(lora, _json.loads((base / "config.json").read_text()), tmp_path / "lora", base)
    out = tmp_path / "evidence.html"
    r = CliRunner().invoke(main, ["compare", str(base), str(child), "--report", str(out)])
    assert r.exit_code == 0, r.output
    ctx = browser.new_context(viewport={"width": 1100, "height": 900}, java_script_enabled=True)
    pg = ctx.new_page()
    errors: list[str] = []
    requests: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda q: requests.append(q.url))
    pg.goto(out.as_uri())
    pg.wait_for_load_state("networkidle")
    text = pg.inner_text("body")
    assert errors == [] and requests == [out.as_uri()], (errors, requests)
    assert "DERIVED" in text and "relation: adapter_merged" in text and "rank 4" in text
    assert pg.locator("svg").count() >= 2 and pg.locator("img").count() == 2
    assert all(pg.evaluate("i => i.naturalWidth", img) > 0 for img in pg.locator("img").element_handles())
    pg.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    ctx.close()
