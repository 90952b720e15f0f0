"""Test helpers for ``tests/e2e/test_crawl_order.py``: crawl the zoo with its repos appearing in a chosen
order, and read the tree a user sees off a graph dump."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lineage.settings import Settings
from zoo.quality import placement_quality


def crawl_in_order(zoo: Path, home: Path, seed: int | None = None, chunk: int = 6) -> dict[str, Any]:
    """Index the catalog, then crawl the zoo with the repos appearing on the stand-in in a random order
    (``seed``; None: publication order): ``chunk`` repos at a time, a crawl pass after each, every repo
    keeping its true creation time. A repo that appears late is found by its recent ``lastModified``, as
    a model made public (or re-committed) long after it was created is on the Hub. Returns the graph's
    dump and the placement quality."""
    import random
    from datetime import timedelta

    from graph.sqlite import SqliteStore
    from hubsim import HubSim
    from lineage.app import open_app
    from lineage.demo import GATED, OPERATOR_TOKEN, UNCATALOGUED
    from lineage.zoohub import EPOCH, zoo_repos
    from zoo.manifest import read_manifest

    manifest = read_manifest(zoo)
    catalog = [m for m in manifest if m.category == "base" and m.name not in UNCATALOGUED]
    repos = zoo_repos(manifest, EPOCH, 2, GATED)
    first = [r for r in repos if r.repo_id in {m.id for m in catalog}]
    rest = [r for r in repos if r not in first]
    if seed is not None:
        random.Random(seed).shuffle(rest)
    s = Settings.from_env({"LINEAGE_HOME": str(home), "LINEAGE_DISABLE_PROGRESS_BARS": "1",
                           "LINEAGE_WORKERS": "inline"})  # one process: no worker start-up per pass
    late = max(r.created_at for r in repos if r.created_at is not None)
    with HubSim(accepted_tokens=frozenset({OPERATOR_TOKEN})) as hub, open_app(s) as app:
        for r in first:
            hub.add(r)
        for m in catalog:
            app.add_base(m.id, m.name, hub.endpoint, token=OPERATOR_TOKEN)
        c = app.crawler(hub.endpoint, progress=False, state_label="order")
        for i in range(0, len(rest), chunk if seed is not None else len(rest)):
            for r in rest[i:i + chunk] if seed is not None else rest:
                if seed is not None:  # appears now: created long ago, modified (made public) just now
                    late += timedelta(minutes=1)
                    r.last_modified = late
                hub.add(r)
            app.crawl(c)
        settled = app.pipeline.revisited
    store = SqliteStore(Path(home) / "graph.sqlite")
    dump = store.dump()
    store.close()
    return {"dump": dump, "quality": placement_quality(manifest, dump), "settled": settled}


def tree(dump: dict[str, Any]) -> dict[str, Any]:
    """What a user reads off the graph, by repo id: every detected edge, every pair of exact copies,
    every family's root and members, the candidate families."""
    ids = {m["key"]: m["id"] for m in dump["models"]}
    roots = {f["name"]: ids.get(f["root_key"]) for f in dump["families"]}
    return {"derived": sorted((ids[e["src"]], ids[e["dst"]]) for e in dump["DERIVED_FROM"]),
            "copies": sorted(tuple(sorted((ids[e["src"]], ids[e["dst"]]))) for e in dump["SAME_WEIGHTS"]),
            "families": sorted((ids[r["src"]], roots.get(r["dst"])) for r in dump["IN_FAMILY"]),
            "candidates": sorted(m["id"] for m in dump["models"] if m["candidate_family"])}
