"""How well a lineage graph places a zoo: the placement quality of a graph dump against the zoo's manifest.

Used by ``python -m bench.pipeline`` and by the end-to-end tests (``tests/e2e``); the dump is the plain
dictionary ``LineageStore.dump()`` returns, so this module needs nothing of the graph package.
"""

from __future__ import annotations

from typing import Any

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
