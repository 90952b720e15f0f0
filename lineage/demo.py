"""``lineage demo``: the whole loop, offline, in one command.

It builds the tiny model zoo once (cached), serves it through the loopback Hub stand-in (a gated base
included), indexes the zoo's "catalog" bases from the stand-in as an operator whose token accepted
their terms, crawls every repo anonymously into the embedded store, and prints what a user wants to see.
Two zoo bases are left out of the catalog on purpose: the crawl must find them as candidate new families.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from lineage.output import emit_json, handle_errors, output_options
from lineage.settings import Settings

OPERATOR_TOKEN = "hf_demo_operator_accepted_terms"
GATED = ("meta-zoo/llama-a",)
UNCATALOGUED = ("neox-e", "qwen2-f")  # bases the crawl has to discover


def ensure_zoo(zoo: Path, quiet: bool) -> Path:
    """The tiny zoo at ``zoo``, built if missing (about 3 minutes on 2 cores, once)."""
    if not (zoo / "manifest.json").exists():
        from bench.zoo.build import Builder

        if not quiet:
            click.echo(f"building the tiny model zoo in {zoo} (one time, a few minutes) ...", err=True)
        Builder("tiny", zoo, quiet=quiet).build()
    return zoo


def run_demo(zoo: Path, settings: Settings, quiet: bool = False) -> dict[str, Any]:
    """Bootstrap, crawl and summarize; returns the JSON document the command prints."""
    from crawler.hubsim import HubSim, populate
    from crawler.hubsim.zoo import read_manifest
    from graph import queries
    from lineage.hub_commands import add_from_hub, make_crawler
    from lineage.store import open_store

    manifest = read_manifest(zoo)
    bases = [m for m in manifest if m["category"] == "base"]
    t0 = time.perf_counter()
    with HubSim(accepted_tokens=frozenset({OPERATOR_TOKEN})) as hub:
        populate(hub, zoo, gated=GATED)
        store = open_store(settings)
        try:
            catalog = [m for m in bases if m["name"] not in UNCATALOGUED]
            for m in catalog:  # the operator's account accepted the gated base's terms
                add_from_hub(str(m["id"]), str(m["name"]), hub.endpoint, settings, store=store, token=OPERATOR_TOKEN)
            c = make_crawler(hub.endpoint, settings, store=store, progress=not quiet, state_label="hubsim-demo")
            try:
                summary = c.run().as_dict()
                summary["phases"].update({k: round(v, 3) for k, v in c.pipeline.seconds.items()})
            finally:
                c.close()
            served = sum(hub.bytes_served.values())
            served_by_repo = {r: hub.served(r) for r in hub.repos}
            families = []
            for fam, n in store.families():
                if fam.root_key is None:
                    continue
                tree = queries.family(store, fam.root_key)
                families.append({"family": fam.name, "root": tree["root"], "license": tree["license"],
                                 "candidate": bool(fam.display_name and "candidate" in fam.display_name),
                                 "members": n, "tree": tree["members"]})
            alerts = queries.undeclared(store)
            stats = queries.stats(store)
        finally:
            store.close()
    return {"zoo": str(zoo), "catalog": [m["id"] for m in bases if m["name"] not in UNCATALOGUED],
            "crawl": summary, "bytes_served": served, "served_by_repo": served_by_repo, "families": families, "undeclared": alerts,
            "stats": stats, "seconds": round(time.perf_counter() - t0, 1)}


def print_report(doc: dict[str, Any]) -> None:
    from lineage.hub_commands import print_summary

    click.echo("")
    print_summary(doc["crawl"])
    click.echo("")
    for f in doc["families"]:
        tag = "  (candidate new family: no catalog base matched, no base declared)" if f["candidate"] else ""
        click.echo(f"family {f['family']}: root {f['root']}, licence {f['license']}, {f['members']} models{tag}")
        children: dict[str, list[dict[str, Any]]] = {}
        for r in f["tree"]:
            children.setdefault(r["parent"] or f["root"], []).append(r)

        _show_tree(children, f["root"], 0)
        click.echo("")
    if doc["undeclared"]:
        click.echo("derivatives whose card hides or misstates their base:")
        for a in doc["undeclared"]:
            lic = (f"; licence {a['license']} but the family's is {a['family_license']}"
                   if a.get("license_differs") else "")
            claimed = ", ".join(a.get("declared") or []) or "nothing"
            click.echo(f"  {a['id']}: {a['reason']} (weights say {a['detected_parent']}, card says {claimed}){lic}")
        click.echo("")
    root = doc["families"][0]["root"] if doc["families"] else "ROOT"
    click.echo("next, try:")
    click.echo(f"  lineage derivatives {root}            # everything derived from it, with scores")
    click.echo(f"  lineage family {root} --json")
    click.echo("  lineage undeclared                      # suspected unlicensed derivatives")
    click.echo("  lineage export --format graphml -o lineage.graphml")
    click.echo(f"finished in {doc['seconds']:.0f} s")


def _show_tree(children: dict[str, list[dict[str, Any]]], node: str, depth: int) -> None:
    for r in sorted(children.get(node, []), key=lambda r: r["id"]):
        score = f"{r['score']:.3f}" if r.get("score") is not None else "-"
        click.echo(f"  {'   ' * depth}└─ {r['id']}  (score {score})")
        if depth < 8:
            _show_tree(children, r["id"], depth + 1)


@click.command()
@click.option("--zoo", type=click.Path(file_okay=False), default=None,
              help="Zoo directory (default $LINEAGE_HOME/zoo/tiny; built there if missing).")
@output_options
@handle_errors
def demo(zoo: str | None, as_json: bool) -> None:
    """Run the whole loop offline: a Hub stand-in over a model zoo → crawl → fingerprints → graph.

    Uses the embedded store in $LINEAGE_HOME (default ~/.lineage); rerunning it changes nothing.

    Example:

        lineage demo
    """
    s = Settings.from_env()
    z = ensure_zoo(Path(zoo) if zoo else s.home / "zoo" / "tiny", quiet=as_json or s.disable_progress_bars)
    doc = run_demo(z, s, quiet=as_json or s.disable_progress_bars)
    if as_json:
        emit_json(json.loads(json.dumps(doc, default=str)))
    else:
        print_report(doc)
