"""``lineage fingerprint``, ``lineage index add|list``, ``lineage match``: compact fingerprints and the index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from lineage.output import emit_json, fmt_bytes, handle_errors, output_options, table
from lineage.settings import Settings


def index_dir() -> Path:
    return Settings.from_env().home / "index"


def sketch_of(path: str, rank: int | None = None, anchors: int | None = None) -> Any:
    """A fingerprint file (``.lfp``) is loaded; a model directory or .gguf is fingerprinted now."""
    from fingerprint import sketch as sk

    if path.endswith(".lfp"):
        return sk.load(path)
    from fingerprint.canonical import open_model

    return sk.sketch_model(open_model(path), rank=rank or "auto", n_anchors=anchors or sk.DEFAULT_ANCHORS,
                           source=str(Path(path).name))


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Fingerprint file to write (.lfp).")
@click.option("--rank", type=click.IntRange(1), default=None, help="Gram factor rank per layer (default: as many as a 16 MiB factor budget allows, at least 64; exact while layers × width² ≤ 2²³, 64 at 7B).")
@click.option("--anchors", type=click.IntRange(16), default=None, help="Anchor tokens kept (default 4000).")
@output_options
@handle_errors
def fingerprint(path: str, output: str, rank: int | None, anchors: int | None, as_json: bool) -> None:
    """Fingerprint a model (reads only embeddings, Q, K and norms) into a compact file.

    Example:

        lineage fingerprint ./Llama-2-7b-hf -o llama-2-7b.lfp
    """
    from fingerprint.sketch import save

    t = time.perf_counter()
    sk = sketch_of(path, rank, anchors)
    out = save(sk, output)
    doc = {"file": str(out), "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t, 3), **sk.meta}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{out}: {fmt_bytes(doc['bytes'])} ({sk.meta['architecture']}, d={sk.width}, {sk.num_layers} layers, "
                   f"{sk.meta['anchors']} anchors, rank {sk.meta['rank']}); read {fmt_bytes(sk.meta['bytes_read'])} of "
                   f"{fmt_bytes(sk.meta['total_bytes'])} in {doc['seconds']:.2f} s")


@click.group()
def index() -> None:
    """The local index of base-family fingerprints ($LINEAGE_HOME/index)."""


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
    import tempfile
    from dataclasses import asdict

    from fingerprint.index import Index
    from fingerprint.sketch import save

    if not Path(path).exists():
        from lineage.hub_commands import add_from_hub

        e = add_from_hub(path, family, endpoint)
    elif path.endswith(".lfp"):
        e = Index(index_dir()).add(path, name=name, family=family)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            f = save(sketch_of(path), Path(tmp) / "fp.lfp")
            e = Index(index_dir()).add(f, name=name or Path(path).name, family=family)
    if as_json:
        emit_json(asdict(e))
    else:
        click.echo(f"indexed {e.name} (family {e.family}, {e.architecture}, d={e.width}, {e.layers} layers) in {index_dir()}")


@index.command("list")
@output_options
@handle_errors
def index_list(as_json: bool) -> None:
    """List indexed bases.

    Example:

        lineage index list --json
    """
    from dataclasses import asdict

    from fingerprint.index import Index

    idx = Index(index_dir())
    if as_json:
        emit_json({"index": str(index_dir()), "entries": [asdict(e) for e in idx.entries.values()]})
        return
    if not idx.entries:
        click.echo(f"The index at {index_dir()} is empty: add bases with lineage index add PATH --family NAME.")
        return
    click.echo(table([[e.name, e.family, e.architecture, e.width, e.layers, e.vocab_digest[:12]] for e in idx.entries.values()],
                     ["name", "family", "architecture", "width", "layers", "vocab"]))


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Families to report.")
@click.option("--shortlist", type=click.IntRange(1), default=8, show_default=True, help="Bases scored in full after screening.")
@output_options
@handle_errors
def match(path: str, top: int, shortlist: int, as_json: bool) -> None:
    """Which indexed base families does a model (or fingerprint file) derive from?

    Example:

        lineage match ./some-finetune --top 3
    """
    from dataclasses import asdict

    from fingerprint.index import Index

    t = time.perf_counter()
    sk = sketch_of(path)
    t_fp = time.perf_counter() - t
    matches, stats = Index(index_dir()).match(sk, top=top, shortlist=shortlist)
    stats["fingerprint_seconds"] = t_fp
    if as_json:
        emit_json({"model": path, "matches": [asdict(m) for m in matches], "stats": stats})
        return
    if not matches:
        click.echo(f"No indexed base passed screening ({stats['indexed']} indexed): nothing to match against.")
        return
    click.echo(table([[m.family, m.name, f"{m.score:.4f}", f"{m.z:.1f}", m.verdict, f"{m.screen:.3f}", f"{m.token_overlap:.2f}"]
                      for m in matches], ["family", "base", "score", "z", "verdict", "screen", "tokens"]))
    click.echo(f"\n{stats['indexed']} bases screened in {stats['screen_seconds'] * 1000:.0f} ms, {stats['shortlisted']} scored in "
               f"{stats['score_seconds']:.2f} s (fingerprint {t_fp:.2f} s)")


COMMANDS = (fingerprint, index, match)
