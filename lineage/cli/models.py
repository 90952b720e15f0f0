"""``lineage inspect``, ``lineage compare``, ``lineage fingerprint``: commands on checkpoints and fingerprint files."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fingerprint.similarity import DESCRIPTIONS, METHODS
from lineage.cli.output import emit_json, existing_parent, fmt_bytes, handle_errors, output_options, table


@click.command()
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
    click.echo(f"  kind           {', '.join(r['kind'])}")
    stored = r["attention_layers"]
    click.echo(f"  layers         {s['num_layers']}" + ("" if stored == list(range(s["num_layers"])) else
                                                       f" with attention (stored layers {', '.join(map(str, stored))})"))
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


@click.command()
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--method", type=click.Choice(list(METHODS)), default="lineage", show_default=True,
              help="; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()) + ".")
@click.option("--background", "backgrounds", multiple=True, type=click.Path(exists=True),
              help="A checkpoint unrelated to the pair (repeat, at least 3; e.g. other families' bases): a pair the "
                   "weights leave inconclusive or shared_init gets a second opinion from the models' representations, "
                   "calibrated on those the weights call independent. Runs the models (safetensors only, no remote code).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML evidence report here (with the relation when B derives from A, and both fingerprint pictures).")
@output_options
@handle_errors
def compare(a: str, b: str, method: str, backgrounds: tuple[str, ...], report: str | None, as_json: bool) -> None:
    """Say whether model B derives from model A (or vice versa), with score, z and evidence.

    A and B are model directories (safetensors + config.json + tokenizer), .gguf files, or fingerprint
    files (.lfp, from lineage fingerprint; the lineage method only). A model compared with a fingerprint
    file is fingerprinted first. The math runs on LINEAGE_DEVICE.

    Example:

        lineage compare ./Llama-2-7b ./vicuna-7b --json

        lineage compare ./base ./suspect --background ./mistral-7b --background ./qwen2-7b --background ./gemma-7b

        lineage compare ./Llama-2-7b ./vicuna-7b --report evidence.html
    """
    from lineage.app import compare_paths

    t = time.perf_counter()
    if not as_json and not (a.endswith(".lfp") or b.endswith(".lfp")):  # checkpoints take a while to read
        click.echo(f"opening and comparing {a} and {b} ({method}) ...", err=True)
        if method == "reef":
            click.echo("  REEF runs both models on 200 probe texts (a forward pass each) and a 24-draw null",
                       err=True)
        if backgrounds:
            click.echo(f"  if the weights leave the pair uncertain: a second opinion from the representations of "
                       f"both models and {len(backgrounds)} background models (200 forward passes each)", err=True)
    r = compare_paths(a, b, method, backgrounds=backgrounds)
    doc = r.to_dict()
    if report:
        from lineage.relations import relation_of_pair
        from lineage.relations import report as write_report

        existing_parent(Path(report))
        doc["relation"] = relation_of_pair(a, b) if r.verdict == "derived" else None
        write_report(report, a, b, doc, doc["relation"])
        doc["report"] = report
    if as_json:
        emit_json(doc)
        return
    click.echo(f"verdict    {r.verdict.upper()}" + (" (SHARED INIT: a common random start, not a trained parent)"
                                                     if r.shared_init else ""))
    if r.second_opinion is not None:
        click.echo(f"outcome    {r.outcome.upper()}   (decided by the {r.decided_by})")
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
    if report:
        rel = doc["relation"]
        click.echo(f"report     {report}" + (f" (relation: {rel['relation']})" if rel else ""))


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="File to write (.lfp, or .lsc for --tier screen).")
@click.option("--tier", type=click.Choice(["verify", "screen"]), default="verify", show_default=True,
              help="verify: the per-layer evidence the verdicts rest on; screen: a small alignment-free file that ranks candidate bases (reads ~2% of a 7B).")
@click.option("--rank", type=click.IntRange(1), default=None, help="Gram factor rank per layer (default: as many as a 16 MiB factor budget allows, at least 64; exact while layers × width² ≤ 2²³, 64 at 7B).")
@click.option("--anchors", type=click.IntRange(16), default=None, help="Anchor tokens kept (default 4000; 256 for --tier screen).")
@output_options
@handle_errors
def fingerprint(path: str, output: str, tier: str, rank: int | None, anchors: int | None, as_json: bool) -> None:
    """Fingerprint a model (reads only embeddings, Q, K and norms) into a compact file.

    Example:

        lineage fingerprint ./Llama-2-7b-hf -o llama-2-7b.lfp
        lineage fingerprint ./Llama-2-7b-hf --tier screen -o llama-2-7b.lsc
    """
    existing_parent(Path(output))
    t = time.perf_counter()
    if tier == "screen":
        from fingerprint.canonical import open_model
        from fingerprint.screen import SCREEN_ANCHORS, screen_model
        from fingerprint.screen import save as save_screen

        sc = screen_model(open_model(path), n_anchors=anchors or SCREEN_ANCHORS, source=Path(path).name)
        out = save_screen(sc, output)
        meta = sc.meta
        summary = f"{len(sc.keys)} anchors, layers {', '.join(map(str, meta['layers']))}"
    else:
        from fingerprint.sketch import save, sketch_of

        sk = sketch_of(path, rank, anchors)
        out = save(sk, output)
        meta = sk.meta
        summary = f"{meta['anchors']} anchors, rank {meta['rank']}"
    doc = {"file": str(out), "tier": tier, "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t, 3), **meta}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{out}: {fmt_bytes(doc['bytes'])} ({meta['architecture']}, d={meta['hidden_size']}, {meta['num_layers']} layers, "
                   f"{summary}); read {fmt_bytes(meta['bytes_read'])} of "
                   f"{fmt_bytes(meta['total_bytes'])} in {doc['seconds']:.2f} s")


@click.command()
@click.argument("child", type=click.Path(exists=True))
@click.argument("parents", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--base", type=click.Path(exists=True), default=None,
              help="The parents' common base, for a merge: tells task arithmetic, TIES and DARE apart.")
@click.option("--layers", type=click.IntRange(1), default=4, show_default=True, help="Layers sampled (evenly).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML evidence report here.")
@output_options
@handle_errors
def relation(child: str, parents: tuple[str, ...], base: str | None, layers: int, report: str | None, as_json: bool) -> None:
    """Say how CHILD derives from PARENT: copy, quantized, finetune, adapter_merged, continued_pretraining,
    pruned, upcycled or vocab_changed, with the attacks found; with two parents or more, the merge's
    method and each parent's weight.

    Decided from the weights alone (the card's declared relation is shown beside). Reads the sampled
    layers' matrices of every model. Run it on a pair `lineage compare` calls derived.

    Example:

        lineage relation ./my-model-Q4_K_M.gguf ./Llama-3-8B-Instruct

        lineage relation ./merged ./model-a ./model-b --base ./Llama-3-8B --json
    """
    from lineage.relations import relate

    doc = relate(child, list(parents), base, layers)
    if report:
        from lineage.relations import report as write_report

        existing_parent(Path(report))
        write_report(report, parents[0], child, None, doc)
        doc["report"] = report
    if as_json:
        emit_json(doc)
        return
    click.echo(f"relation   {doc['relation']}")
    if doc["declared"]:
        click.echo("declared   " + ", ".join(f"{k}: {v}" for k, v in doc["declared"].items()) + "  (card; not used)")
    for p in doc["pairs"]:
        detail = ", ".join(f"{k} {v}" for k, v in p["detail"].items())
        click.echo(f"  of {p['parent']}: {p['relation']}" + (f" ({detail})" if detail else ""))
        click.echo(f"    rule   {p['rule']}")
        click.echo(f"    drift  {p['drift']:.4f}   basis {p['alignment']}" + (f"   flags: {'; '.join(p['flags'])}" if p["flags"] else ""))
    r = doc["recipe"]
    if r:
        click.echo(f"merge      {r['method']}: weights {', '.join(f'{w:.3f}' for w in r['weights'])}"
                   f"   (residual {r['residual']:.4f})")
        for k, v in r["details"].items():
            click.echo(f"  {k:<20s}{v}")
        for n in r["notes"]:
            click.echo(f"note       {n}")
    if report:
        click.echo(f"report     {report}")


COMMANDS = (inspect, compare, fingerprint, relation)
