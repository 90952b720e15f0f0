"""``lineage demo``: the whole loop, offline, in one command.

It builds the tiny model zoo once (cached), serves it through the loopback Hub stand-in (a gated base
included), indexes the zoo's "catalog" bases from the stand-in as an operator whose token accepted
their terms, crawls every repo anonymously into the embedded store, and prints what a user wants to see.
Three zoo bases are left out of the catalog on purpose: the crawl must find them as candidate new families
(llama-c from llama-a's random seed: a candidate family joined to it by SHARES_INIT, not a derivative).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from alerts.policy import suspects
from alerts.sinks import summary as alert_line
from alerts.subscriptions import Subscription
from graph import queries
from graph.store import LineageStore
from hubsim import HubSim
from lineage.app import open_app
from lineage.errors import LineageError
from lineage.settings import Settings
from lineage.zoohub import populate
from zoo.manifest import read_manifest

OPERATOR_TOKEN = "hf_demo_operator_accepted_terms"
GATED = ("meta-zoo/llama-a",)
UNCATALOGUED = ("llama-c", "neox-e", "qwen2-f")  # bases the crawl has to discover (llama-c: from llama-a's random start)


def ensure_zoo(zoo: Path, quiet: bool, say: Callable[[str], None] = print) -> Path:
    """The tiny zoo at ``zoo``, built if missing (about a minute on 2 cores, once).

    Raises:
        LineageError: ``zoo`` holds other files and no zoo (built or partly built): nothing is written into
            a directory that is not the zoo's.
    """
    if not (zoo / "manifest.json").exists():
        from zoo.build import Builder
        from zoo.recipes import all_recipes

        ours = {"tokenizers", "tokens", *(r.name for r in all_recipes())}  # what a (partial) build writes
        present = {p.name for p in zoo.iterdir()} if zoo.is_dir() else set()
        if present and not present & ours:
            raise LineageError(f"{zoo} is not empty and holds no model zoo (no manifest.json): give an empty or "
                               "new directory to build one in, or a built zoo")

        if not quiet:
            say(f"building the tiny model zoo in {zoo} (one time, about a minute) ...")
        Builder("tiny", zoo, quiet=quiet).build()
    return zoo


def _copies(store: LineageStore, family: str, tree: dict[str, Any]) -> list[dict[str, str | None]]:
    """Family members outside the tree because they are exact re-uploads (``SAME_WEIGHTS``): each with
    the model it copies, so the family's count and the tree shown add up."""
    shown = {r["key"] for r in tree["members"]} | {tree["root_key"]}
    rest = [k for k in store.family_members(family) if k not in shown]
    pairs = [(k, next((c for c in store.copies_of(k) if c in shown), None)) for k in rest]
    labels = store.labels([k for p in pairs for k in p if k])
    return [{"id": labels.get(k, (k, None))[0], "copy_of": labels.get(c, (c, None))[0] if c else None} for k, c in pairs]


def run_demo(zoo: Path, settings: Settings, quiet: bool = False) -> dict[str, Any]:
    """Bootstrap, crawl and summarize; returns the JSON document the command prints."""
    manifest = read_manifest(zoo)
    bases = [m for m in manifest if m.category == "base"]
    catalog = [m for m in bases if m.name not in UNCATALOGUED]
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    with HubSim(accepted_tokens=frozenset({OPERATOR_TOKEN})) as hub, open_app(settings, writer="lineage demo") as app:
        populate(hub, zoo, gated=GATED)
        with tqdm(catalog, desc="indexing the catalog's bases", unit="base", disable=quiet) as bar:
            for m in bar:  # the operator's account accepted the gated base's terms
                bar.set_postfix_str(m.id)
                app.add_base(m.id, m.name, hub.endpoint, token=OPERATOR_TOKEN)
        phases["bootstrap"] = time.perf_counter() - t0
        c = app.crawler(hub.endpoint, progress=not quiet, state_label="hubsim-demo")
        summary = app.crawl(c).as_dict()
        phases["crawl"] = time.perf_counter() - t0 - phases["bootstrap"]
        served = sum(hub.bytes_served.values())
        served_by_repo = {r: hub.served(r) for r in hub.repos}
        t = time.perf_counter()
        with tqdm(desc="typing relations", unit="edge", disable=quiet) as bar:
            def moved(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            # the operator's token reads the gated base too (its terms were accepted to index it)
            typer = app.crawler(hub.endpoint, token=OPERATOR_TOKEN, progress=False, state_label="hubsim-demo")
            relations = app.type_edges(typer, limit=10_000, progress=moved)
        phases["relations"] = time.perf_counter() - t
        store = app.store
        families = []
        for fam, n in store.families():
            if fam.root_key is None:
                continue
            tree = queries.family(store, fam.root_key)
            # a merge of two families is a member of one and a descendant of both: shown apart in the other
            home = {r["key"]: store.family_of(r["key"]) for r in tree["members"]}
            own = [r for r in tree["members"] if (f := home[r["key"]]) is None or f.name == fam.name]
            merged = [{**r, "family": f.name} for r in tree["members"] if (f := home[r["key"]]) is not None
                      and f.name != fam.name]
            families.append({"family": fam.name, "root": tree["root"], "license": tree["license"],
                             "candidate": bool(fam.display_name and "candidate" in fam.display_name),
                             "shared_init": tree["shared_init"],
                             "members": n, "tree": own, "merged_in": merged, "copies": _copies(store, fam.name, tree)})
        alerts = suspects(store)
        stats = queries.stats(store)
        # the alerts a JSONL subscription would have been sent: new findings only (a rerun sends nothing)
        sink = Subscription(name="demo", sink="jsonl", path=str(settings.home / "demo-alerts.jsonl"))
        findings, sync = app.evaluate_alerts()
        state = app.alert_state()
        first = state.last_seq() - (sync.opened + sync.changed + sync.resolved)
        report = app.deliver_alerts([sink])
        sent = [alert_line(e) for e in state.events_after(first)]
        notices = {"file": sink.path, "findings": len(findings), "by_kind": dict(Counter(f.kind for f in findings)),
                   "sent": int(report.counts["demo"]["sent"]) if "demo" in report.counts else 0, "lines": sent}
    return {"zoo": str(zoo), "catalog": [m.id for m in catalog], "crawl": summary, "bytes_served": served,
            "relations": relations,
            "served_by_repo": served_by_repo, "families": families, "undeclared": alerts, "alerts": notices, "stats": stats,
            "seconds": round(time.perf_counter() - t0, 1),
            "phases": {**{k: round(v, 1) for k, v in phases.items()},
                       "report": round(time.perf_counter() - t0 - sum(phases.values()), 1)}}
