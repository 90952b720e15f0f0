"""The ``lineage`` command line."""

from __future__ import annotations

import logging

import click

from lineage import __version__
from lineage.output import emit_json, fmt_bytes, handle_errors, output_options, table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lineage")
@click.option("-v", "--verbose", count=True, help="-v for info logs, -vv for debug (and tracebacks).")
def main(verbose: int) -> None:
    """Model lineage: is a model derived from a known base, and does its licence say so?

    Example:

    \b
        lineage demo                      # the whole loop, offline
        lineage inspect ./my-model --json
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("path", type=click.Path(exists=True))
@output_options
@handle_errors
def inspect(path: str, as_json: bool) -> None:
    """Show a checkpoint's architecture and the tensors a fingerprint reads (headers only).

    PATH is a model directory (safetensors + config.json, single or sharded) or a .gguf file.

    Example:

        lineage inspect ./TinyLlama-1.1B --json
    """
    from fingerprint.inspect import inspect_model

    r = inspect_model(path)
    if as_json:
        emit_json(r)
        return
    s = r["spec"]
    click.echo(f"{r['path']}")
    click.echo(f"  architecture   {s['architecture']} ({s['declared_architecture']}, {s['source_format']})"
               + (f", wrapper {s['wrapper']}" if s["wrapper"] else ""))
    click.echo(f"  layers         {s['num_layers']}")
    click.echo(f"  hidden size    {s['hidden_size']}")
    click.echo(f"  heads / kv     {s['num_heads']} / {s['num_kv_heads']} (head_dim {s['head_dim']}, "
               f"rope {s['rope_style']} {s['rotary_dim']})")
    click.echo(f"  vocab rows     {s['vocab_rows']}  tied embeddings: {s['tied']}")
    click.echo("  dtypes         " + ", ".join(f"{k} ({v:,} params)" for k, v in r["dtypes"].items()))
    rows = [[t["name"], t["dtype"], "x".join(map(str, t["shape"])), t["file"], f"{t['start']}-{t['end']}"]
            for t in r["needed"]]
    click.echo("")
    click.echo(table(rows, ["tensor needed", "dtype", "shape", "file", "byte range"]))
    click.echo("")
    click.echo(f"bytes needed {fmt_bytes(r['bytes_needed'])} of {fmt_bytes(r['total_bytes'])} "
               f"({100 * r['share_needed']:.1f}%); bytes read to inspect: {fmt_bytes(r['bytes_read'])}")


@main.command()
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--method", type=click.Choice(["lineage", "awm", "huref", "reef"]), default="lineage", show_default=True,
              help="lineage (default, robust to function-preserving attacks), awm (faithful baseline), huref, reef.")
@output_options
@handle_errors
def compare(a: str, b: str, method: str, as_json: bool) -> None:
    """Say whether model B derives from model A (or vice versa), with score, z and evidence.

    A and B are model directories (safetensors + config.json + tokenizer), .gguf files, or fingerprint
    files (.lfp, from lineage fingerprint; the lineage method only). A model compared with a fingerprint
    file is fingerprinted first.

    Example:

        lineage compare ./Llama-2-7b ./vicuna-7b --json
    """
    import time

    from fingerprint.canonical import open_model
    from fingerprint.similarity.compare import compare as run

    t = time.perf_counter()
    if a.endswith(".lfp") or b.endswith(".lfp"):
        from fingerprint.errors import ComparisonError
        from fingerprint.similarity.compare import compare_fingerprints
        from lineage.index_commands import sketch_of

        if method != "lineage":
            raise ComparisonError(f"fingerprint files hold what the lineage method needs, not {method}")
        r = compare_fingerprints(sketch_of(a), sketch_of(b))
    else:
        if not as_json:
            click.echo(f"opening {a} and {b} ...", err=True)
        ma, mb = open_model(a), open_model(b)
        if not as_json:
            click.echo(f"comparing ({method}) ...", err=True)
        r = run(ma, mb, method)
    if as_json:
        emit_json(r.to_dict())
        return
    click.echo(f"verdict    {r.verdict.upper()}")
    click.echo(f"score      {r.score:.4f}   (method {r.method})")
    click.echo(f"z          {r.z:.1f}   against {r.background}; null mean {r.null_mean:.4f}, std {r.null_std:.4f}")
    click.echo("thresholds " + ", ".join(f"{k}={v}" for k, v in r.thresholds.items()))
    if r.method in ("lineage", "awm"):
        click.echo(f"alignment  {r.alignment}: matched |cos| {r.alignment_quality:.3f} (chance {r.alignment_chance:.3f})"
                   + (f", Procrustes fit {r.procrustes_fit:.2f}" if r.procrustes_fit is not None else "")
                   + f"; {r.shared_tokens} shared tokens")
    for n in r.notes:
        click.echo(f"note       {n}")
    if r.layers:
        click.echo("")
        click.echo(table([[x.layer_a, x.layer_b, f"{x.q:.4f}", f"{x.k:.4f}", f"{x.score:.4f}"] for x in r.layers],
                         ["layer A", "layer B", "CKA Q", "CKA K", "score"]))
    click.echo("")
    click.echo(f"bytes read: A {fmt_bytes(r.bytes_read['a'])}, B {fmt_bytes(r.bytes_read['b'])}; "
               f"time {time.perf_counter() - t:.2f} s")


def _register() -> None:
    from lineage import demo, graph_commands, hub_commands, index_commands

    for cmd in (demo.demo, hub_commands.crawl, hub_commands.hubsim, *index_commands.COMMANDS,
                *graph_commands.COMMANDS):
        main.add_command(cmd)
    index_commands.index.add_command(hub_commands.bootstrap)


_register()


if __name__ == "__main__":
    main()
