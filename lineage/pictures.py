"""Fingerprint pictures for people: one model's picture, a contact sheet of many, and where a model's
fingerprint is found (the index, else the crawl state). The picture itself is :mod:`fingerprint.picture`.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crawler.state import fingerprint_of, read_stored
from fingerprint.errors import FingerprintFileError, FingerprintIndexError
from fingerprint.index import Index, Stored
from fingerprint.picture import picture_png
from fingerprint.sketch import Sketch, load, sketch_of
from fingerprint.store import content_key
from graph.store import LineageStore
from lineage.errors import LineageError

CELL = 128
LABEL_H = 16
MAX_CELLS = 400
MAX_LABEL = 22
#: characters kept from the start of a label cut in the middle
LABEL_HEAD = 8


class PictureLookupError(LineageError):
    """No fingerprint is known for a model, or a sheet source holds no fingerprints."""


@dataclass(frozen=True)
class Cell:
    label: str
    sketch: Sketch


def find_fingerprint(home: Path, index: Index, model_id: str) -> Path | Stored | None:
    """The fingerprint of ``model_id``: its index entry's (bases and every placed model), else the newest
    one the crawl state recorded (models not placed in a family), in the shared store (a
    :class:`~fingerprint.index.Stored` when that store is not a local directory) or, recorded by an
    earlier version, on disk."""
    e = index.entries.get(model_id)
    local = index.local_path(e.name) if e is not None else None
    if local is not None and local.exists():
        return local
    path, sha = fingerprint_of(home / "crawl" / "crawl.sqlite", model_id)
    if sha is not None:
        here = index.store.local_path(content_key(sha))
        if here is not None:
            return here if here.exists() else None
        try:
            return Stored(read_stored(index.store, sha), sha)
        except (FingerprintIndexError, FingerprintFileError):
            return None
    return path if path is not None and path.exists() else None


def sketch_for(home: Path, index: Index, target: str) -> Sketch:
    """A ``.lfp`` file, a checkpoint (directory or ``.gguf``, fingerprinted now) or a model id in this home."""
    p = Path(target)
    if p.exists():
        return sketch_of(p)
    found = find_fingerprint(home, index, target)
    if found is None:
        raise PictureLookupError(f"{target!r} is neither a file nor a model with a fingerprint in this home "
                                 "(crawl it, or pass a .lfp file or a checkpoint)")
    if index.entries.get(target) is not None:
        try:
            return index.sketch(target)  # checks the recorded SHA-256
        except FingerprintIndexError:
            pass
    return _sketch(found)


def _sketch(fp: Path | Stored) -> Sketch:
    return fp.sketch if isinstance(fp, Stored) else load(fp)


def family_rows(store: LineageStore, home: Path, index: Index, family: str) -> list[list[Cell]]:
    """Rows of ten: the family's root first, then its members with a fingerprint (by id). ``family`` is a
    family's name or any member's model id."""
    fam = store.family_named(family)
    if fam is None:
        found = store.get_models([family])
        fam = store.family_of(found[0].key) if found else None
    if fam is None:
        raise PictureLookupError(f"no family or model named {family!r} (lineage stats lists the families)")
    keys = store.family_members(fam.name)
    models = {m.key: m for m in store.get_models(keys)}
    ordered = sorted(models.values(), key=lambda m: (m.key != fam.root_key, m.id.lower()))
    cells = []
    for m in ordered[:MAX_CELLS]:
        fp = find_fingerprint(home, index, m.id)
        if fp is not None:
            cells.append(Cell(m.id, _sketch(fp)))
    if not cells:
        raise PictureLookupError(f"no member of {family!r} has a fingerprint in this home")
    return _wrap(cells)


def dir_rows(path: Path) -> list[list[Cell]]:
    """Every ``.lfp`` file in a directory, by name, ten to a row."""
    files = sorted(path.glob("*.lfp"))[:MAX_CELLS]
    if not files:
        raise PictureLookupError(f"{path}: no .lfp fingerprint files here")
    return _wrap([Cell(f.stem, load(f)) for f in files])


def _wrap(cells: list[Cell], per_row: int = 10) -> list[list[Cell]]:
    return [cells[i : i + per_row] for i in range(0, len(cells), per_row)]


def label(text: str) -> str:
    """A name fit to print under a picture: printable ASCII only, at most :data:`MAX_LABEL` characters,
    keeping what tells names apart: a long repo id loses its organisation, and a name still too long keeps
    its start and its end (``mallory/llama-a-sft-permute_heads`` → ``llama-a-~permute_heads``: attacked
    copies of one model differ only at the end)."""
    clean = "".join(c if unicodedata.category(c)[0] not in "CZ" or c == " " else "?" for c in text)
    clean = clean.encode("ascii", "replace").decode()  # the bitmap font has ASCII glyphs only
    if len(clean) <= MAX_LABEL:
        return clean
    name = clean.rsplit("/", 1)[-1]
    if len(name) <= MAX_LABEL:
        return name
    return name[:LABEL_HEAD] + "~" + name[-(MAX_LABEL - LABEL_HEAD - 1):]


def labels(texts: Sequence[str]) -> list[str]:
    """:func:`label` of each text, numbered (``~#2``...) where two different texts would still print the same."""
    out = [label(t) for t in texts]
    firsts: dict[str, str] = {}
    seen: dict[str, int] = {}
    for i, (t, lab) in enumerate(zip(texts, out)):
        if firsts.setdefault(lab, t) != t:
            seen[lab] = seen.get(lab, 1) + 1
            tag = f"#{seen[lab]}"
            out[i] = lab[: MAX_LABEL - len(tag)] + tag
    return out


def contact_sheet(rows: Sequence[Sequence[Cell]], cell: int = CELL) -> bytes:
    """A PNG of ``rows`` of pictures, each with its label below (Pillow's built-in bitmap font)."""
    from PIL import Image, ImageDraw

    width = max(len(r) for r in rows) * cell
    height = len(rows) * (cell + LABEL_H)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    names = iter(labels([item.label for row in rows for item in row]))
    for r, row in enumerate(rows):
        for c, item in enumerate(row):
            pic = Image.open(io.BytesIO(picture_png(item.sketch, cell))).convert("RGB")
            x, y = c * cell, r * (cell + LABEL_H)
            sheet.paste(pic, (x, y))
            draw.text((x + 3, y + cell + 2), next(names), fill=(20, 20, 20))
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()


class HomePictures:
    """Pictures of this home's models for the web UI (:class:`web.app.Pictures`): the fingerprint is found
    as :func:`find_fingerprint` does; the last PNGs are kept (a picture costs ~0.3 s)."""

    def __init__(self, home: Path, index: Index, keep: int = 256) -> None:
        self.home, self.index, self.keep = home, index, keep
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()  # the web server's thread pool calls in concurrently

    def available(self, model_id: str) -> bool:
        return find_fingerprint(self.home, self.index, model_id) is not None

    def png(self, model_id: str) -> bytes | None:
        fp = find_fingerprint(self.home, self.index, model_id)
        if fp is None:
            return None
        # by content, not id: a new commit of the model has a new fingerprint and a new picture
        key = fp.sha256 if isinstance(fp, Stored) else str(fp)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        data = picture_png(_sketch(fp))
        with self._lock:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = data
        return data
