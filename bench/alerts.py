"""Alerts at Hub scale: a full evaluation against an incremental one, both graph backends.

    python -m bench.alerts                                   # embedded at 100k and 1M, Neo4j (ArcadeDB Bolt) at 100k
    python -m bench.alerts --neo4j-sizes 100000 1000000

The graph is :func:`bench.graph.synthetic`'s Hub-shaped one (power-law families, 60% direct children,
merges, 40% declaring their base; licences chosen so a share of models carry findings), plus exact
copies for 0.5% of models. Each case runs what the service's alerts job runs (``App.evaluate_alerts``,
then the sync into ``alerts.sqlite``):

1. **full**: every model (the first evaluation; before the change log, every run of the job);
2. **a 10-minute window**: the writes a window of the Hub's day brings (``--window`` new derivatives
   placed into random families with their cards, and as many card re-reads that change a licence),
   then the incremental evaluation (the change log since the last one, widened to families, declarers
   and copies);
3. **worst window**: the root of the largest family relicensed, so all its members are judged again.

The change log is read from exactly the last evaluation's start (``MARGIN_MS`` = 0; the service reads two
minutes earlier, re-evaluating those models twice). Times are wall seconds on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.graph import T0, neo4j_store, synthetic
from graph.records import DeclaredEdge, DerivedEdge, InFamily, ModelRecord, SameWeights
from graph.store import LineageStore


def load(store: LineageStore, n: int) -> dict[str, Any]:
    """The synthetic graph of ``n`` models, with licences that make findings, and 0.5% exact copies."""
    models, fams, member, derived, declared, roots = synthetic(n)
    rng = np.random.default_rng(2)
    lic = np.array(["apache-2.0", "mit", "llama2", "cc-by-nc-4.0", "other", None], dtype=object)
    models = [replace(m, license=lic[int(rng.integers(0, len(lic)))]) for m in models]
    store.ensure_schema()
    t = time.perf_counter()
    store.upsert_models(models, T0)
    store.upsert_families([replace(f, license="llama2" if i % 4 == 0 else f.license) for i, f in enumerate(fams)], T0)
    store.set_families(member, T0)
    store.upsert_derived(derived, T0)
    store.upsert_declared(declared, T0)
    fam_of = {m.model_key: m.family for m in member}
    pairs = [(f"k{k}", f"k{k + 1}") for k in rng.choice(n - 1, size=max(1, n // 200), replace=False).tolist()
             if fam_of.get(f"k{k}") == fam_of.get(f"k{k + 1}")]
    store.upsert_same_weights([SameWeights(a, b, "ab" * 32) for a, b in pairs], T0)
    sizes = np.diff([*roots, n])
    return {"load_s": time.perf_counter() - t, "roots": roots, "largest_root": roots[int(np.argmax(sizes))],
            "largest": int(sizes.max()), "models": models}


def window(store: LineageStore, n: int, size: int, seed: int, roots: list[int], models: list[ModelRecord]) -> None:
    """One window's writes: ``size`` new derivatives and ``size`` licence changes on cards re-read."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    new = [ModelRecord(key=f"w{seed}-{i}", id=f"new{seed}/model-{i}", license="cc-by-nc-4.0" if i % 2 else "apache-2.0",
                       created_at_ms=now) for i in range(size)]
    store.upsert_models(new, now)
    parents = [roots[int(rng.integers(0, len(roots)))] for _ in new]
    store.set_families([InFamily(m.key, f"fam{roots.index(p)}") for m, p in zip(new, parents)], now)
    store.upsert_derived([DerivedEdge(m.key, f"k{p}", 0.9, 30.0) for m, p in zip(new, parents)], now)
    store.upsert_declared([DeclaredEdge(m.key, f"k{p}", "finetune") for m, p in zip(new, parents) if rng.random() < 0.5], now)
    changed = [models[int(k)] for k in rng.choice(n, size=size, replace=False)]
    store.upsert_models([replace(m, license="mit" if m.license != "mit" else "apache-2.0") for m in changed], now)


def run_one(store: LineageStore, n: int, size: int, again: bool = True) -> dict[str, Any]:
    from lineage import app as app_mod
    from lineage.app import open_app
    from lineage.settings import Settings

    app_mod.MARGIN_MS = 0
    g = load(store, n)
    out: dict[str, Any] = {"n": n, "load_s": g["load_s"], "largest": g["largest"]}
    with tempfile.TemporaryDirectory() as home, open_app(Settings.from_env({"LINEAGE_HOME": home}), store=store) as app:
        t = time.perf_counter()
        _, sync = app.evaluate_alerts()
        out["full_s"], out["findings"] = time.perf_counter() - t, sync.opened
        time.sleep(0.01)
        window(store, n, size, 1, g["roots"], g["models"])
        t = time.perf_counter()
        evaluated, sync = app.evaluate_alerts()
        out["window_s"], out["window_findings"], out["window_changes"] = (
            time.perf_counter() - t, len(evaluated), sync.opened + sync.changed + sync.resolved)
        time.sleep(0.01)
        root = store.get_models([f"k{g['largest_root']}"])[0]
        store.upsert_models([replace(root, license="cc-by-nc-4.0")], int(time.time() * 1000))
        t = time.perf_counter()
        evaluated, sync = app.evaluate_alerts()
        out["worst_s"], out["worst_changes"] = time.perf_counter() - t, sync.opened + sync.changed + sync.resolved
        if again:
            t = time.perf_counter()
            app.evaluate_alerts(full=True)
            out["full_again_s"] = time.perf_counter() - t
    return out


def main() -> None:
    from graph.sqlite import SqliteStore

    p = argparse.ArgumentParser(prog="python -m bench.alerts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedded-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    p.add_argument("--neo4j-sizes", type=int, nargs="*", default=[100_000])
    p.add_argument("--window", type=int, default=10, help="new derivatives (and card changes) per 10-minute window")
    p.add_argument("--no-again", action="store_true", help="skip the second full evaluation (minutes on Neo4j at 1M)")
    a = p.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.embedded_sizes:
            s = SqliteStore(Path(tmp) / f"g{n}.sqlite")
            rows.append(("embedded (SQLite)", run_one(s, n, a.window, not a.no_again)))
            s.close()
            print(f"embedded {n:,} done", flush=True)
        for n in a.neo4j_sizes:
            with neo4j_store(Path(tmp), n) as s2:
                rows.append(("neo4j (ArcadeDB Bolt)", run_one(s2, n, a.window, not a.no_again)))
            print(f"neo4j {n:,} done", flush=True)
    print()
    print("| backend | models | load | open findings | full evaluation | a 10-minute window: incremental | "
          "its findings / changes | largest family's root relicensed | its changes | full again | full ÷ window |")
    print("|---" * 11 + "|")
    for name, r in rows:
        print(f"| {name} | {r['n']:,} | {r['load_s']:.0f} s | {r['findings']:,} | {r['full_s']:.1f} s | "
              f"{r['window_s']:.2f} s | {r['window_findings']} / {r['window_changes']} | {r['worst_s']:.2f} s "
              f"({r['largest']:,} members) | {r['worst_changes']:,} | "
              + (f"{r['full_again_s']:.1f} s" if "full_again_s" in r else "–") + " | "
              f"{r['full_s'] / max(r['window_s'], 1e-9):.0f}x |")


if __name__ == "__main__":
    main()
