"""``lineage index add|list|bootstrap``, ``lineage match``: the base-family index."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from lineage.cli.output import emit_json, handle_errors, output_options, table
from lineage.settings import Settings


@click.group()
def index() -> None:
    """The local index of base-family fingerprints ($LINEAGE_HOME/index).

    Example:

    \b
        lineage index bootstrap --list     # the catalog of well-known bases
        lineage index add ./Llama-2-7b-hf --family llama-2
        lineage index list
    """


@index.command("add")
@click.argument("path")
@click.option("--family", default=None, help="Family name (default: the entry name).")
@click.option("--name", default=None, help="Entry name (default: the model's source name).")
@click.option("--endpoint", default=None, help="Hub to read REPO_ID from (default $LINEAGE_HUB_ENDPOINT).")
@output_options
@handle_errors
def index_add(path: str, family: str | None, name: str | None, endpoint: str | None, as_json: bool) -> None:
    """Add a base: a fingerprint file, a model directory / .gguf, or a Hub REPO_ID.

    A REPO_ID is fingerprinted straight from the Hub by ranged reads (HF_TOKEN for gated bases: the
    token's account must have accepted the terms on the model page) and also written to the lineage
    store as the root of its family.

    Example:

        lineage index add ./Llama-2-7b-hf --family llama-2
        lineage index add meta-llama/Llama-2-7b-hf --family llama-2
    """
    from lineage.app import add_path, open_app

    if Path(path).exists():
        e, where = add_path(path, name, family), Settings.from_env().home / "index"
    else:
        with open_app(writer="lineage index add") as app:
            e, where = app.add_base(path, family, endpoint), app.index.root
    if as_json:
        emit_json(asdict(e))
    else:
        click.echo(f"indexed {e.name} (family {e.family}, {e.architecture}, d={e.width}, {e.layers} layers) in {where}")


@index.command("list")
@output_options
@handle_errors
def index_list(as_json: bool) -> None:
    """List indexed bases.

    Example:

        lineage index list --json
    """

    st = Settings.from_env()
    root = st.existing_home() / "index"
    idx = st.index()
    if as_json:
        emit_json({"index": str(root), "entries": [asdict(e) for e in idx.entries.values()]})
        return
    if not idx.entries:
        click.echo(f"The index at {root} is empty: add bases with lineage index add PATH --family NAME.")
        return
    click.echo(table([[e.name, e.family or "(unplaced)", e.architecture, e.width, e.layers, e.vocab_digest[:12]] for e in idx.entries.values()],
                     ["name", "family", "architecture", "width", "layers", "vocab"]))


@index.command()
@click.option("--family", "families", multiple=True, help="Only this catalog family (repeatable).")
@click.option("--endpoint", default=None, help="Hub URL (default $LINEAGE_HUB_ENDPOINT).")
@click.option("--list", "list_only", is_flag=True, help="Print the catalog and exit.")
@output_options
@handle_errors
def bootstrap(families: tuple[str, ...], endpoint: str | None, list_only: bool, as_json: bool) -> None:
    """Fingerprint the catalog of well-known base families from the Hub into the index.

    Gated families (Llama, Gemma) need HF_TOKEN for an account that accepted their terms; they are
    reported and skipped otherwise. The catalog is lineage/data/catalog.json.

    Example:

        HF_TOKEN=hf_... lineage index bootstrap --family llama-2 --family mistral
    """
    from lineage.app import open_app
    from lineage.catalog import select, unreadable
    from lineage.errors import LineageError

    cat = select(families)
    if list_only:
        later = [] if families else unreadable()
        if as_json:
            emit_json({"families": cat, "unreadable": later})
            return
        rows = [[f["family"], f["architecture"], f["license"], "yes" if f["gated"] else "", ", ".join(f["repos"])] for f in cat]
        click.echo(table(rows, ["family", "architecture", "license", "gated", "repos"]))
        if later:
            click.echo("not readable yet (no architecture data file): "
                       + ", ".join(f"{f['family']} ({f['architecture']})" for f in later))
        return
    def report(repo: str, family: str, error: str | None) -> None:
        if not as_json:
            click.echo(f"indexed {repo} ({family})" if error is None else f"skipped {repo}: {error}", err=True)

    with open_app(writer="lineage index bootstrap") as app:
        done, failed = app.bootstrap(cat, endpoint, report)
    if as_json:
        emit_json({"indexed": done, "failed": failed})
    else:
        click.echo(f"{len(done)} bases indexed, {len(failed)} skipped")
    if failed and not done:
        raise LineageError(f"no base indexed: all {len(failed)} failed")


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Families to report, each by its best-matching indexed base.")
@click.option("--shortlist", type=click.IntRange(1), default=8, show_default=True, help="Bases scored in full after screening.")
@output_options
@handle_errors
def match(path: str, top: int, shortlist: int, as_json: bool) -> None:
    """Which indexed base families does a model (or fingerprint file) derive from?

    Example:

        lineage match ./some-finetune --top 3
    """
    from lineage.app import match_path

    matches, stats = match_path(path, top, shortlist)
    if as_json:
        emit_json({"model": path, "matches": [asdict(m) for m in matches], "stats": stats})
        return
    if not matches:
        click.echo(f"No indexed base passed screening ({stats['indexed']} indexed): nothing to match against.")
        return
    click.echo(table([[m.family, m.name, f"{m.score:.4f}", f"{m.z:.1f}", m.verdict, f"{m.screen:.3f}", f"{m.token_overlap:.2f}"]
                      for m in matches], ["family", "base", "score", "z", "verdict", "screen", "tokens"]))
    click.echo(f"\n{stats['indexed']} bases screened in {stats['screen_seconds'] * 1000:.0f} ms, {stats['shortlisted']} scored in "
               f"{stats['score_seconds']:.2f} s (fingerprint {stats['fingerprint_seconds']:.2f} s)")


COMMANDS = (index, match)
