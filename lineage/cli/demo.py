"""``lineage demo``: the whole loop, offline, in one command (the loop itself is :mod:`lineage.demo`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from lineage.cli.hub import print_summary
from lineage.cli.output import emit_json, handle_errors, output_options
from lineage.settings import Settings


def print_report(doc: dict[str, Any]) -> None:
    click.echo("")
    print_summary(doc["crawl"])
    click.echo("")
    for f in doc["families"]:
        tag = "  (candidate new family: no catalog base matched, no base declared)" if f["candidate"] else ""
        if f.get("shared_init"):  # SHARES_INIT: one random start, trained apart, neither derived from the other
            starts = ", ".join(f"{r['id']} (score {r['score']:.3f})" for r in f["shared_init"])
            tag = (f"  (candidate new family: trained from the same random start as {starts}, not derived from it)"
                   if f["candidate"] else f"  (shares its random start with {starts})")
        copies = f.get("copies") or []
        split = f" ({len(f['tree']) + 1} in the tree, {len(copies)} exact copies)" if copies else ""
        click.echo(f"family {f['family']}: root {f['root']}, licence {f['license']}, {f['members']} models{split}{tag}")
        children: dict[str, list[dict[str, Any]]] = {}
        for r in f["tree"]:
            children.setdefault(r["parent"] or f["root"], []).append(r)

        _show_tree(children, f["root"], 0)
        for c in copies:
            click.echo(f"  = {c['id']}: " + (f"exact copy of {c['copy_of']}" if c["copy_of"] else "in the family, no edge yet"))
        for r in f.get("merged_in") or []:
            click.echo(f"  + {r['id']}  (score {r['score']:.3f} against {r['parent'] or f['root']}): a merge, "
                       f"filed under family {r['family']}")
        click.echo("")
    if doc["undeclared"]:
        click.echo("derivatives whose card hides or misstates their base:")
        for a in doc["undeclared"]:
            lic = (f"; licence {a['license']} but the family's is {a['family_license']}"
                   if a.get("license_differs") else "")
            claimed = ", ".join(a.get("declared") or []) or "nothing"
            click.echo(f"  {a['id']}: {a['reason']} (weights say {a['detected_parent']}, card says {claimed}){lic}")
        click.echo("")
    a = doc["alerts"]
    if a["lines"]:
        click.echo(f"alerts sent to {a['file']} (a JSONL subscription; webhook, Slack and e-mail work the same):")
        for line in a["lines"]:
            click.echo(f"  {line}")
        click.echo("")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(a["by_kind"].items())) or "none"
    click.echo(f"alerts: {a['findings']} open findings ({kinds}); {a['sent']} sent this run")
    click.echo("")
    root = doc["families"][0]["root"] if doc["families"] else "ROOT"
    click.echo("next, try:")
    click.echo(f"  lineage derivatives {root}            # everything derived from it, with scores and relations")
    click.echo(f"  lineage family {root} --json")
    click.echo("  lineage undeclared                      # suspected unlicensed derivatives")
    click.echo("  lineage alerts list                     # licence findings; lineage alerts deliver sends them")
    click.echo("  lineage export --format graphml -o lineage.graphml")
    fam = max(doc["families"], key=lambda f: f["members"])["family"] if doc["families"] else None
    click.echo("browse the graph: lineage web, then open http://127.0.0.1:8080/"
               + (f"family/{quote(fam, safe='/')}" if fam else ""))
    ph = doc.get("phases", {})
    zoo = f"zoo {ph['zoo']:.0f} s, built now" if ph.get("zoo_built") else "zoo cached"
    click.echo(f"finished in {doc['seconds']:.0f} s ({zoo}; indexing bases {ph.get('bootstrap', 0):.0f} s, "
               f"crawl {ph.get('crawl', 0):.0f} s, typing relations {ph.get('relations', 0):.0f} s, "
               f"report {ph.get('report', 0):.0f} s)")


def _show_tree(children: dict[str, list[dict[str, Any]]], node: str, depth: int) -> None:
    for r in sorted(children.get(node, []), key=lambda r: r["id"]):
        score = f"{r['score']:.3f}" if r.get("score") is not None else "-"
        rel = f", {r['relation']}" if r.get("relation") else ""  # typed from the weights (lineage type-edges)
        click.echo(f"  {'   ' * depth}└─ {r['id']}  (score {score}{rel})")
        if depth < 8:
            _show_tree(children, r["id"], depth + 1)


@click.command()
@click.option("--zoo", type=click.Path(file_okay=False), default=None,
              help="Zoo directory (default: the shared zoo cache, $LINEAGE_ZOO_CACHE or ~/.cache/model-lineage/zoo, "
                   "where the tests look too; built there if missing).")
@output_options
@handle_errors
def demo(zoo: str | None, as_json: bool) -> None:
    """Run the whole loop offline: a Hub stand-in over a model zoo → crawl → fingerprints → graph.

    Uses the embedded store in $LINEAGE_HOME (default ~/.lineage); rerunning it changes nothing.

    Example:

        lineage demo
    """
    from lineage.demo import ensure_zoo, run_demo

    s = Settings.from_env()
    quiet = as_json or s.disable_progress_bars
    from zoo.build import default_dir

    t0 = time.perf_counter()
    where = Path(zoo) if zoo else default_dir("tiny")
    built = not (where / "manifest.json").exists()
    z = ensure_zoo(where, quiet, say=lambda m: click.echo(m, err=True))
    zoo_s = time.perf_counter() - t0
    doc = run_demo(z, s, quiet=quiet)
    # the last line counts the whole run, the zoo build included (it once counted the crawl alone)
    doc["phases"] = {"zoo": round(zoo_s, 1), "zoo_built": built, **doc["phases"]}
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        emit_json(json.loads(json.dumps(doc, default=str)))
    else:
        print_report(doc)
