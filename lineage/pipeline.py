"""The loop that joins the packages: a crawled model → family → direct parent → graph edges → index.

For each :class:`crawler.records.Outcome` (the crawler calls :meth:`Pipeline.__call__` before it
commits the model):

1. the model node, with what the card declares (``DECLARES_BASE`` to each named base; a base not yet
   crawled gets a placeholder node keyed on its ``_id``);
2. exact copies (same LFS sha256 as a model already processed): ``SAME_WEIGHTS``, the copy's family,
   no weight read;
3. a fingerprinted model is matched against the index, which holds the base families *and* every
   member placed so far; the declared parent is always scored too, even when the prefilter did not
   shortlist it. The family is that of the best ``derived`` member; the **direct parent** is chosen
   by :meth:`Pipeline._choose` (a verified claim inside that family, else the best member moved up
   its chain on ties);
4. no confident match (or only a weak one whose embeddings were not copied), no declared base, and a
   full model (not an adapter, not quantized): a **candidate new family**, flagged on the node, with the model as its root;
5. a merge gets a second ``DERIVED_FROM`` edge to its other parent (:meth:`Pipeline._merge_parent`);
6. the fingerprint joins the index under the family, so later models can derive from it.

Every write is a MERGE on stable keys, so replaying an outcome (after a crash between the graph
write and the crawl-state commit) leaves the graph as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from crawler.records import HubModel, Outcome
from fingerprint.index import Evidence, Index, Match
from fingerprint.similarity.factored import TargetWork
from fingerprint.similarity.verdict import METHOD_VERSION, score_thresholds
from fingerprint.sketch import Sketch
from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord, SameWeights
from graph.store import LineageStore

SHORTLIST = 10
#: Score differences below this are not resolvable: fingerprint files reproduce exact scores within 0.003.
SCORE_RESOLUTION = 0.003
#: A pretrain-looking model whose best "derived" score is under this multiple of the width's derived
#: threshold becomes a candidate family, not a member: derivatives score far above the threshold.
WEAK_MATCH = 2.0
#: ... unless its embedding columns map one-to-one onto the match's at this mean cosine (signed LAP):
#: models trained apart on the same text converge only up to a rotation (tiny zoo, d=64, 511 anchors:
#: signed LAP 0.17 against chance 0.11; two bases from one random start 0.69), so a coordinate-level
#: match this close means the embedding matrix was copied, whatever the layers' score (90% magnitude pruning keeps the embeddings and
#: leaves Q/K at 0.55 of the base at d=64).
COPIED_EMBEDDINGS = 0.9
#: A second parent Y of a model M placed under P must make M "between" P and Y (see
#: :meth:`Pipeline._merge_parent`): r = (d(P,Y) − d(M,Y)) / d(P,Y) at least this. A child of P has r ≤ 0
#: (tree-additive distances: d(M,Y) = d(M,P) + d(P,Y)), an even merge r ≈ 1/2; a quarter is halfway.
MERGE_BETWEEN = 0.25
#: Pair scores kept for the merge test; past this many the memo starts again (a long-running service
#: would otherwise keep ~10 per placed model for ever; a miss costs one comparison).
PAIR_MEMO = 200_000


def now_ms() -> int:
    return int(time.time() * 1000)


def _ms(d: Any) -> int | None:
    return int(d.timestamp() * 1000) if d is not None else None


#: How a placement was decided: a match verdict, or why there was none to act on.
PlacementVerdict = Literal["derived", "inconclusive", "independent", "indexed", "weak match", "no candidates"]


@dataclass
class Placement:
    """Where a model landed: family, direct parent (index entry name) and the evidence."""

    family: str | None
    parent: str | None
    score: float | None
    z: float | None
    verdict: PlacementVerdict
    candidate_family: bool = False
    considered: int = 0
    evidence: Evidence | None = None
    #: further parents of a merge (index entry name, score, z), beside ``parent``
    also: tuple[tuple[str, float, float], ...] = ()



class Pipeline:
    """Places crawled models in the lineage graph (see module docstring)."""

    def __init__(self, store: LineageStore, index: Index, shortlist: int = SHORTLIST) -> None:
        self.store = store
        self.index = index
        self.shortlist = shortlist
        self.seconds: dict[str, float] = {"match": 0.0, "write": 0.0}
        #: scores of pairs of indexed models met while placing (the merge test asks for P–Y again)
        self._pairs: dict[tuple[str, str], float] = {}

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
        if out.status != "fingerprinted" or out.sketch is None or out.fingerprint is None:
            return
        t = time.perf_counter()
        p = self.place(m, out.sketch)
        self.seconds["match"] += time.perf_counter() - t
        t = time.perf_counter()
        self._write_placement(m, p, out)
        self.seconds["write"] += time.perf_counter() - t

    # -- deciding -------------------------------------------------------------------------------------
    def place(self, m: HubModel, sk: Sketch) -> Placement:
        """Family and direct parent of ``m`` from the index (see module docstring, step 3-4)."""
        known = self.index.entries.get(m.id)
        if known is not None and not self._derived(m.key):
            # an indexed model seen again (a catalog base reached by the crawl): it stays where it is
            return Placement(known.family, None, None, None, "indexed")
        work = TargetWork(sk)  # the suspect's share of every comparison below, computed once
        matches, _ = self.index.match(sk, top=self.shortlist, shortlist=self.shortlist, work=work)
        matches = [x for x in matches if x.name != m.id]
        scored = {x.name: x for x in matches}

        def score(name: str) -> Match | None:
            if name not in scored and name in self.index.entries:
                scored[name] = self.index.score(name, work)
            return scored.get(name)

        seen = set(scored)
        for base in m.base_models:  # the declared parent is always scored
            if base in self.index.entries and base not in seen and base != m.id:
                matches.append(self.index.score(base, work))
                scored[base] = matches[-1]
        p = self.decide(m, matches, sk.width, score)
        if len(self._pairs) > PAIR_MEMO:
            self._pairs.clear()
        for x in scored.values():
            self._pairs[(min(m.id, x.name), max(m.id, x.name))] = x.score
        if p.verdict == "derived" and p.parent is not None:
            second = self._merge_parent(m, scored.get(p.parent), matches, score)
            if second is not None:
                p.also = ((second.name, second.score, second.z),)
        return p

    def _merge_parent(self, m: HubModel, parent: Match | None, matches: list[Match],
                      score: Callable[[str], Match | None]) -> Match | None:
        """A second parent, when ``m`` is a merge of its placed parent P and another indexed model Y.

        With distances d = 1 − score roughly additive along the tree, a child of P is no closer to any Y
        off its own chain than P is: d(M,Y) ≈ d(M,P) + d(P,Y) ≥ d(P,Y). A merge of P and Y lies between
        them, closer to Y than P is: r = (d(P,Y) − d(M,Y)) / d(P,Y) ≈ Y's share of the mix. Y is a second
        parent when r ≥ :data:`MERGE_BETWEEN` and the gap is over the files' score resolution.

        1 − score is a squared chord (a cosine's), so √d obeys the triangle inequality and the gap is at
        most d(M,P) + 2·√(d(M,P)·d(M,Y)): a Y for which that is under the resolution (a copy of P, an
        attacked twin) is not scored against P at all; the P–Y score is taken from the pairs met while
        placing when it is there. Of the Ys that pass, the best-scoring is moved up its own chain as the
        parent is (:meth:`_choose`), so a merge with a base is not filed under the base's attacked copy.
        """
        if parent is None:
            return None
        d_mp = 1.0 - parent.score
        cands = sorted((x for x in matches if x.verdict == "derived" and x.name not in (m.id, parent.name)
                        and d_mp + 2.0 * (d_mp * max(0.0, 1.0 - x.score)) ** 0.5 > SCORE_RESOLUTION),
                       key=lambda x: -x.score)[:3]  # a merge's other parent is among its closest matches
        if not cands:
            return None
        chain = {parent.name, *self._chain(parent.name)}
        pw: TargetWork | None = None
        for y in cands:
            if y.name in chain or parent.name in self._chain(y.name):
                continue  # on P's own line: a fine-tune of P, or P one of its fine-tunes
            s_py = self._pairs.get((min(parent.name, y.name), max(parent.name, y.name)))
            if s_py is None:
                pw = pw or TargetWork(self.index.sketch(parent.name))
                s_py = self.index.score(y.name, pw).score
                self._pairs[(min(parent.name, y.name), max(parent.name, y.name))] = s_py
            d_py = 1.0 - s_py
            gap = d_py - (1.0 - y.score)
            if gap > SCORE_RESOLUTION and gap >= MERGE_BETWEEN * d_py:
                return self._choose(y, [b for b in m.base_models if b not in chain], score)
        return None

    def _chain(self, name: str) -> list[str]:
        """``name``'s detected ancestors, nearest first (names of index entries)."""
        out: list[str] = []
        for _ in range(32):
            up = self._up(out[-1] if out else name)
            if up is None or up[0] in out:
                break
            out.append(up[0])
        return out

    def decide(self, m: HubModel, matches: list[Match], width: int, score: Callable[[str], Match | None]) -> Placement:
        """The placement rules (module docstring, steps 3-4) on the matches of ``m`` (residual width
        ``width``); ``score(name)`` scores one more indexed model when the parent walk needs it (None: not
        indexed)."""
        derived = [x for x in matches if x.verdict == "derived"]
        full_pretrain = not (m.adapter or m.gguf or m.quantized) and not m.base_models
        best_derived = max(derived, key=lambda x: x.score) if derived else None
        copied = (best_derived is not None and best_derived.evidence.alignment == "signed-lap"
                  and best_derived.evidence.alignment_quality >= COPIED_EMBEDDINGS)
        if (best_derived is not None and full_pretrain and not copied
                and best_derived.score < WEAK_MATCH * score_thresholds(width)[0]):
            # A model that claims no base and looks like a pretrain, matched only just above the
            # threshold: models trained on the same text with the same tokenizer sit there too. Flag
            # it as a candidate family for review instead of silently filing it under that base.
            weak = best_derived
            return Placement(m.id, None, weak.score, weak.z, "weak match", candidate_family=True,
                             considered=len(matches))
        if derived:
            best = self._choose(max(derived, key=lambda x: x.score), [b for b in m.base_models if b != m.id], score)
            return Placement(best.family, best.name, best.score, best.z, "derived", considered=len(matches),
                             evidence=best.evidence)
        top = max(matches, key=lambda x: x.score) if matches else None
        verdict: PlacementVerdict = top.verdict if top else "no candidates"
        # Inconclusive without a credible alignment is what a new base trained on similar text gets
        # against existing ones; an aligned but weak match may be a heavily changed derivative: left open.
        unaligned = top is not None and top.evidence.aligned is False
        if full_pretrain and (top is None or top.verdict == "independent" or unaligned):
            return Placement(m.id, None, None, None, verdict, candidate_family=True, considered=len(matches))
        return Placement(None, None, top.score if top else None, top.z if top else None, verdict,
                         considered=len(matches))

    def _up(self, name: str) -> tuple[str, float] | None:
        """The detected parent of an indexed model and the edge's score, from the store."""
        entry = self.store.get_models([name])
        if not entry:
            return None
        up = [e for e in self.store.reach(entry[0].key, upward=True, mode="detected", depth=1, min_score=-1.0)
              if e.src == entry[0].key and e.score is not None]
        if not up:
            return None
        return self.store.labels([up[0].dst]).get(up[0].dst, (up[0].dst, None))[0], float(up[0].score or 0.0)

    def _choose(self, best: Match, declared: list[str], score: Callable[[str], Match | None]) -> Match:
        """The direct parent: a declared base the weights confirm, else the best-scoring member, moved up
        its detected chain while the evidence for going lower is weak.

        A claim the weights confirm (verdict ``derived`` against the declared base) wins: fine-tunes of
        one base resemble each other more than they resemble the base (shared training dynamics), so
        similarity alone confuses siblings with parents, and a verified claim is better evidence than a
        small score difference. Without a claim: with distances d = 1 − score roughly additive along the
        tree, a child C of ``best`` (whose parent is P) has d(C,P) − d(C,best) ≈ d(best,P); we stay at
        ``best`` only if the observed gap is more than half that and more than the fingerprint's own
        score resolution, so on a tie (attacks and quantized copies score ≈ 1 against each other) the
        older model wins.
        """
        # the family comes from the strongest evidence; a claim only picks the parent inside it (a card
        # naming another family's base is a misstatement even if that base also scores "derived")
        claims = [x for x in (score(d) for d in declared)
                  if x is not None and x.verdict == "derived" and x.family == best.family]
        if claims:
            return max(claims, key=lambda x: x.score)
        for _ in range(32):
            up = self._up(best.name)
            p = score(up[0]) if up else None
            if up is None or p is None or p.verdict != "derived":
                break
            if best.score - p.score > max(0.5 * (1.0 - up[1]), SCORE_RESOLUTION):
                return best
            best = p
        return best

    def _derived(self, key: str) -> bool:
        """Whether the store already has a detected parent for ``key`` (placed by an earlier crawl)."""
        return any(e.src == key for e in self.store.reach(key, upward=True, mode="detected", depth=1, min_score=-1.0))

    # -- writing --------------------------------------------------------------------------------------
    def _write_model(self, m: HubModel, sk: Sketch | None, candidate: bool = False) -> None:
        meta = sk.meta if sk is not None else {}
        rec = ModelRecord(
            key=m.key, id=m.id, sha=m.sha, author=m.author, created_at_ms=_ms(m.created_at),
            last_modified_ms=_ms(m.last_modified), license=m.license, license_name=m.license_name,
            license_link=m.license_link, gated=bool(m.gated), architecture=m.architecture or meta.get("architecture"),
            hidden_size=meta.get("hidden_size"), num_layers=meta.get("num_layers"), vocab_size=meta.get("vocab_size"),
            num_params=m.params, fingerprint_version=str(meta["version"]) if "version" in meta else None,
            pipeline_tag=m.pipeline_tag, library=m.library, candidate_family=candidate)
        old = self.store.get_models([m.key])
        if old:  # what we learned before (from the weights, or a flag) is kept when this pass has no value
            prev = old[0].props()
            new = {k: (prev[k] if v is None else v) for k, v in rec.props().items()}
            new["candidate_family"] = bool(rec.candidate_family or prev["candidate_family"])
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
        self.store.upsert_same_weights([SameWeights(m.key, owner_key, ",".join(w.sha256 or "" for w in m.weights))],
                                       now_ms())
        fam = self.store.family_of(owner_key)
        if fam is not None:
            self.store.set_families([InFamily(m.key, fam.name, "matched")], now_ms())

    def _write_placement(self, m: HubModel, p: Placement, out: Outcome) -> None:
        t = now_ms()
        if p.candidate_family:
            self._write_model(m, out.sketch, candidate=True)
            self.store.upsert_families([FamilyRecord(m.id, m.key, f"{m.id} (candidate)", m.license)], t)
            self.store.set_families([InFamily(m.key, m.id, "root")], t)
        elif p.family is not None and p.parent is not None:
            parent = self.store.get_models([p.parent])
            if parent:
                ev = p.evidence
                evidence = json.dumps({"considered": p.considered, "family": p.family, **({
                    "alignment": ev.alignment, "aligned": ev.aligned, "alignment_quality": ev.alignment_quality,
                    "shared_tokens": ev.shared_tokens, "layers": [list(x) for x in ev.layer_scores]}
                    if ev is not None else {})}, sort_keys=True)
                edges = [DerivedEdge(m.key, parent[0].key, max(-1.0, min(1.0, float(p.score or 0))),
                                     p.z, "derived", "lineage", METHOD_VERSION, t, evidence)]
                for name, s, z in p.also:  # a merge's other parents (replace=True keeps exactly these)
                    other = self.store.get_models([name])
                    if other and other[0].key != parent[0].key:
                        edges.append(DerivedEdge(m.key, other[0].key, max(-1.0, min(1.0, float(s))), z, "derived",
                                                 "lineage", METHOD_VERSION, t,
                                                 json.dumps({"merge_of": [p.parent, name]}, sort_keys=True)))
                self.store.upsert_derived(edges, t, replace=True)
            self.store.set_families([InFamily(m.key, p.family, "matched")], t)
        if p.family is not None and out.fingerprint is not None:
            self.index.add(out.fingerprint, name=m.id, family=p.family)


def register_base(store: LineageStore, index: Index, m: HubModel, fingerprint: str, family: str,
                  license: str | None = None) -> None:
    """Index a base family's root and write its node, family and membership (``lineage index add``)."""
    from fingerprint.sketch import load

    sk = load(fingerprint)
    Pipeline(store, index)._write_model(m, sk)
    t = now_ms()
    store.upsert_families([FamilyRecord(family, m.key, family, license or m.license)], t)
    store.set_families([InFamily(m.key, family, "root")], t)
    index.add(fingerprint, name=m.id, family=family)
