"""The loop that joins the packages: a crawled model → family → direct parent → graph edges → index.

For each :class:`crawler.records.Outcome` (the crawler calls :meth:`Pipeline.__call__` before it
commits the model):

1. the model node, with what the card declares (``DECLARES_BASE`` to each named base; a base not yet
   crawled gets a placeholder node keyed on its ``_id``);
2. exact copies (same LFS sha256 as a model already processed): ``SAME_WEIGHTS``, no weight read; of the
   two, the one published first keeps (or takes over) the fingerprint and the placement;
3. a fingerprinted model is matched against the index entries **published before it**: the base
   families *and* every member placed so far; the declared parent is always scored too, even when the
   screen did not shortlist it (:class:`~lineage.scoring.Scorer`). The family is that of the best
   ``derived`` member; the **direct parent** is :func:`~lineage.placement.choose_parent` (a verified
   claim inside that family, else the best member moved up its chain on ties);
4. no confident match (or only a weak one whose embeddings were not copied), no declared base, and a
   full model (not an adapter, not quantized): a **candidate new family**, flagged on the node, with the
   model as its root;
5. a merge gets a second ``DERIVED_FROM`` edge to its other parent (:func:`~lineage.placement.merge_parent`);
6. the fingerprint joins the index under the family, with what placing it again needs (its
   :class:`~lineage.placement.Subject`), so later models can derive from it;
7. a model that arrives after models published later than it (a retry, a repo made public late, a
   worker finishing out of order) may change their placement: :meth:`Pipeline.revisit` places again, in
   publication order, every later model whose shortlist it enters or whose card names it, and then,
   for each one that moved, its detected subtree (and its old family, when a candidate family's root
   joined an older family).

The rules themselves are the functions of :mod:`lineage.placement` (plain data in, a
:class:`~lineage.placement.Placement` out); this module gathers their input (:mod:`lineage.scoring`) and
writes their answer, in a bounded number of store calls per placement.

Because every placement reads only older entries and the older ones are placed first, the tree is the
same whatever order the crawl met the models in (``tests/e2e/test_crawl_order.py`` shuffles it).
Every write is a MERGE on stable keys, so replaying an outcome (after a crash between the graph
write and the crawl-state commit) leaves the graph as it was, and re-runs the revisiting it started.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from crawler.records import HubModel, Outcome
from fingerprint.index import Facts, Index, Stored
from fingerprint.similarity.verdict import METHOD_VERSION
from fingerprint.sketch import Sketch
from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord, SameWeights, SharedInit
from graph.store import LineageStore
from lineage.placement import CATALOG_MS, SHORTLIST, UNDATED_MS, Placement, Subject, now_ms, place
from lineage.scoring import Scorer, StoreTree, subject_facts, subject_of

__all__ = ["Pipeline", "Placement", "Subject", "subject_of_model"]
#: How many later models, nearest by screen row first, :meth:`Pipeline.revisit` asks whether a late
#: arrival entered their shortlist (each is one screen, no comparison, unless it did).
REVISIT_SCAN = 4 * SHORTLIST


def _ms(d: Any) -> int | None:
    return int(d.timestamp() * 1000) if d is not None else None


def subject_of_model(m: HubModel) -> Subject:
    """What placement needs of a crawled model (an undated one sorts after every dated one)."""
    ms = int(m.created_at.timestamp() * 1000) if m.created_at is not None else UNDATED_MS
    return Subject(m.id, m.key, ms, tuple(m.base_models), bool(m.adapter), bool(m.gguf), bool(m.quantized))


class Pipeline:
    """Places crawled models in the lineage graph (see module docstring)."""

    def __init__(self, store: LineageStore, index: Index, shortlist: int = SHORTLIST) -> None:
        self.store = store
        self.index = index
        self.scorer = Scorer(store, index, shortlist)
        #: where the pipeline's time goes; "revisit": placing later models again after a late arrival
        self.seconds: dict[str, float] = {"match": 0.0, "write": 0.0, "revisit": 0.0}
        #: models placed again by :meth:`revisit`, since this pipeline started
        self.revisited = 0

    def place(self, s: Subject, sk: Sketch, sha: str) -> Placement:
        """Where ``s`` (fingerprint ``sk``, whose file hashes to ``sha``) goes among the models published
        before it: :func:`lineage.placement.place` on what the index and the store say."""
        matches, score, declared = self.scorer.older(s, sk, sha)
        return place(s, declared, matches, sk.width, score, StoreTree(self.store), self.scorer.between)

    def __call__(self, out: Outcome) -> None:
        """Write what ``out`` says into the graph and the index (the crawler's ``place`` callback)."""
        m = out.model
        if m is None:
            return
        t = time.perf_counter()
        self._write_model(m, out.sketch)
        self._declared(m, out.base_keys)
        self.seconds["write"] += time.perf_counter() - t
        if out.status == "duplicate" and out.duplicate_of and out.duplicate_of[0] != m.key:
            t = time.perf_counter()
            self._copy(m, out.duplicate_of[0])
            self.seconds["write"] += time.perf_counter() - t
            return
        if out.status != "fingerprinted" or out.sketch is None or (out.fingerprint is None and out.fingerprint_sha is None):
            return
        known = self.index.entries.get(m.id)
        if known is not None and known.family and not self._derived(m.key):
            # an indexed model seen again (a catalog base reached by the crawl, a root replayed after a
            # crash): it stays where it is, and what it started to revisit is finished
            self.revisit([m.id])
            return
        t = time.perf_counter()
        s = subject_of_model(m)
        p = self.place(s, out.sketch, out.fingerprint_sha or _sha(out.fingerprint))
        self.seconds["match"] += time.perf_counter() - t
        t = time.perf_counter()
        self._apply(s, p, m.license)
        # an unplaced model is kept too, out of every match, so that an older model arriving later can
        # place it (a fine-tune crawled before its base)
        self.index.add(fingerprint_of(out), name=m.id, family=p.family or "", facts=subject_facts(s, bool(p.family)))
        self.scorer.indexed(m.id, m.key)
        self.seconds["write"] += time.perf_counter() - t
        t = time.perf_counter()
        self.revisit([m.id])
        self.seconds["revisit"] += time.perf_counter() - t

    # -- revisiting later models --------------------------------------------------------------------
    def revisit(self, arrived: list[str], again: tuple[str, ...] = ()) -> int:
        """Place again the later models the indexed ``arrived`` could change (module docstring, step 7),
        and the entries ``again``, in publication order; returns how many were placed again."""
        heap: list[tuple[tuple[int, str], str]] = []
        for name in arrived:
            for y in self._affected_by(name):
                heapq.heappush(heap, (self.index.entries[y].when(), y))
        for y in again:
            if y in self.index.entries:
                heapq.heappush(heap, (self.index.entries[y].when(), y))
        done: set[str] = set()
        emptied: set[str] = set()
        n = 0
        while heap:
            when, y = heapq.heappop(heap)
            if y in done or y not in self.index.entries:
                continue
            done.add(y)
            moved, old_family, key = self._replace(y)
            n += 1
            if not moved:
                continue
            later = set(self._indexed(self._subtree(key)))
            if old_family is not None and (y not in self.index.entries or self.index.entries[y].family != old_family):
                emptied.add(old_family)
                later |= set(self._indexed(self.store.family_members(old_family)))
            for z in later:
                if z not in done and self.index.entries[z].when() > when:
                    heapq.heappush(heap, (self.index.entries[z].when(), z))
        if emptied:
            self.store.drop_families(sorted(emptied), now_ms())
        self.revisited += n
        return n

    def _affected_by(self, name: str) -> list[str]:
        """Later entries whose placement ``name`` may change: those whose shortlist it enters, and those
        whose card names it."""
        e = self.index.entries.get(name)
        if e is None or e.facts.hidden or not self.index.newer_than(e.when()):
            return []
        sk = self.index.sketch(name)
        out = []
        for y, _, _ in self.index.screen(sk, REVISIT_SCAN, newer_than=e.when()):
            ey = self.index.entries[y]
            if name in {x for x, _, _ in self.index.screen(self.index.sketch(y), self.scorer.shortlist,
                                                          older_than=ey.when())}:
                out.append(y)
        for other in self.index.db.citing(name):  # cards naming it (the id: its key may be unknown then)
            if other.when() > e.when():
                out.append(other.name)
        return out

    def _indexed(self, keys: list[str]) -> list[str]:
        """The index entry names of the graph ``keys`` that have one."""
        return [n for k in keys if (n := self.scorer.name_of(k)) is not None]

    def _subtree(self, key: Any) -> list[str]:
        if not isinstance(key, str):
            return []
        return [r.src for r in self.store.reach(key, upward=False, mode="detected", depth=32, min_score=-1.0)]

    def _replace(self, name: str) -> tuple[bool, str | None, str | None]:
        """Place the indexed ``name`` again among the models older than it: (whether its family or parents
        changed, its family before, its graph key)."""
        e = self.index.entries[name]
        s = subject_of(e)
        if s is None:  # a catalog base: a root by decree
            return False, None, None
        before = (e.family, sorted(x.dst for x in self.store.parent_edges(s.key)))
        p = self.place(s, self.index.sketch(name), e.sha256)
        self._apply(s, p, None)
        if (p.family or "", not p.family) != (e.family, bool(e.facts.hidden)):
            self.index.update(name, family=p.family or "", facts=subject_facts(s, bool(p.family)))
        after = (p.family or "", sorted(x.dst for x in self.store.parent_edges(s.key)))
        return before != after, e.family, s.key

    def _apply(self, s: Subject, p: Placement, license: str | None = None) -> None:
        """Write placement ``p`` of ``s``: its family membership, its parent edges (exactly these), its
        candidate-family flag, its shared random starts. A root that joined an older family loses the
        flag; its family record goes once no member is left (:meth:`revisit`). ``license`` names a
        candidate family's licence (default: the model's, as stored)."""
        t = now_ms()
        if p.family is None:
            # unplaced (it may have been placed before: an older model arrived, or a repair): no family,
            # no parent, no flag, for it and its copies; then its shared starts, if any
            self.store.clear_placement([s.key, *self._twins(s.key)], t)
            self._set_shared_init(s, p, t)
            return
        rec = self.store.get_models([s.key])
        was_candidate = bool(rec and rec[0].candidate_family)
        self._set_shared_init(s, p, t)
        if p.candidate_family:
            if rec and not was_candidate:
                self.store.upsert_models([replace(rec[0], candidate_family=True)], t)
            lic = license if license is not None or not rec else rec[0].license
            self.store.upsert_families([FamilyRecord(s.id, s.key, f"{s.id} (candidate)", lic)], t)
            self.store.set_families([InFamily(s.key, s.id, "root")], t)
            self.store.drop_derived([s.key], t)
            return
        if was_candidate and rec:
            self.store.upsert_models([replace(rec[0], candidate_family=False)], t)
        if p.parent is None:  # not reached: a family without a parent is a candidate family (above)
            self.store.drop_derived([s.key], t)
            return
        ends = {r.key: r for r in self.store.get_models([p.parent, *(k for k, _, _ in p.also)])}
        parent = ends.get(p.parent)
        if parent is not None:
            ev = p.evidence
            evidence = json.dumps({"considered": p.considered, "family": p.family, **({
                "alignment": ev.alignment, "aligned": ev.aligned, "alignment_quality": ev.alignment_quality,
                "shared_tokens": ev.shared_tokens, "layers": [list(x) for x in ev.layer_scores]}
                if ev is not None else {})}, sort_keys=True)
            edges = [DerivedEdge(s.key, parent.key, max(-1.0, min(1.0, float(p.score or 0))),
                                 p.z, "derived", "lineage", METHOD_VERSION, t, evidence)]
            for key, sc, z in p.also:  # a merge's other parents (replace=True keeps exactly these)
                other = ends.get(key)
                if other is not None and other.key != parent.key:
                    edges.append(DerivedEdge(s.key, other.key, max(-1.0, min(1.0, float(sc))), z, "derived",
                                             "lineage", METHOD_VERSION, t,
                                             json.dumps({"merge_of": [parent.id, other.id]}, sort_keys=True)))
            self.store.upsert_derived(edges, t, replace=True)
        self.store.set_families([InFamily(s.key, p.family, "matched")], t)
        twins = self._twins(s.key)
        if twins:
            self.store.set_families([InFamily(k, p.family, "matched") for k in twins], t)

    def _twins(self, key: str) -> list[str]:
        """``key``'s exact copies without an index entry of their own: they follow its family."""
        return [k for k in self.store.copies_of(key) if self.scorer.name_of(k) is None]

    def _set_shared_init(self, s: Subject, p: Placement, t: int) -> None:
        """Make this placement's shared random starts ``s``'s ``SHARES_INIT`` set (a re-placement replaces
        them). Most placements have none and had none: one read then, not a write per placement."""
        if not p.shared:
            if any(e.src == s.key for e in self.store.shared_init(s.key)):
                self.store.set_shared_init(s.key, [], t)
            return
        found = {r.key for r in self.store.get_models([k for k, _, _ in p.shared])}
        self.store.set_shared_init(s.key, [
            SharedInit(s.key, key, max(-1.0, min(1.0, float(sc))), z, METHOD_VERSION, t)
            for key, sc, z in p.shared if key in found and key != s.key], t)

    def _derived(self, key: str) -> bool:
        """Whether the store already has a detected parent for ``key`` (placed by an earlier crawl)."""
        return any(e.src == key for e in self.store.reach(key, upward=True, mode="detected", depth=1, min_score=-1.0))

    def register_base(self, m: HubModel, fingerprint: str | Path | Stored, family: str,
                      license: str | None = None) -> None:
        """Index a base family's root and write its node, family and membership (``lineage index add``).
        It precedes every crawled model (:data:`~lineage.placement.CATALOG_MS`)."""
        from fingerprint.sketch import load

        self._write_model(m, fingerprint.sketch if isinstance(fingerprint, Stored) else load(fingerprint))
        t = now_ms()
        self.store.upsert_families([FamilyRecord(family, m.key, family, license or m.license)], t)
        self.store.set_families([InFamily(m.key, family, "root")], t)
        self.index.add(fingerprint, name=m.id, family=family,
                       facts=Facts(m.key, CATALOG_MS, catalog=True))
        self.scorer.indexed(m.id, m.key)

    # -- writing ------------------------------------------------------------------------------------
    def _write_model(self, m: HubModel, sk: Sketch | None) -> None:
        meta = sk.meta if sk is not None else {}
        rec = ModelRecord(
            key=m.key, id=m.id, sha=m.sha, author=m.author, created_at_ms=_ms(m.created_at),
            last_modified_ms=_ms(m.last_modified), license=m.license, license_name=m.license_name,
            license_link=m.license_link, gated=bool(m.gated), architecture=m.architecture or meta.get("architecture"),
            hidden_size=meta.get("hidden_size"), num_layers=meta.get("num_layers"), vocab_size=meta.get("vocab_size"),
            num_params=m.params, fingerprint_version=str(meta["version"]) if "version" in meta else None,
            pipeline_tag=m.pipeline_tag, library=m.library, claims=m.claims)
        old = self.store.get_models([m.key])
        if old:  # what we learned before (from the weights, or a flag) is kept when this pass has no value
            prev = old[0].props()
            new = {k: (prev[k] if v is None else v) for k, v in rec.props().items()}
            new["candidate_family"] = bool(prev["candidate_family"])  # the flag is the placement's (_apply)
            rec = ModelRecord(**new)
        self.store.upsert_models([rec], now_ms())

    def _declared(self, m: HubModel, keys: dict[str, str]) -> None:
        rows = []
        for base in m.base_models:
            key = keys.get(base)
            if key is None or key == m.key:
                continue
            if not self.store.get_models([key]):  # not crawled yet: a placeholder the crawl fills in later
                self.store.upsert_models([ModelRecord(key=key, id=base)], now_ms())
            rows.append(DeclaredEdge(m.key, key, m.relation or "unknown", "model_card"))
        if rows:
            self.store.upsert_declared(rows, now_ms())

    def _copy(self, m: HubModel, owner_key: str) -> None:
        """``m`` has exactly the weights of the processed ``owner_key``. The twin published first is the
        original: it keeps (or takes over) the index entry and the placement; the other is its copy."""
        t = now_ms()
        sha = ",".join(w.sha256 or "" for w in m.weights)
        owner = self.store.get_models([owner_key])
        owner_id = owner[0].id if owner else owner_key
        entry = self.index.entries.get(owner_id)
        s = subject_of_model(m)
        # a replay after the entry already moved to m (a crash while its subtree was being moved)
        resumed = entry is None and s.id in self.index.entries and bool(
            self._subtree(owner_key) or self.store.parent_edges(owner_key) or self.store.family_of(m.key) is None)
        if not resumed:
            mine = subject_of(entry) if entry is not None else None
            if entry is None or mine is None or not s.when() < entry.when() or s.id in self.index.entries:
                self.store.upsert_same_weights([SameWeights(m.key, owner_key, sha)], t)
                fam = self.store.family_of(owner_key)
                if fam is not None:
                    self.store.set_families([InFamily(m.key, fam.name, "matched")], t)
                if s.id in self.index.entries:  # it took over before: finish what it started to revisit
                    self.revisit([s.id])
                return
            # m was published first: the entry moves to it, the owner becomes its copy, and what was
            # placed under the owner is placed again (now under m, the same fingerprint)
            self.index.update(entry.name, rename=s.id, facts=subject_facts(s))
            self.scorer.indexed(s.id, s.key, was=owner_key)
        subtree = self._subtree(owner_key)
        self.store.upsert_same_weights([SameWeights(owner_key, m.key, sha)], t)
        self.store.drop_derived([owner_key], t)
        was = self.store.get_models([owner_key])
        if was and was[0].candidate_family:
            self.store.upsert_models([replace(was[0], candidate_family=False)], t)
        self._replace(s.id)
        fam = self.store.family_of(m.key)
        if fam is not None:
            self.store.set_families([InFamily(owner_key, fam.name, "matched")], t)
        self.revisit([s.id], again=tuple(self._indexed(subtree)))
        if owner_id != (fam.name if fam else None):
            self.store.drop_families([owner_id], t)


def fingerprint_of(out: Outcome) -> Path | Stored:
    """What the index adds for ``out``: the fingerprint the crawler put in the shared store (no copy,
    no re-read), or the file an outcome from before the shared store names."""
    if out.fingerprint_sha is not None and out.sketch is not None:
        return Stored(out.sketch, out.fingerprint_sha, out.fingerprint)
    assert out.fingerprint is not None
    return out.fingerprint


def _sha(path: Any) -> str:
    """SHA-256 of a fingerprint file (the index keys its copy on the same digest)."""
    from pathlib import Path

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
