"""Place every crawled model again from the stored fingerprints: ``lineage repair``.

Why it is needed: before the writer lock and the SQLite index, two processes writing one home at once
(two crawls started seconds apart) each placed models against their own copy of the index, which
lacked what the other added, and the index saved last dropped the other's entries. The result looks plausible and is wrong (models in no family, an attacked
copy made a candidate family root), and later crawls never look at those models again. What the crawl
state records is right (one SQLite transaction per model) and so are the fingerprint files; everything
placement writes is derived from them and the catalog bases, so it can all be written again.

What a repair does, in order:

1. marks the home (``repair.json``): until the repair finishes, crawls refuse to run, and running
   ``lineage repair`` again starts over;
2. rebuilds the index with only the entries that are not crawled models (catalog and local bases), their
   screen rows computed again from their files into new row files: this also mends damaged row files;
3. clears what placing wrote for every model the crawl processed or the graph placed (family
   membership, detected parents, shared random starts, candidate flags, exact-copy pairs) and drops the
   families left empty. Nodes, declared bases and the catalog roots stay;
4. places again, through the pipeline's own rules, every fingerprinted model in publication order,
   then every exact copy. Placement does not depend on arrival order (``tests/e2e/test_crawl_order.py``),
   so the result is the graph one crawl alone would have written (``tests/lineage/test_repair.py``);
5. removes the mark. The caller then evaluates the alerts: findings the corruption made are resolved,
   the ones it hid are opened.

Every step is idempotent, so a repair killed at any point is finished by running it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crawler.records import Outcome
from fingerprint.index import Index
from graph.store import LineageStore
from lineage.errors import LineageError
from lineage.pipeline import Pipeline, subject_of_model
from lineage.placement import now_ms
from lineage.scoring import subject_of

#: The mark a repair leaves in ``$LINEAGE_HOME`` while it runs.
REPAIR_MARK = "repair.json"


class RepairPendingError(LineageError):
    """A repair of this home was interrupted: the graph and the index are half rebuilt."""

    def __init__(self, home: Path) -> None:
        super().__init__(f"a repair of {home} was interrupted; run lineage repair to finish it before crawling")


@dataclass
class RepairReport:
    """What a repair changed.

    Attributes:
        models: fingerprinted models placed again.
        copies: exact copies placed again.
        moved: models whose family or detected parents differ from before the repair.
        dropped: index entries dropped because their fingerprint file was missing or altered.
        before, after: the graph's placement counts (``DERIVED_FROM``, ``IN_FAMILY``, families,
            candidate families).
        seconds: how long it took.
    """

    models: int = 0
    copies: int = 0
    moved: int = 0
    dropped: list[str] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"models": self.models, "copies": self.copies, "moved": self.moved, "dropped": self.dropped,
                "before": self.before, "after": self.after, "seconds": round(self.seconds, 2)}


def check_not_pending(home: Path) -> None:
    """Raises :class:`RepairPendingError` when a repair of ``home`` did not finish."""
    if (home / REPAIR_MARK).exists():
        raise RepairPendingError(home)


def rebuild_index(root: Path, store: str | None) -> list[str]:
    """Step 2: keep the index entries that are not crawled models (step 4 adds those back); returns the
    names of the others dropped for a missing or altered file."""
    _, dropped = Index.rebuild(root, store, keep=lambda e: subject_of(e) is None)
    return dropped


def placement_of(store: LineageStore) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """``{model key: (family, detected parents)}`` for every model with either: what a repair compares."""
    out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for f, _ in store.families():
        for k in store.family_members(f.name):
            out[k] = (f.name, ())
    parents: dict[str, list[str]] = {}
    for e in store.detected_edges(None):
        parents.setdefault(e.src, []).append(e.dst)
    for k, ps in parents.items():
        out[k] = (out.get(k, (None, ()))[0], tuple(sorted(ps)))
    return out


def _counts(store: LineageStore) -> dict[str, int]:
    c = store.counts()
    fams = store.families()
    roots = {f.root_key for f, _ in fams if f.root_key}
    candidates = sum(1 for m in store.get_models(sorted(roots)) if m.candidate_family)
    return {"DERIVED_FROM": c.get("DERIVED_FROM", 0), "IN_FAMILY": c.get("IN_FAMILY", 0),
            "families": len(fams), "candidate_families": candidates}


def repair(store: LineageStore, index: Index, outcomes: list[Outcome],
           progress: Callable[[int, int], None] | None = None) -> RepairReport:
    """Steps 3-5 (module docstring) on a home whose index :func:`rebuild_index` already rebuilt and which
    carries the mark; ``outcomes``: what the crawl state recorded (:func:`crawler.state.placed_outcomes`).
    ``progress(done, total)`` hears each placement."""
    t0 = time.perf_counter()
    report = RepairReport(before=_counts(store))
    was = placement_of(store)
    catalog = set(index.db.keys())
    keys = {o.model.key for o in outcomes if o.model is not None} | set(was)
    keys |= {e.src for e in store.shared_init(None)}
    t = now_ms()
    store.clear_placement(sorted(keys - catalog), t, copies=True)
    store.drop_families([f.name for f, _ in store.families()], t)  # only the ones left empty go
    # fingerprinted models first, each in publication order (processing order breaks ties: a model
    # fingerprinted at two commits ends with its newest), then the copies, which follow their originals
    order = sorted(range(len(outcomes)), key=lambda i: (outcomes[i].status != "fingerprinted",
                                                        _when(outcomes[i]), i))
    pipeline = Pipeline(store, index)
    for n, i in enumerate(order, 1):
        out = outcomes[i]
        pipeline(out)
        if out.status == "fingerprinted":
            report.models += 1
        else:
            report.copies += 1
        if progress is not None:
            progress(n, len(order))
    now = placement_of(store)
    report.moved = sum(1 for k in set(was) | set(now) if was.get(k) != now.get(k))
    report.after = _counts(store)
    report.seconds = time.perf_counter() - t0
    return report


def _when(out: Outcome) -> tuple[int, str]:
    assert out.model is not None
    return subject_of_model(out.model).when()


def mark(home: Path) -> Path:
    """Step 1: the mark, written before anything changes."""
    p = home / REPAIR_MARK
    p.write_text(json.dumps({"started_ms": now_ms()}), "utf-8")
    return p
