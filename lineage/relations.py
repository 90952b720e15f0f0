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
