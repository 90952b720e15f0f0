"""``lineage picture``: a model's fingerprint picture, or a contact sheet of a family or a directory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from lineage.cli.output import emit_json, existing_parent, fmt_bytes, handle_errors, output_options


@click.command()
@click.argument("target", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG file to write (needed unless --json, which then prints the picture's latent and writes nothing).")
@click.option("--size", type=click.IntRange(16, 2048), default=None,
              help="Picture width and height in pixels [default: 256; 128 per picture on a sheet].")
@click.option("--sheet", "sheet", default=None, metavar="FAMILY|DIR",
              help="A contact sheet instead: a family of this home's graph (its name or a member's id; root first), or a directory of .lfp files.")
@output_options
@handle_errors
def picture(target: str | None, output: Path | None, size: int | None, sheet: str | None, as_json: bool) -> None:
    """Draw a model's fingerprint picture: a creature drawn from its embedding geometry.

    Fine-tunes, RL, LoRA, quantized and attacked copies of a model draw nearly its creature; heavier
    changes (continued pretraining, width pruning, merges) drift from it in proportion; an independent
    model draws another. The picture shows shared weights at a glance; lineage compare decides lineage.

    TARGET is a fingerprint file (.lfp), a checkpoint (directory or .gguf, fingerprinted now) or a model
    id this home has crawled or indexed. The picture depends on the weights only (the embedding geometry
    of hash-chosen anchor tokens, with the common modes shrunk), never on the name or the card; the
    manual's "Fingerprint pictures" page (docs/method/pictures.md) says what it survives.

    Example:

    \b
        lineage picture meta-zoo/llama-a -o llama-a.png
        lineage picture model.lfp -o model.png --size 128
        lineage picture --sheet llama-a -o family.png
        lineage picture meta-zoo/llama-a --json         # the latent, no file
    """
    from fingerprint.picture import draw, latent, picture_vector
    from lineage.app import open_app
    from lineage.pictures import contact_sheet, dir_rows, family_rows, sketch_for
    from lineage.settings import Settings
    from lineage.store import open_store

    if (target is None) == (sheet is None):
        raise click.UsageError("give either TARGET or --sheet FAMILY|DIR")
    if output is None and not as_json:
        raise click.UsageError("give -o FILE.png (or --json to print the picture's latent without writing a file)")
    if output is not None:
        existing_parent(output)
    settings = Settings.from_env()
    store = open_store(settings, read_only=True)  # only read: works on a home this user may only read
    doc: dict[str, Any]
    with contextlib.closing(store), open_app(settings, store) as app:
        if sheet is not None:
            src = Path(sheet)
            rows = dir_rows(src) if src.is_dir() else family_rows(app.store, app.settings.home, app.index, sheet)
            data = contact_sheet(rows, cell=size or 128)
            doc = {"output": str(output) if output else None, "bytes": len(data), "pictures": sum(len(r) for r in rows),
                   "labels": [c.label for r in rows for c in r]}
        else:
            assert target is not None
            sk = sketch_for(app.settings.home, app.index, target)
            size = size or 256
            z = latent(picture_vector(sk))  # once: the JSON reports the latent the picture is drawn from
            data = draw(z, size)
            doc = {"output": str(output) if output else None, "bytes": len(data), "size": size, "source": sk.meta.get("source"),
                   "latent": [float(x) for x in z]}
    if output is not None:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(output)
    if as_json:
        emit_json(doc)
    else:
        what = f"{doc['pictures']} pictures" if sheet is not None else f"{size}×{size}"
        click.echo(f"wrote {output} ({what}, {fmt_bytes(len(data))})")
