"""``lineage picture``: a model's fingerprint picture, or a contact sheet of a family or a directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from lineage.cli.output import emit_json, existing_parent, fmt_bytes, handle_errors, output_options


@click.command()
@click.argument("target", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--size", type=click.IntRange(16, 2048), default=None,
              help="Picture width and height in pixels [default: 256; 128 per picture on a sheet].")
@click.option("--sheet", "sheet", default=None, metavar="FAMILY|DIR",
              help="A contact sheet instead: a family of this home's graph (its name or a member's id; root first), or a directory of .lfp files.")
@output_options
@handle_errors
def picture(target: str | None, output: Path, size: int | None, sheet: str | None, as_json: bool) -> None:
    """Draw a model's fingerprint picture: the same creature for a base and its derivatives.

    TARGET is a fingerprint file (.lfp), a checkpoint (directory or .gguf, fingerprinted now) or a model
    id this home has crawled or indexed. The picture depends on the weights only (the embedding geometry
    of hash-chosen anchor tokens, with the common modes shrunk), never on the name or the card; the
    manual's "Fingerprint pictures" page (docs/method/pictures.md) says what it survives.

    Example:

    \b
        lineage picture meta-zoo/llama-a -o llama-a.png
        lineage picture model.lfp -o model.png --size 128
        lineage picture --sheet llama-a -o family.png
    """
    from fingerprint.picture import draw, latent, picture_vector
    from lineage.app import open_app
    from lineage.pictures import contact_sheet, dir_rows, family_rows, sketch_for
    from lineage.settings import Settings
    from lineage.store import open_store

    if (target is None) == (sheet is None):
        raise click.UsageError("give either TARGET or --sheet FAMILY|DIR")
    existing_parent(output)
    settings = Settings.from_env()
    store = open_store(settings, read_only=True)  # only read: works on a home this user may only read
    with contextlib.closing(store), open_app(settings, store) as app:
        if sheet is not None:
            src = Path(sheet)
            rows = dir_rows(src) if src.is_dir() else family_rows(app.store, app.settings.home, app.index, sheet)
            data = contact_sheet(rows, cell=size or 128)
            doc = {"output": str(output), "bytes": len(data), "pictures": sum(len(r) for r in rows),
                   "labels": [c.label for r in rows for c in r]}
        else:
            assert target is not None
            sk = sketch_for(app.settings.home, app.index, target)
            size = size or 256
            z = latent(picture_vector(sk))  # once: the JSON reports the latent the picture is drawn from
            data = draw(z, size)
            doc = {"output": str(output), "bytes": len(data), "size": size, "source": sk.meta.get("source"),
                   "latent": [float(x) for x in z]}
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(output)
    if as_json:
        emit_json(doc)
    else:
        what = f"{doc['pictures']} pictures" if sheet is not None else f"{size}×{size}"
        click.echo(f"wrote {output} ({what}, {fmt_bytes(len(data))})")
