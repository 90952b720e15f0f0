"""Lineage store benchmark: load rate and query latency on synthetic Hub-shaped graphs, both backends.

    python -m bench.graph                      # embedded at 100k and 1M models, Neo4j (ArcadeDB Bolt) at 100k
    python -m bench.graph --neo4j-sizes 100000 1000000

Shape: families with power-law sizes (Zipf s=0.6 over n/500 families: the largest holds ~2% of all models, 20k at 1M); inside a
family 60% of models derive directly from the base, the rest from an earlier member; 10% of models also
carry a second detected parent (merges); 40% declare a base. Latencies are p50/p95 over repeated calls of
the public query functions (``graph.queries``), so they include the Python-side work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graph import queries
from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord
from graph.store import LineageStore

T0 = 1_600_000_000_000


def synthetic(n: int, seed: int = 0) -> tuple[list[ModelRecord], list[FamilyRecord], list[InFamily], list[DerivedEdge],
                                              list[DeclaredEdge], list[int]]:
    rng = np.random.default_rng(seed)
    n_fam = max(4, n // 500)
    weights = 1.0 / np.arange(1, n_fam + 1) ** 0.6
    sizes = np.maximum(1, np.floor(weights / weights.sum() * n)).astype(int)
    sizes[0] += n - sizes.sum()
    models, fams, member, derived, declared, roots = [], [], [], [], [], []
    i = 0
    for f, size in enumerate(int(s) for s in sizes):
        root = i
        roots.append(root)
        fams.append(FamilyRecord(f"fam{f}", f"k{root}", f"Family {f}", "other" if f % 3 else "apache-2.0"))
        for j in range(size):
            k = i + j
            models.append(ModelRecord(key=f"k{k}", id=f"org{k % 5000}/model-{k}", author=f"org{k % 5000}",
                                      license="apache-2.0" if k % 4 else "mit", created_at_ms=T0 + k * 60_000,
                                      architecture="llama", hidden_size=4096, num_layers=32))
            member.append(InFamily(f"k{k}", f"fam{f}", "root" if j == 0 else "matched"))
            if j == 0:
                continue
            parent = root if j == 1 or rng.random() < 0.6 else root + int(rng.integers(1, j))
            derived.append(DerivedEdge(f"k{k}", f"k{parent}", float(rng.uniform(0.3, 1.0)), z=float(rng.uniform(6, 80))))
            if j > 2 and rng.random() < 0.1:
                other = root + int(rng.integers(1, j))
                if other != parent:
                    derived.append(DerivedEdge(f"k{k}", f"k{other}", float(rng.uniform(0.3, 1.0))))
            if rng.random() < 0.4:
                declared.append(DeclaredEdge(f"k{k}", f"k{root}", "finetune"))
        i += size
    return models, fams, member, derived, declared, roots


@contextmanager
def neo4j_store(tmp: Path, n: int) -> Iterator[LineageStore]:
    """A Neo4j-API store on an ArcadeDB Bolt server of its own (the test suite's), under ``tmp``."""
    from graph.neo4j import Neo4jStore, connect
    from tests.boltserver import bolt_server

    root = tmp / f"arcade{n}"
    root.mkdir()
    with bolt_server(root) as srv:
        store = Neo4jStore(connect(srv.uri, srv.user, srv.password), srv.database, owns_driver=True)
        try:
            yield store
        finally:
            store.close()


def _pcts(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def run_one(store: LineageStore, n: int, reps: int) -> dict[str, object]:
    models, fams, member, derived, declared, roots = synthetic(n)
    store.ensure_schema()
    t = time.perf_counter()
    store.upsert_models(models, T0)
    store.upsert_families(fams, T0)
    store.set_families(member, T0)
    t_nodes = time.perf_counter() - t
    t = time.perf_counter()
    store.upsert_derived(derived, T0)
    store.upsert_declared(declared, T0)
    t_edges = time.perf_counter() - t
    rng = np.random.default_rng(1)
    sizes = np.diff([*roots, n])
    big = roots[int(np.argmin(np.abs(sizes - 10_000)))]  # the family nearest 10k models
    lat: dict[str, list[float]] = {"derivatives depth 1": [], "derivatives transitive (family nearest 10k)": [],
                                   "ancestors": [], "family": []}
    size_big = 0
    for _ in range(reps):
        r = roots[int(rng.integers(0, min(len(roots), 200)))]
        t = time.perf_counter()
        queries.derivatives(store, f"org{r % 5000}/model-{r}", depth=1)
        lat["derivatives depth 1"].append(time.perf_counter() - t)
        t = time.perf_counter()
        size_big = len(queries.derivatives(store, f"org{big % 5000}/model-{big}"))
        lat["derivatives transitive (family nearest 10k)"].append(time.perf_counter() - t)
        k = int(rng.integers(0, n))
        t = time.perf_counter()
        queries.ancestors(store, f"org{k % 5000}/model-{k}")
        lat["ancestors"].append(time.perf_counter() - t)
        k = int(rng.integers(1, n))
        t = time.perf_counter()
        queries.family(store, f"org{k % 5000}/model-{k}")
        lat["family"].append(time.perf_counter() - t)
    return {"n": n, "edges": len(derived) + len(declared), "load_nodes_s": t_nodes, "load_edges_s": t_edges,
            "largest_family": size_big, "lat": {k: _pcts(v) for k, v in lat.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedded-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    p.add_argument("--neo4j-sizes", type=int, nargs="*", default=[100_000])
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        from graph.sqlite import SqliteStore

        for n in a.embedded_sizes:
            s = SqliteStore(Path(tmp) / f"g{n}.sqlite")
            results.append(("embedded (SQLite)", run_one(s, n, a.reps)))
            s.close()
            print(f"embedded {n:,} done", flush=True)
        for n in a.neo4j_sizes:
            with neo4j_store(Path(tmp), n) as s2:
                results.append(("neo4j (ArcadeDB Bolt)", run_one(s2, n, max(3, a.reps // 4))))
            print(f"neo4j {n:,} done", flush=True)
    print()
    print("| backend | models | edges | load nodes | load edges | rate (rows/s) | descendants of the ~10k family | "
          + " | ".join(f"{k} p50/p95 ms" for k in results[0][1]["lat"]) + " |")  # type: ignore[union-attr]
    print("|---" * (7 + 4) + "|")
    for name, r in results:
        rate = (r["n"] + r["edges"]) / (r["load_nodes_s"] + r["load_edges_s"])  # type: ignore[operator]
        lat = " | ".join(f"{p50:.1f} / {p95:.1f}" for p50, p95 in r["lat"].values())  # type: ignore[union-attr]
        print(f"| {name} | {r['n']:,} | {r['edges']:,} | {r['load_nodes_s']:.1f} s | {r['load_edges_s']:.1f} s | "
              f"{rate:,.0f} | {r['largest_family']:,} | {lat} |")


if __name__ == "__main__":
    main()
