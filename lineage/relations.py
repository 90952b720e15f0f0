"""``lineage relation``: type how a child derives from its parent(s), and a merge's recipe.

The type and recipe come from the weights (:mod:`fingerprint.relation`, :mod:`fingerprint.merge`); what
the child's card declares (``base_model``, ``base_model_relation``) is read from a local ``README.md``
and shown beside them, never used to decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_CARD_BYTES = 1024 * 1024
MAX_FIELD = 200


def declared_of(path: str) -> dict[str, Any]:
    """The card's declared base and relation of a local model directory (bounded, strings only)."""
    readme = Path(path) / "README.md" if Path(path).is_dir() else Path(path).parent / "README.md"
    if not readme.is_file() or readme.stat().st_size > MAX_CARD_BYTES:
        return {}
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(readme) or {}
    except (ValueError, UnicodeDecodeError):
        return {}
    out: dict[str, Any] = {}
    for key in ("base_model", "base_model_relation"):
        v = meta.get(key)
        if isinstance(v, str):
            out[key] = v[:MAX_FIELD]
        elif isinstance(v, list):
            out[key] = [x[:MAX_FIELD] for x in v[:8] if isinstance(x, str)]
    return out


def relate(child: str, parents: list[str], base: str | None = None, sample: int = 4) -> dict[str, Any]:
    """Type ``child`` against each parent; with two parents or more, also estimate the merge recipe.

    Raises:
        FingerprintError: a model cannot be read, or the pair cannot be put in one basis.
    """
    from fingerprint.canonical import open_model
    from fingerprint.merge import estimate
    from fingerprint.relation import classify

    c = open_model(child)
    opened = [open_model(p) for p in parents]
    pairs = [{"parent": p, **classify(m, c, sample).to_dict()} for p, m in zip(parents, opened)]
    doc: dict[str, Any] = {"child": child, "parents": parents, "base": base, "declared": declared_of(child),
                           "pairs": pairs, "recipe": None}
    if len(parents) >= 2:
        recipe = estimate(c, opened, open_model(base) if base else None, sample)
        doc["recipe"] = recipe.to_dict()
        doc["relation"] = "merge"
    else:
        doc["relation"] = pairs[0]["relation"]
    return doc


def _picture(path: str) -> bytes | None:
    from fingerprint.errors import FingerprintError
    from fingerprint.picture import picture_png
    from fingerprint.sketch import load, sketch_of

    try:
        return picture_png(load(path) if path.endswith(".lfp") else sketch_of(path))
    except FingerprintError:
        return None  # a model the picture cannot be made of still gets its report


def report(out: str, a: str, b: str | None, compare: dict[str, Any] | None, relation: dict[str, Any] | None) -> dict[str, Any]:
    """Write the evidence report of a comparison and/or a relation (:mod:`lineage.report`); returns the
    document it shows, which is also what ``--json`` prints beside it."""
    from fingerprint.similarity.verdict import METHOD_VERSION
    from lineage.report import write

    doc = {"a": a, "b": b, "compare": compare, "relation": relation, "method_version": METHOD_VERSION}
    pictures = {p: png for p in ([a, b] if b else [a]) if (png := _picture(p)) is not None}
    write(out, doc, pictures)
    return doc


def relation_of_pair(a: str, b: str) -> dict[str, Any] | None:
    """B typed against A, else A against B (the older one is not known here); None if neither reads as a
    derivative of the other in one basis, or a side is a fingerprint file (it holds no matrices)."""
    from fingerprint.errors import FingerprintError

    if a.endswith(".lfp") or b.endswith(".lfp"):
        return None
    for child, parent in ((b, a), (a, b)):
        try:
            return relate(child, [parent])
        except FingerprintError:
            continue
    return None
