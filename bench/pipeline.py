"""End-to-end benchmark: the whole loop over a zoo served by the loopback Hub stand-in.

    python -m bench.pipeline [--zoo DIR]          # default: the small zoo (the zoo cache's small zoo)

Prints models/minute end to end, where the time goes (listing, metadata, bytes+fingerprint, match,
write), bytes read as a share of checkpoint bytes, and the placement quality against the manifest:
family accuracy, direct-parent accuracy (all single-parent derivatives, and multi-generation ones:
those whose true parent is itself a derivative), and detected edges between independent families.
Also `bench/crawl.py` reads its numbers from here (crawl only, no graph: ``--crawl-only``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from lineage.settings import Settings
from zoo.build import default_dir
from zoo.manifest import Manifest


def placement_quality(models: Manifest, dump: dict[str, Any]) -> dict[str, Any]:
    """Family accuracy, direct-parent accuracy and cross-family edges against the manifest."""
    nodes = {m["key"]: m["id"] for m in dump["models"]}
    fam_root = {f["name"]: nodes.get(f["root_key"]) for f in dump["families"]}
    family = {nodes[r["src"]]: fam_root.get(r["dst"]) for r in dump["IN_FAMILY"]}
    parent = {nodes[e["src"]]: nodes[e["dst"]] for e in dump["DERIVED_FROM"]}
    detected: dict[str, set[str]] = {}
    for e in dump["DERIVED_FROM"]:
        detected.setdefault(nodes[e["src"]], set()).add(nodes[e["dst"]])
    for r in dump["SAME_WEIGHTS"]:  # an exact copy has no edge of its own: it shares its twin's parent
        a, b = nodes[r["src"]], nodes[r["dst"]]
        for x, y in ((a, b), (b, a)):
            if x not in parent and y in parent:
                parent[x] = parent[y]
    by_name = models.by_name()
    roots = {m.id: {by_name[r].id for r in m.roots} for m in models}
    fam_ok = [family.get(m.id) in roots[m.id] for m in models]
    single = [m for m in models if len(m.parents) == 1]
    par_ok = {m.id: parent.get(m.id) == by_name[m.parents[0]].id for m in single}
    chain = [ok for mid, ok in par_ok.items() if by_name[next(m for m in single if m.id == mid).parents[0]].parents]
    cross = [(a, b) for a, b in parent.items() if a in roots and b in roots and not roots[a] & roots[b]]
    wrong = sorted(f"{mid} -> {parent.get(mid)}" for mid, ok in par_ok.items() if not ok)
    merges = [m for m in models if len(m.parents) > 1]
    merge_ok = [{by_name[p].id for p in m.parents} <= detected.get(m.id, set()) for m in merges]
    false_merges = sorted(m.id for m in single if len(detected.get(m.id, ())) > 1)
    return {"family_accuracy": sum(fam_ok) / len(fam_ok), "direct_parent_accuracy": sum(par_ok.values()) / len(par_ok),
            "multi_generation_accuracy": sum(chain) / max(1, len(chain)), "multi_generation_n": len(chain),
            "single_parent_n": len(par_ok), "cross_family_edges": len(cross), "misplaced": wrong,
            "merges_with_all_parents": sum(merge_ok) / max(1, len(merge_ok)), "merges_n": len(merges),
            "false_merges": false_merges}


def run(zoo: Path, keep: Path | None = None) -> dict[str, Any]:
    from graph.sqlite import SqliteStore
    from lineage.demo import run_demo
    from zoo.manifest import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        home = str(keep) if keep else tmp
        s = Settings.from_env({"LINEAGE_HOME": home, "LINEAGE_DISABLE_PROGRESS_BARS": "1"})
        t = time.perf_counter()
        doc = run_demo(zoo, s, quiet=True)
        wall = time.perf_counter() - t
        store = SqliteStore(Path(home) / "graph.sqlite")
        quality = placement_quality(read_manifest(zoo), store.dump())
        store.close()
    c = doc["crawl"]
    return {"zoo": str(zoo), "wall_seconds": round(wall, 1), "crawl": c, "quality": quality,
            "bytes_served": doc["bytes_served"]}


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
        settled = app.pipeline.settled
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=default_dir("small"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--home", type=Path, default=None, help="Keep the store, index and crawl state here.")
    a = p.parse_args()
    r = run(a.zoo, a.home)
    if a.json:
        print(json.dumps(r, indent=2))
        return
    c, q = r["crawl"], r["quality"]
    print(f"zoo {r['zoo']}: {c['processed']} models in {c['seconds']:.1f} s of crawl "
          f"({c['models_per_minute']} models/min end to end; {r['wall_seconds']} s with bootstrap and start-up)")
    print("\n| phase | seconds | share |\n|---|---|---|")
    total = sum(c["phases"].values())
    for k, v in sorted(c["phases"].items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {100 * v / total:.0f}% |")
    print(f"\nbytes read {c['bytes_read']:,} of {c['checkpoint_bytes']:,} checkpoint bytes "
          f"({100 * (c['bytes_share'] or 0):.1f}%); statuses {c['statuses']}")
    print(f"\nfamily accuracy {q['family_accuracy']:.3f}; direct parent {q['direct_parent_accuracy']:.3f} "
          f"over {q['single_parent_n']} single-parent derivatives; multi-generation {q['multi_generation_accuracy']:.3f} "
          f"(n={q['multi_generation_n']}); detected edges across independent families: {q['cross_family_edges']}; "
          f"merges with all their parents {q['merges_with_all_parents']:.3f} (n={q['merges_n']}), "
          f"second parents on non-merges: {len(q['false_merges'])}")
    if q["misplaced"]:
        print("misplaced: " + "; ".join(q["misplaced"]))


if __name__ == "__main__":
    main()
