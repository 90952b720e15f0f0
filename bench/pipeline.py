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
from zoo.quality import placement_quality


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
