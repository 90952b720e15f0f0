"""``lineage derivatives / ancestors / family / undeclared / stats / export / repair``: thin commands over the graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from alerts.policy import suspects
from graph import queries
from graph.records import TYPED_RELATIONS, Lineage
from graph.store import MAX_DEPTH, LineageStore
from lineage.cli.output import emit_json, fmt_bytes, handle_errors, output_options, table


def _with_store(fn: Callable[[LineageStore], Any]) -> Any:
    from lineage.settings import Settings
    from lineage.store import open_store

    s = Settings.from_env()
    if s.graph == "embedded":  # these commands only read: a missing home is a typo, not an empty graph
        s.existing_home()
    store = open_store(s, read_only=True)
    try:
        return fn(store)
    finally:
        store.close()


def _score(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print_lineage(rows: list[Lineage], title: str, empty: str, link: str) -> None:
    """``link``: what the row's ``parent`` field is here (``parent`` going down, ``child`` going up)."""
    if not rows:
        click.echo(empty)
        return
    click.echo(title)
    click.echo(table([[r.id, r.hops, r.parent, r.via, r.extra.get("relation") or "-", _score(r.min_score),
                       r.extra.get("license") or "-"] for r in rows],
                     ["model", "hops", link, "via", "relation", "chain min score", "license"]))


@click.command()
@click.argument("model_id")
@click.option("--depth", type=click.IntRange(1, MAX_DEPTH), default=MAX_DEPTH, show_default=True, help="Most hops to follow.")
@click.option("--min-score", type=click.FloatRange(-1, 1), default=0.0, show_default=True,
              help="Follow only detected edges scoring at least this (every hop of the chain).")
@click.option("--declared", "mode", flag_value="declared", help="Follow only base_model claims from model cards.")
@click.option("--detected", "mode", flag_value="detected", default=True, help="Follow only weight-detected edges (default).")
@click.option("--both", "mode", flag_value="both", help="Follow either kind.")
@click.option("--relation", type=click.Choice(TYPED_RELATIONS), default=None,
              help="Only derivatives whose detected edge has this type (typed from the weights by `lineage type-edges`).")
@output_options
@handle_errors
def derivatives(model_id: str, depth: int, min_score: float, mode: str, relation: str | None, as_json: bool) -> None:
    """What derives from MODEL_ID (transitively), with each detected edge's relation where it is typed.

    Example:

        lineage derivatives meta-llama/Llama-2-7b-hf --depth 2 --min-score 0.5

        lineage derivatives meta-llama/Llama-2-7b-hf --relation quantized --json
    """
    rows = _with_store(lambda s: queries.derivatives(s, model_id, depth=depth, min_score=min_score, mode=mode,  # type: ignore[arg-type]
                                                     relation=relation))
    what = f"{mode}" + (f", relation {relation}" if relation else "")
    if as_json:
        emit_json({"model": model_id, "mode": mode, "relation": relation, "derivatives": [r.to_dict() for r in rows]})
    else:
        _print_lineage(rows, f"{len(rows)} derivative(s) of {model_id} ({what}):", f"Nothing derives from {model_id} ({what}).", "parent")


@click.command()
@click.argument("model_id")
@click.option("--declared", "mode", flag_value="declared", help="Follow only base_model claims.")
@click.option("--detected", "mode", flag_value="detected", default=True, help="Follow weight-detected edges (default).")
@click.option("--both", "mode", flag_value="both", help="Follow either kind.")
@output_options
@handle_errors
def ancestors(model_id: str, mode: str, as_json: bool) -> None:
    """Where MODEL_ID comes from: its parents up to the base it was trained from.

    Example:

        lineage ancestors someone/llama-2-7b-chat-finetune --json
    """
    rows = _with_store(lambda s: queries.ancestors(s, model_id, mode=mode))  # type: ignore[arg-type]
    if as_json:
        docs = [r.to_dict() for r in rows]
        for d in docs:  # going up, the row's link is the child it was reached from
            d["child"] = d.pop("parent")
        emit_json({"model": model_id, "mode": mode, "ancestors": docs})
    else:
        _print_lineage(rows, f"Ancestors of {model_id} ({mode}), nearest first:",
                       f"{model_id} has no known ancestor ({mode}): a base, or not matched yet.", "child")


@click.command()
@click.argument("model_id")
@output_options
@handle_errors
def family(model_id: str, as_json: bool) -> None:
    """The whole tree of MODEL_ID's base family, with detected scores.

    Example:

        lineage family meta-llama/Llama-2-7b-hf
    """
    doc = _with_store(lambda s: queries.family(s, model_id))
    if as_json:
        emit_json(doc)
        return
    click.echo(f"Family {doc['family'] or '(unnamed)'}: root {doc['root']} (licence {doc['license'] or '?'}), "
               f"{len(doc['members'])} derivative(s)")
    kids: dict[str, list[dict[str, Any]]] = {}
    for m in doc["members"]:
        kids.setdefault(m["parent"], []).append(m)

    def walk(node: str, indent: str, seen: set[str]) -> None:
        for m in sorted(kids.get(node, []), key=lambda m: m["id"]):
            if m["id"] in seen:
                continue
            seen.add(m["id"])
            # the edge's own score, as the demo's tree prints it (min_score, the chain's weakest, is in --json)
            rel = f"  {m['relation']}" if m.get("relation") else ""
            click.echo(f"{indent}└─ {m['id']}  score {_score(m.get('score'))}{rel}  licence {m.get('license') or '?'}")
            walk(m["id"], indent + "   ", seen)

    click.echo(doc["root"])
    walk(doc["root"], "", set())


@click.command()
@click.option("--family", "family_name", default=None, help="Only this family.")
@output_options
@handle_errors
def undeclared(family_name: str | None, as_json: bool) -> None:
    """Models whose weights derive from a base their card does not name (or names wrongly).

    Example:

        lineage undeclared --family llama-2 --json
    """
    rows = _with_store(lambda s: suspects(s, family_name))
    if as_json:
        emit_json({"family": family_name, "undeclared": rows})
        return
    if not rows:
        click.echo("No undeclared derivatives" + (f" in family {family_name}." if family_name else "."))
        return
    click.echo(table([[r["id"], r["reason"], r["detected_parent"], _score(r["score"]), ", ".join(r["declared"]) or "-",
                       r["license"] or "-", "yes" if r["license_differs"] else "no"] for r in rows],
                     ["model", "reason", "detected parent", "score", "declared", "licence", "licence differs"]))


@click.command()
@output_options
@handle_errors
def stats(as_json: bool) -> None:
    """Counts: models per family, per month of creation, per relation.

    Example:

        lineage stats --json
    """
    doc = _with_store(queries.stats)
    if as_json:
        emit_json(doc)
        return
    click.echo(table([[k, v] for k, v in doc["counts"].items()], ["node / edge", "count"]))
    click.echo("")
    click.echo(table([[f["family"], f["models"], f["license"] or "-"] for f in doc["families"]], ["family", "models", "licence"])
               if doc["families"] else "No families yet.")
    click.echo("")
    click.echo(table([[k, v] for k, v in doc["per_month"].items()], ["created (month)", "models"]) if doc["per_month"] else "")
    click.echo(table([[k, v] for k, v in doc["per_relation"].items()], ["relation", "edges"]) if doc["per_relation"] else "")


@click.command()
@click.option("--format", "fmt", type=click.Choice(["graphml", "json", "cypher"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, help="File (default: stdout).")
@handle_errors
def export(fmt: str, output: str | None) -> None:
    """Export the whole lineage graph (GraphML for Gephi/yEd, JSON, or a Cypher script for Neo4j).

    Example:

        lineage export --format graphml -o lineage.graphml
    """
    from graph.export import export as do_export

    text = _with_store(lambda s: do_export(s, fmt))
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"Wrote {output} ({len(text):,} characters).", err=True)
    else:
        click.echo(text, nl=False)


@click.command()
@output_options
@handle_errors
def repair(as_json: bool) -> None:
    """Place every crawled model again from its stored fingerprint, and mend the index.

    For a home two processes wrote at once (two crawls or demos started together): models in no family,
    a wrong candidate family, missing alerts. Reads no weights and contacts no Hub: the crawl state and
    the fingerprint files hold everything. Stop the service and every crawl of this home first.
    Interrupted, it is finished by running it again (crawls refuse to run until then).

    Example:

        lineage repair
    """
    from tqdm import tqdm

    from lineage.app import repair_home

    bar = tqdm(desc="placing", unit="model", disable=as_json or None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = repair_home(progress=progress).as_dict()
    finally:
        bar.close()
    if as_json:
        emit_json(report)
        return
    b, a = report["before"], report["after"]
    click.echo(f"placed {report['models']} fingerprinted models and {report['copies']} exact copies again in "
               f"{report['seconds']:.1f} s; {report['moved']} moved")
    click.echo(table([[k, b.get(k, 0), a.get(k, 0)] for k in a], ["", "before", "after"]))
    if report["dropped"]:
        click.echo(f"index entries dropped (fingerprint file missing or altered): {', '.join(report['dropped'])}")


@click.command("type-edges")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True, help="Most edges to type in this pass.")
@output_options
@handle_errors
def type_edges(limit: int, as_json: bool) -> None:
    """Type detected DERIVED_FROM edges from the weights (copy, quantized, finetune, adapter_merged,
    continued_pretraining, pruned, upcycled, vocab_changed, merge): the oldest untyped first.

    Reads two layers' matrices of both ends at their crawled commits from LINEAGE_HUB_ENDPOINT (ranged
    requests; ~1.6 GB for a 7B pair in bf16), as `lineage relation` does on local files. The service runs this as its `relations` job.
    An edge that cannot be typed is stored `untyped` with the reason; a Hub failure leaves it for the next
    pass.

    Example:

        lineage type-edges --limit 50
    """
    from tqdm import tqdm

    from lineage.app import open_app

    bar = tqdm(desc="typing relations", unit="edge", disable=as_json or None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        with open_app(writer="lineage type-edges") as app:
            counts = app.type_edges(app.crawler(progress=False), limit, progress)
    finally:
        bar.close()
    if as_json:
        emit_json(counts)
    else:
        click.echo(f"typed {counts['typed']} edge(s), {counts['untyped']} untyped (reason stored), "
                   f"{counts['later']} left for the next pass; read {fmt_bytes(counts['bytes_read'])}")


COMMANDS = (derivatives, ancestors, family, undeclared, stats, export, repair, type_edges)
