"""The zoo's ``manifest.json`` as typed records: what every reader of a built zoo shares.

The builder (:mod:`zoo.build`) writes one entry per model; the demo, the Hub stand-in glue, the
evaluation and the pipeline benchmark read them through :func:`read_manifest`, so the file format is
known in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ManifestError(ValueError):
    """A zoo directory without a readable, well-formed ``manifest.json``."""


@dataclass(frozen=True)
class Card:
    """The model card front matter the builder wrote (``base_model`` may be wrong on purpose)."""

    base_model: tuple[str, ...]
    license: str | None
    relation: str | None


@dataclass(frozen=True)
class ZooModel:
    """One built model: its name, Hub id, directory (relative to the zoo) and its known lineage.

    Attributes:
        parents: manifest names of the direct parents (empty for a base).
        roots: manifest names of the bases it descends from.
        card_honest: whether the card's ``base_model`` names the true direct parent(s).
        extra: every other manifest field (losses, attack checks, build seconds...).
    """

    name: str
    id: str
    path: str
    format: str
    category: str
    op: str
    parents: tuple[str, ...]
    roots: tuple[str, ...]
    tokenizer: str
    card: Card
    card_honest: bool
    bytes: int
    args: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_base(self) -> bool:
        return not self.parents


@dataclass(frozen=True)
class Manifest:
    """A built zoo: its directory, size name and models in build order (parents before children)."""

    root: Path
    size: str
    models: tuple[ZooModel, ...]

    def __iter__(self) -> Iterator[ZooModel]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def by_name(self) -> dict[str, ZooModel]:
        return {m.name: m for m in self.models}

    def dir_of(self, m: ZooModel) -> Path:
        return self.root / m.path


_KNOWN = {"name", "id", "path", "format", "category", "op", "parents", "roots", "tokenizer", "card", "card_honest",
          "bytes", "args"}


def _model(d: Any) -> ZooModel:
    if not isinstance(d, dict):
        raise ManifestError(f"manifest entry is not an object: {str(d)[:80]!r}")
    try:
        card = d.get("card") or {}
        base = card.get("base_model")
        bases = tuple(base) if isinstance(base, list) else ((base,) if base else ())
        return ZooModel(
            name=str(d["name"]), id=str(d["id"]), path=str(d["path"]), format=str(d.get("format", "hf")),
            category=str(d["category"]), op=str(d.get("op", "")), parents=tuple(map(str, d.get("parents") or ())),
            roots=tuple(map(str, d.get("roots") or ())), tokenizer=str(d.get("tokenizer", "")),
            card=Card(tuple(map(str, bases)), card.get("license"), card.get("relation")),
            card_honest=bool(d.get("card_honest", True)), bytes=int(d.get("bytes", 0)), args=dict(d.get("args") or {}),
            extra={k: v for k, v in d.items() if k not in _KNOWN})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ManifestError(f"manifest entry {d.get('name')!r} is malformed: {e}") from e


def read_manifest(zoo: str | Path) -> Manifest:
    """The manifest of the zoo built in ``zoo``.

    Raises:
        ManifestError: no readable ``manifest.json`` there, or an entry without the fields above.
    """
    root = Path(zoo)
    try:
        data = json.loads((root / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestError(f"{root} has no readable manifest.json ({e}); build a zoo with `python -m zoo build`") from e
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ManifestError(f"{root / 'manifest.json'} has no 'models' list")
    return Manifest(root, str(data.get("size", "")), tuple(_model(m) for m in models))
