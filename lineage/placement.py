"""Deciding where a model goes: its family, its direct parent, a merge's other parents.

The rules (module docstring of :mod:`lineage.pipeline`, steps 3-5) run on a model's matches against
the index. A model is matched only against entries **published before it** (:meth:`Subject.when`): a
parent's weights exist before its child's, so the candidates for a model's parent, and every score the
rules read, are the same whatever order the crawl met the models in. :mod:`lineage.pipeline` re-places
the later models a late-arriving older one could change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from crawler.records import HubModel
from fingerprint.index import Entry, Evidence, Index, Match
from fingerprint.similarity.factored import TargetWork
from fingerprint.similarity.verdict import score_thresholds
from fingerprint.sketch import Sketch
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
#: match this close means the embedding matrix was copied, whatever the layers' score (90% magnitude
#: pruning keeps the embeddings and leaves Q/K at 0.55 of the base at d=64).
COPIED_EMBEDDINGS = 0.9
#: A second parent Y of a model M placed under P must make M "between" P and Y (see
#: :meth:`Placer._merge_parent`): r = (d(P,Y) − d(M,Y)) / d(P,Y) at least this. A child of P has r ≤ 0
#: (tree-additive distances: d(M,Y) = d(M,P) + d(P,Y)), an even merge r ≈ 1/2; a quarter is halfway.
MERGE_BETWEEN = 0.25
#: Pair scores kept (keyed on the two fingerprints' SHA-256); past this many the memo starts again (a
#: long-running service would otherwise keep ~10 per placed model for ever; a miss costs one comparison).
PAIR_MEMO = 100_000
#: A model with no publication time sorts after every dated one (it can derive from any of them).
UNDATED_MS = 2**62
#: The operator's catalog bases are roots by decree: they precede every crawled model.
CATALOG_MS = -1


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Subject:
    """What placement needs to know of a model besides its fingerprint. Kept in the model's index entry
    (:meth:`meta`), so a model can be placed again without its crawl record."""

    id: str
    key: str
    published_ms: int
    base_models: tuple[str, ...] = ()
    adapter: bool = False
    gguf: bool = False
    quantized: bool = False

    @classmethod
    def of(cls, m: HubModel) -> Subject:
        ms = int(m.created_at.timestamp() * 1000) if m.created_at is not None else UNDATED_MS
        return cls(m.id, m.key, ms, tuple(m.base_models), bool(m.adapter), bool(m.gguf), bool(m.quantized))

    @classmethod
    def from_entry(cls, e: Entry) -> Subject | None:
        """The subject kept in ``e`` (None: a catalog base, or an entry from before subjects were kept)."""
        d = e.meta
        if not isinstance(d.get("key"), str) or not isinstance(d.get("published_ms"), int):
            return None
        return cls(e.name, d["key"], d["published_ms"], tuple(str(b) for b in d.get("bases") or ()),
                   bool(d.get("adapter")), bool(d.get("gguf")), bool(d.get("quantized")))

    def meta(self) -> dict[str, Any]:
        return {"key": self.key, "published_ms": self.published_ms, "bases": list(self.base_models),
                "adapter": self.adapter, "gguf": self.gguf, "quantized": self.quantized}

    def when(self) -> tuple[int, str]:
        """Publication order: (milliseconds, id), as :meth:`fingerprint.index.Entry.when`."""
        return (self.published_ms, self.id)


def _lazy_work(sketch: Callable[[], Sketch]) -> Callable[[], TargetWork]:
    """A :class:`TargetWork` of ``sketch()``, built on the first call (a memo hit needs none)."""
    made: list[TargetWork] = []

    def work() -> TargetWork:
        if not made:
            made.append(TargetWork(sketch()))
        return made[0]

    return work


#: How a placement was decided: a match verdict, or why there was none to act on.
PlacementVerdict = Literal["derived", "shared init", "inconclusive", "independent", "indexed", "weak match",
                           "no candidates"]


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
    #: verdict "shared init": the models (index entry name, score, z) it shares a random start with,
    #: the earliest-published of each family it matched so
    shared: tuple[tuple[str, float, float], ...] = ()


Placeable = Subject | HubModel


class Placer:
    """The placement rules over an index and the detected tree in a store."""

    def __init__(self, store: LineageStore, index: Index, shortlist: int = SHORTLIST) -> None:
        self.store = store
        self.index = index
        self.shortlist = shortlist
        #: (suspect fingerprint SHA-256, reference fingerprint SHA-256) → match: the scores a re-placement
        #: and the merge test ask for again. Content-addressed, so a renamed or re-familied entry still hits.
        self._memo: dict[tuple[str, str], Match] = {}

    def pair(self, suspect: str, work: Callable[[], TargetWork], name: str) -> Match:
        """The match of the indexed ``name`` against the suspect whose fingerprint hashes to ``suspect``."""
        e = self.index.entries[name]
        k = (suspect, e.sha256)
        m = self._memo.get(k)
        if m is None:
            if len(self._memo) > PAIR_MEMO:
                self._memo.clear()
            m = self._memo[k] = self.index.score(name, work())
        return replace(m, name=name, family=e.family)

    def place_among_older(self, s: Subject, sk: Sketch, sha: str) -> Placement:
        """Family and direct parent of ``s`` (fingerprint ``sk``, whose file hashes to ``sha``) among the
        entries published before it."""
        work = _lazy_work(lambda: sk)  # the suspect's share of every comparison, computed once, when first needed
        when = s.when()
        scored: dict[str, Match] = {}
        for name, _, _ in self.index.screen(sk, self.shortlist, older_than=when):
            if name != s.id:
                scored[name] = self.pair(sha, work, name)
        matches = sorted(scored.values(), key=lambda x: -x.score)

        def score(name: str) -> Match | None:
            e = self.index.entries.get(name)
            if name not in scored and e is not None and name != s.id and e.when() < when and not e.meta.get("hidden"):
                scored[name] = self.pair(sha, work, name)
            return scored.get(name)

        for base in s.base_models:  # the declared parent is always scored (when it is older)
            if base not in {x.name for x in matches} and score(base) is not None:
                matches.append(scored[base])
        p = self.decide(s, matches, sk.width, score)
        if p.verdict == "shared init" and p.shared:
            # half of a merge with an unrelated model shares only half of each parent's embeddings too;
            # the other parent, found between them, tells a merge from a shared random start
            top = scored.get(max(p.shared, key=lambda x: x[1])[0])
            second = self._merge_parent(s, top, matches, score)
            if top is not None and second is not None:
                return Placement(top.family, top.name, top.score, top.z, "derived", considered=p.considered,
                                 evidence=top.evidence, also=((second.name, second.score, second.z),))
        if p.verdict == "derived" and p.parent is not None:
            second = self._merge_parent(s, scored.get(p.parent), matches, score)
            if second is not None:
                p.also = ((second.name, second.score, second.z),)
        return p

    def _pair_between(self, a: str, b: str) -> float:
        """Score of two indexed models, the later-published one as the suspect (as when it was placed)."""
        ea, eb = self.index.entries[a], self.index.entries[b]
        young, old = (ea, eb) if ea.when() > eb.when() else (eb, ea)
        return self.pair(young.sha256, _lazy_work(lambda: self.index.sketch(young.name)), old.name).score

    def _merge_parent(self, m: Placeable, parent: Match | None, matches: list[Match],
                      score: Callable[[str], Match | None]) -> Match | None:
        """A second parent, when ``m`` is a merge of its placed parent P and another indexed model Y.

        With distances d = 1 − score roughly additive along the tree, a child of P is no closer to any Y
        off its own chain than P is: d(M,Y) ≈ d(M,P) + d(P,Y) ≥ d(P,Y). A merge of P and Y lies between
        them, closer to Y than P is: r = (d(P,Y) − d(M,Y)) / d(P,Y) ≈ Y's share of the mix. Y is a second
        parent when r ≥ :data:`MERGE_BETWEEN` and the gap is over the files' score resolution.

        1 − score is a squared chord (a cosine's), so √d obeys the triangle inequality and the gap is at
        most d(M,P) + 2·√(d(M,P)·d(M,Y)): a Y for which that is under the resolution (a copy of P, an
        attacked twin) is not scored against P at all. Of the Ys that pass, the best-scoring is moved up
        its own chain as the parent is (:meth:`_choose`), so a merge with a base is not filed under the
        base's attacked copy.
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
        for y in cands:
            if y.name in chain or parent.name in self._chain(y.name):
                continue  # on P's own line: a fine-tune of P, or P one of its fine-tunes
            d_py = 1.0 - self._pair_between(parent.name, y.name)
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

    def decide(self, m: Placeable, matches: list[Match], width: int, score: Callable[[str], Match | None]) -> Placement:
        """The placement rules (module docstring, steps 3-4) on the matches of ``m`` (residual width
        ``width``); ``score(name)`` scores one more indexed model when the parent walk needs it (None: not
        indexed)."""
        derived = [x for x in matches if x.verdict == "derived" and not x.evidence.shared_init]
        origin = [x for x in matches if x.verdict == "derived" and x.evidence.shared_init]
        full_pretrain = not (m.adapter or m.gguf or m.quantized) and not m.base_models
        # a shared random start is a trained parent only when the card says so (heavy continued
        # pretraining can move the embeddings as far): the claim, confirmed by the shared origin, decides
        claimed = [x for x in origin if x.name in m.base_models]
        if not derived and claimed:
            derived = claimed
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
        if origin:
            first: dict[str, Match] = {}
            for x in sorted(origin, key=lambda x: e.when() if (e := self.index.entries.get(x.name)) else (UNDATED_MS, x.name)):
                first.setdefault(x.family, x)
            shared = tuple((x.name, x.score, x.z) for x in first.values())
            return Placement(m.id if full_pretrain else None, None, None, None, "shared init",
                             candidate_family=full_pretrain, considered=len(matches), shared=shared)
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

        A claim two or more generations above ``best`` on its detected chain is not that ambiguity: to be
        literally true it would make the model a sibling of ``best``'s ancestor that resembles ``best``
        more than its own parent, while cards commonly name the original of a chain (the Hub's
        ``base_model`` is "the model this one derives from", and any ancestor is). There the claim is
        honoured as an ancestor: the walk from ``best`` picks the parent, going no higher than the claim.
        """
        # the family comes from the strongest evidence; a claim only picks the parent inside it (a card
        # naming another family's base is a misstatement even if that base also scores "derived")
        claims = [x for x in (score(d) for d in declared)
                  if x is not None and x.verdict == "derived" and x.family == best.family]
        chain = self._chain(best.name) if claims else []
        deep = [x for x in claims if x.name in chain[1:]]
        if claims and len(deep) < len(claims):
            return max((x for x in claims if x not in deep), key=lambda x: x.score)
        stop = {x.name for x in deep}
        for _ in range(32):
            up = self._up(best.name)
            p = score(up[0]) if up else None
            if up is None or p is None or p.verdict != "derived":
                break
            if best.score - p.score > max(0.5 * (1.0 - up[1]), SCORE_RESOLUTION):
                return best
            best = p
            if best.name in stop:  # never above what the card names
                break
        return best
