"""Web UI at scale: the family page of a ~10,000-model family on a 1M-model embedded store.

    python -m bench.web [--models 1000000] [--reps 30]

The graph is the graph benchmark's synthetic Hub shape (``bench.graph.synthetic``). Measured in one run:
the family page's JSON twin (one level around the root: its direct children, grouped) and the model and
home twins, p50/p95 over ``--reps`` requests through the ASGI app (no network); the baseline is the whole
family at once (``graph.queries.family``, what ``lineage family --json`` returns). Then the page in
headless Chromium (Debian's, through Playwright) over a real uvicorn server: seconds from navigation
until the tree is laid out and answers clicks (``#tree[data-ready]``), median of 5.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.graph import T0, synthetic
from graph import queries
from graph.sqlite import SqliteStore


def _pcts(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def main() -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    from web.app import create_app

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=30)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        models, fams, member, derived, declared, roots = synthetic(a.models)
        store = SqliteStore(Path(tmp) / "graph.sqlite")
        store.ensure_schema()
        store.upsert_models(models, T0)
        store.upsert_families(fams, T0)
        store.set_families(member, T0)
        store.upsert_derived(derived, T0)
        store.upsert_declared(declared, T0)
        load_s = time.perf_counter() - t
        sizes = np.diff([*roots, a.models])
        i = int(np.argmin(np.abs(sizes - 10_000)))
        fam, root = fams[i].name, roots[i]
        root_id = f"org{root % 5000}/model-{root}"
        client = TestClient(create_app(store))
        lat: dict[str, list[float]] = {"family page twin (one level, grouped)": [], "model page twin (the root)": [],
                                       "home twin": [], "baseline: whole family (graph.queries.family)": []}
        doc = client.get(f"/family/{fam}.json").json()
        for _ in range(a.reps):
            for name, call in (("family page twin (one level, grouped)", lambda: client.get(f"/family/{fam}.json")),
                               ("model page twin (the root)", lambda: client.get(f"/model/{root_id}.json")),
                               ("home twin", lambda: client.get("/index.json")),
                               ("baseline: whole family (graph.queries.family)", lambda: queries.family(store, root_id))):
                t = time.perf_counter()
                r = call()
                lat[name].append(time.perf_counter() - t)
                assert not hasattr(r, "status_code") or r.status_code == 200, r
        whole = len(queries.family(store, root_id)["members"])

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        while not server.started:
            time.sleep(0.05)
        from playwright.sync_api import sync_playwright

        ready: list[float] = []
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")  # warm the browser's process and cache of the scripts
            for _ in range(5):
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/family/{fam}")
                page.wait_for_selector("#tree[data-ready='1']", timeout=60_000)
                ready.append(time.perf_counter() - t)
            nodes = page.evaluate("() => window.__cy.nodes().length")
            b.close()
        server.should_exit = True
        th.join(10)
        store.close()
    print(f"{a.models:,} models, {len(derived) + len(declared):,} edges (loaded in {load_s:.0f} s); family {fam}: "
          f"{whole:,} descendants of {root_id}, {doc['children_total']:,} direct children shown as "
          f"{len(doc['nodes'])} nodes")
    print("\n| request | p50 ms | p95 ms |\n|---|---|---|")
    for name, xs in lat.items():
        p50, p95 = _pcts(xs)
        print(f"| {name} | {p50:.1f} | {p95:.1f} |")
    base = _pcts(lat["baseline: whole family (graph.queries.family)"])[1]
    ours = _pcts(lat["family page twin (one level, grouped)"])[1]
    print(f"\nfamily twin p95 vs the whole family: {base / ours:.1f}× faster")
    print(f"interactive tree in headless Chromium ({nodes} nodes): median {statistics.median(ready):.2f} s, "
          f"max {max(ready):.2f} s over {len(ready)} loads")


if __name__ == "__main__":
    main()
