"""Chaos crawl: a whole zoo crawled through a stand-in that fails 20% of requests, against a clean crawl.

    python -m bench.chaos [--zoo DIR] [--rate 0.2] [--seed 1]     # default: the small zoo

Every origin (API, resolve, CDN) answers a fifth of its requests with a 429 (``RateLimit`` and
``Retry-After``), a 5xx, a hang past the client's timeout, a connection reset or a truncated body. The
crawl (bootstrap clean, then discovery, metadata, ranged reads, matching, graph writes) is repeated pass
after pass, as the service's scheduler would, until nothing is pending; then the graph, the crawl
results and the fingerprint files must equal the clean crawl's, with no model fingerprinted twice.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crawler.errors import HubRequestError
from hubsim import Chaos, HubSim
from lineage.app import open_app
from lineage.settings import Settings
from lineage.zoohub import zoo_repos
from zoo.manifest import read_manifest

TOKEN = "hf_chaos_operator"
UNCATALOGUED = ("neox-e", "qwen2-f")  # as in the demo: the crawl must find these bases itself


@dataclass
class Run:
    """What one crawl left behind, for comparison."""

    graph: dict[str, list[dict[str, Any]]]
    results: list[tuple[str, str, str]]  # (key, sha, status), one per processed commit
    fingerprints: dict[str, str]  # file name -> sha256 of its bytes
    passes: int = 0
    stopped: int = 0  # passes that ended early on a Hub failure (the next pass resumes)
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)


def crawl(zoo: Path, home: Path, chaos: Chaos | None, timeout: float = 30.0, max_passes: int = 30,
          families: tuple[str, ...] = ()) -> Run:
    """Bootstrap the catalogued bases (clean), then crawl ``zoo`` through a stand-in with ``chaos`` until
    nothing is pending. ``families``: serve only the models whose roots are all among these (default: all)."""
    settings = Settings.from_env({"LINEAGE_HOME": str(home), "LINEAGE_WORKERS": "inline",
                                  "LINEAGE_DISABLE_PROGRESS_BARS": "1"})
    manifest = read_manifest(zoo)
    if families:
        manifest = replace(manifest, models=tuple(m for m in manifest if set(m.roots) <= set(families)))
    t0 = time.perf_counter()
    run = Run({}, [], {})
    with HubSim(accepted_tokens=frozenset({TOKEN})) as hub, open_app(settings) as app:
        for r in zoo_repos(manifest, gated=("meta-zoo/llama-a",)):
            hub.add(r)
        for m in manifest:
            if m.category == "base" and m.name not in UNCATALOGUED:
                app.add_base(m.id, m.name, hub.endpoint, token=TOKEN)
        hub.set_chaos(chaos)
        c = app.crawler(hub.endpoint, progress=False, state_label="chaos", timeout=timeout, backoff_s=0.01)
        for run.passes in range(1, max_passes + 1):  # the loop variable is the run's pass count
            try:
                s = app.crawl(c)
            except HubRequestError:  # a listing page past its retries: the scheduler's next tick resumes
                run.stopped += 1
                continue
            if s.pending == 0 and c.state.counts().get("pending", 0) == 0:
                break
        hub.set_chaos(None)
        run.faults = Counter({k[6:]: v for k, v in hub.requests.items() if k.startswith("fault:")})
        run.results = sorted((r["key"], r["sha"], r["status"]) for r in c.state.results())
        run.graph = _graph(app.store.dump())
    run.fingerprints = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((home / "index" / "fingerprints").glob("*.lfp"))}
    run.seconds = time.perf_counter() - t0
    return run


def _graph(dump: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The graph without timestamps and run-local figures, rows in a stable order."""
    def clean(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.endswith(("_ms", "_at")) and k not in ("seconds",)}

    return {k: sorted((clean(r) for r in v), key=repr) for k, v in dump.items()}


def compare(clean: Run, chaotic: Run) -> list[str]:
    """What differs between two runs (empty: the same graph, results and fingerprint files)."""
    out: list[str] = []
    for kind in sorted(set(clean.graph) | set(chaotic.graph)):
        a, b = clean.graph.get(kind, []), chaotic.graph.get(kind, [])
        if a != b:
            out.append(f"graph {kind}: {len(a)} clean vs {len(b)} under chaos, "
                       f"{sum(1 for r in a if r not in b)} clean rows missing")
    if clean.results != chaotic.results:
        out.append(f"crawl results: {len(clean.results)} clean vs {len(chaotic.results)} under chaos")
    twice = [k for k, n in Counter((k, s) for k, s, _ in chaotic.results).items() if n > 1]
    if twice:
        out.append(f"{len(twice)} commits processed twice")
    if clean.fingerprints != chaotic.fingerprints:
        out.append(f"fingerprint files differ: {len(clean.fingerprints)} clean vs {len(chaotic.fingerprints)}")
    return out


def main() -> None:
    from zoo.build import default_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=default_dir("small"))
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean = crawl(a.zoo, Path(tmp) / "clean", None)
        chaotic = crawl(a.zoo, Path(tmp) / "chaos", Chaos(rate=a.rate, seed=a.seed, hang_s=1.0), timeout=0.5)
    diff = compare(clean, chaotic)
    print(f"zoo {a.zoo}: {len(clean.results)} commits; chaos rate {a.rate}, seed {a.seed}")
    print("\n| | clean | chaos |\n|---|---|---|")
    print(f"| seconds | {clean.seconds:.1f} | {chaotic.seconds:.1f} |")
    print(f"| passes (stopped early) | {clean.passes} ({clean.stopped}) | {chaotic.passes} ({chaotic.stopped}) |")
    print(f"| faults injected | 0 | {sum(chaotic.faults.values())}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(chaotic.faults.items())) + " |")
    print(f"| graph rows | {sum(map(len, clean.graph.values()))} | {sum(map(len, chaotic.graph.values()))} |")
    print(f"| fingerprint files | {len(clean.fingerprints)} | {len(chaotic.fingerprints)} |")
    print("\nsame graph, results and fingerprints: " + ("yes" if not diff else "NO\n  " + "\n  ".join(diff)))
    raise SystemExit(1 if diff else 0)


if __name__ == "__main__":
    main()
