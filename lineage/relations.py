"""``lineage relation``: type how a child derives from its parent(s), and a merge's recipe.

The type and recipe come from the weights (:mod:`fingerprint.relation`, :mod:`fingerprint.merge`); what
the child's card declares (``base_model``, ``base_model_relation``) is read from a local ``README.md``
and shown beside them, never used to decide.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawler.crawl import Crawler
    from graph.store import LineageStore

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


def _detail(doc: dict[str, Any]) -> str:
    """What an edge keeps of a typing: its rule, flags, statistics summary (bounded like edge evidence)."""
    from graph.records import MAX_EVIDENCE

    keep = {k: doc[k] for k in ("rule", "flags", "detail", "drift", "alignment", "recipe", "error") if k in doc}
    text = json.dumps(keep, sort_keys=True, default=str)
    return text if len(text) <= MAX_EVIDENCE else json.dumps({k: keep[k] for k in ("rule", "drift") if k in keep})


SAMPLE_LAYERS = 2
"""Layers a typing pass reads per edge (evenly spaced): each costs both models' seven matrices of that
layer, ~0.4 GB per side for a 7B in bf16, so 2 layers are ~1.6 GB per typed 7B pair."""


def type_edges(store: LineageStore, crawler: Crawler, limit: int = 50,
               progress: Callable[[int, int], None] | None = None, sample: int = SAMPLE_LAYERS) -> dict[str, int]:
    """Type up to ``limit`` ``derived`` edges not typed yet, oldest first, from both ends' weights at their
    crawled commits (ranged reads of a few layers each). A model with two detected parents or more is a
    merge: each of its edges is typed ``merge``, with the recipe (against the parents' family root as the
    base when they share one, which tells task arithmetic, TIES and DARE apart). An edge whose models cannot be read or
    put in one basis is stored ``untyped`` with the reason; a transient Hub failure leaves it for the next
    pass. Each edge is written as soon as it is typed (an interrupted pass loses at most one). Returns the
    counts and the bytes read (``bytes_read``).
    """
    from crawler.errors import GatedRepoError, HubRequestError, RepoNotFoundError
    from fingerprint.errors import FingerprintError
    from fingerprint.merge import estimate
    from fingerprint.relation import classify
    from graph.records import TypedRelation

    pairs = store.untyped_derived(limit)
    srcs = sorted({s for s, _ in pairs})
    parents = {s: [e.dst for e in store.parent_edges(s) if e.verdict == "derived"] for s in srcs}
    models = {m.key: m for m in store.get_models(sorted({k for s in srcs for k in [s, *parents[s]]}))}
    counts = {"typed": 0, "untyped": 0, "later": 0, "bytes_read": 0}
    done = 0
    # a parent shared by many children is opened (one metadata call) and its matrices read once; a few at
    # a time, as each holds its reads (fingerprint.relation.MAX_MEMO_BYTES)
    cache: dict[tuple[str, str], Any] = {}

    def open_at(repo_id: str, sha: str) -> Any:
        if (repo_id, sha) not in cache:
            if len(cache) >= 4:
                counts["bytes_read"] += cache.pop(next(iter(cache))).bytes_read
            cache[(repo_id, sha)] = crawler.open(repo_id, sha)
        return cache[(repo_id, sha)]

    for src in srcs:
        child = models.get(src)
        ends = [m for m in (models.get(p) for p in parents[src]) if m is not None and m.sha]
        todo = [d for s, d in pairs if s == src]
        try:
            if child is None or not child.sha or len(ends) != len(parents[src]):
                raise FingerprintError("a model of this edge has no crawled commit to read")
            c = open_at(child.id, child.sha)
            opened = {e.key: open_at(e.id, e.sha or "") for e in ends}
            if len(ends) > 1:
                # parents of one family share its root: the base whose task vectors tell TIES and DARE apart
                roots = {f.root_key for f in store.families_of([e.key for e in ends]).values() if f.root_key}
                base_key = next(iter(roots)) if len(roots) == 1 and not roots & {e.key for e in ends} else None
                base = store.get_models([base_key]) if base_key else []
                base_m = open_at(base[0].id, base[0].sha) if base and base[0].sha else None
                recipe = estimate(c, [opened[e.key] for e in ends], base_m, sample=sample).to_dict()
                if base_m is not None:
                    recipe["base"] = base[0].id
                recipe["parents"] = [e.id for e in ends]
                rows = [TypedRelation(src, d, "merge", _detail({"rule": f"{len(ends)} detected parents", "recipe": recipe}))
                        for d in todo]
            else:
                typed = classify(opened[todo[0]], c, sample).to_dict()
                rows = [TypedRelation(src, todo[0], typed["relation"], _detail(typed))]
        except (GatedRepoError, RepoNotFoundError, FingerprintError) as e:
            rows = [TypedRelation(src, d, "untyped", _detail({"error": str(e)[:300]})) for d in todo]
        except HubRequestError:
            counts["later"] += len(todo)  # transient: the next pass tries again
            continue
        store.set_relations(rows, int(time.time() * 1000))
        for r in rows:
            counts["untyped" if r.relation == "untyped" else "typed"] += 1
        done += len(todo)
        if progress is not None:
            progress(done, len(pairs))
    counts["bytes_read"] += sum(m.bytes_read for m in cache.values())
    return counts
