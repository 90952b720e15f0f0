"""Where a model goes: its family, its direct parent, a merge's other parents. The rules, as functions.

Every model is named by its **graph key** (the Hub's ``_id``) here; nothing in this module reads a store
or an index. The input is plain data:

* the :class:`Subject` being placed (its flags, publication time) and the keys of the bases its card
  names that are indexed (``declared``);
* its :class:`Candidate` matches: indexed models **published before it**, each with the verdict, score
  and evidence of comparing the subject's weights against it. A parent's weights exist before its
  child's, so the candidates, and every score the rules read, are the same whatever order a crawl met
  the models in;
* ``score(key)``: the candidate for one more indexed model the rules want to consult (a declared base
  the screen did not shortlist, a model up the parent chain), None when it is not an older indexed model;
* a :class:`ParentTree`: each placed model's detected parent and the edge's score;
* for the merge rule, ``between(a, b)``: the score of two indexed models against each other.

:mod:`lineage.pipeline` builds those from the index and the store and writes what :func:`place` returns.

The rules (:func:`place`), in order:

1. **Weak match.** A model that claims no base and is a full pretrain (not an adapter, not GGUF or
   quantized) whose best ``derived`` match scores under ``WEAK_MATCH`` × the width's derived threshold is
   a *candidate family*, unless its embedding columns map one-to-one onto the match's at mean cosine
   ≥ ``COPIED_EMBEDDINGS`` (signed LAP). Derivatives score far above the threshold; models trained apart
   on the same text with one tokenizer sit just above it, but their embeddings agree only up to a rotation.
2. **Derived.** The family is the best ``derived`` match's; the direct parent is :func:`choose_parent`
   of it: a declared base the weights confirm, else the best match moved up its chain while the
   evidence for going lower is weak.
3. **Shared random start.** Only ``derived`` matches flagged ``shared_init`` (a common random start,
   not a trained parent): a full pretrain becomes a candidate family that shares its start with the
   earliest-published such match of each family, unless its card names one of them (then that claim,
   confirmed by the shared origin, is rule 2's parent), or unless rule 5 finds it is a merge.
4. **Nothing confident.** A full pretrain whose best match is ``independent`` or has no credible
   alignment is a candidate family; anything else stays unplaced (an aligned but weak match may be a
   heavily changed derivative: left open).
5. **Merges.** A model placed under P gets a second parent Y when it lies *between* P and Y
   (:func:`merge_parent`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from fingerprint.index import Evidence
from fingerprint.similarity.verdict import Verdict, score_thresholds

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
#: A second parent Y of a model M placed under P must make M "between" P and Y (see :func:`merge_parent`):
#: r = (d(P,Y) − d(M,Y)) / d(P,Y) at least this. A child of P has r ≤ 0 (tree-additive distances:
#: d(M,Y) = d(M,P) + d(P,Y)), an even merge r ≈ 1/2; a quarter is halfway.
MERGE_BETWEEN = 0.25
#: A model with no publication time sorts after every dated one (it can derive from any of them).
UNDATED_MS = 2**62
#: The operator's catalog bases are roots by decree: they precede every crawled model.
CATALOG_MS = -1
#: Parent chains are followed at most this far (a cycle in bad data still ends).
MAX_HOPS = 32


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Subject:
    """What placement needs to know of a model besides its fingerprint. Kept in the model's index entry,
    so a model can be placed again without its crawl record. ``base_models`` are the repo ids its card
    names (as the card says them)."""

    id: str
    key: str
    published_ms: int
    base_models: tuple[str, ...] = ()
    adapter: bool = False
    gguf: bool = False
    quantized: bool = False

    @property
    def full_pretrain(self) -> bool:
        """Claims no base and is a full model: the kind of model that may start a family."""
        return not (self.adapter or self.gguf or self.quantized) and not self.base_models

    def when(self) -> tuple[int, str]:
        """Publication order: (milliseconds, id), as :meth:`fingerprint.index.Entry.when`."""
        return (self.published_ms, self.id)


@dataclass(frozen=True)
class Candidate:
    """An older indexed model compared with the subject: its graph key, family, publication order and
    the comparison's outcome."""

    key: str
    family: str
    score: float
    z: float
    verdict: Verdict
    evidence: Evidence
    when: tuple[int, str] = (UNDATED_MS, "")


class ParentTree(Protocol):
    """The detected tree placement walks: each placed model's direct detected parent."""

    def parent(self, key: str) -> tuple[str, float] | None:
        """The detected parent of ``key`` and that edge's score (None: a root, or not placed)."""
        ...


#: How a placement was decided: a match verdict, or why there was none to act on.
PlacementVerdict = Literal["derived", "shared init", "inconclusive", "independent", "indexed", "weak match",
                           "no candidates"]
Score = Callable[[str], "Candidate | None"]


@dataclass
class Placement:
    """Where a model landed: family, direct parent (graph key) and the evidence."""

    family: str | None
    parent: str | None
    score: float | None
    z: float | None
    verdict: PlacementVerdict
    candidate_family: bool = False
    considered: int = 0
    evidence: Evidence | None = None
    #: further parents of a merge (graph key, score, z), beside ``parent``
    also: tuple[tuple[str, float, float], ...] = ()
    #: verdict "shared init": the models (graph key, score, z) it shares a random start with, the
    #: earliest-published of each family it matched so
    shared: tuple[tuple[str, float, float], ...] = ()


def chain(tree: ParentTree, key: str) -> list[str]:
    """``key``'s detected ancestors, nearest first (at most :data:`MAX_HOPS`, stopping at a cycle)."""
    out: list[str] = []
    for _ in range(MAX_HOPS):
        up = tree.parent(out[-1] if out else key)
        if up is None or up[0] in out:
            break
        out.append(up[0])
    return out


def place(s: Subject, declared: Sequence[str], matches: list[Candidate], width: int, score: Score,
          tree: ParentTree, between: Callable[[str, str], float]) -> Placement:
    """The whole decision for ``s`` (module docstring, rules 1-5) on its ``matches`` at residual width
    ``width``; ``declared``: the graph keys of the indexed bases its card names."""
    p = decide(s, declared, matches, width, score, tree)
    if p.verdict == "shared init" and p.shared:
        # half of a merge with an unrelated model shares only half of each parent's embeddings too;
        # the other parent, found between them, tells a merge from a shared random start
        top = score(max(p.shared, key=lambda x: x[1])[0])
        second = merge_parent(s, declared, top, matches, score, tree, between) if top is not None else None
        if top is not None and second is not None:
            return Placement(top.family, top.key, top.score, top.z, "derived", considered=p.considered,
                             evidence=top.evidence, also=((second.key, second.score, second.z),))
    if p.verdict == "derived" and p.parent is not None:
        second = merge_parent(s, declared, score(p.parent), matches, score, tree, between)
        if second is not None:
            p.also = ((second.key, second.score, second.z),)
    return p


def decide(s: Subject, declared: Sequence[str], matches: list[Candidate], width: int, score: Score,
           tree: ParentTree) -> Placement:
    """Rules 1-4 of the module docstring: family and direct parent of ``s`` from its ``matches``."""
    derived = [x for x in matches if x.verdict == "derived" and not x.evidence.shared_init]
    origin = [x for x in matches if x.verdict == "derived" and x.evidence.shared_init]
    # a shared random start is a trained parent only when the card says so (heavy continued
    # pretraining can move the embeddings as far): the claim, confirmed by the shared origin, decides
    claimed = [x for x in origin if x.key in declared]
    if not derived and claimed:
        derived = claimed
    best = max(derived, key=lambda x: x.score) if derived else None
    copied = (best is not None and best.evidence.alignment == "signed-lap"
              and best.evidence.alignment_quality >= COPIED_EMBEDDINGS)
    if best is not None and s.full_pretrain and not copied and best.score < WEAK_MATCH * score_thresholds(width)[0]:
        # matched only just above the threshold: models trained on the same text with the same tokenizer
        # sit there too. A candidate family for review instead of silently filing it under that base.
        return Placement(s.id, None, best.score, best.z, "weak match", candidate_family=True, considered=len(matches))
    if best is not None:
        parent = choose_parent(best, [d for d in declared if d != s.key], score, tree)
        return Placement(parent.family, parent.key, parent.score, parent.z, "derived", considered=len(matches),
                         evidence=parent.evidence)
    if origin:
        first: dict[str, Candidate] = {}
        for x in sorted(origin, key=lambda x: x.when):
            first.setdefault(x.family, x)
        shared = tuple((x.key, x.score, x.z) for x in first.values())
        return Placement(s.id if s.full_pretrain else None, None, None, None, "shared init",
                         candidate_family=s.full_pretrain, considered=len(matches), shared=shared)
    top = max(matches, key=lambda x: x.score) if matches else None
    verdict: PlacementVerdict = top.verdict if top else "no candidates"
    # Inconclusive without a credible alignment is what a new base trained on similar text gets
    # against existing ones; an aligned but weak match may be a heavily changed derivative: left open.
    unaligned = top is not None and top.evidence.aligned is False
    if s.full_pretrain and (top is None or top.verdict == "independent" or unaligned):
        return Placement(s.id, None, None, None, verdict, candidate_family=True, considered=len(matches))
    return Placement(None, None, top.score if top else None, top.z if top else None, verdict, considered=len(matches))


def choose_parent(best: Candidate, declared: Sequence[str], score: Score, tree: ParentTree) -> Candidate:
    """The direct parent: a declared base the weights confirm, else the best-scoring member, moved up
    its detected chain while the evidence for going lower is weak.

    A claim the weights confirm (verdict ``derived`` against the declared base) wins: fine-tunes of
    one base resemble each other more than they resemble the base (shared training dynamics), so
    similarity alone confuses siblings with parents, and a verified claim is better evidence than a
    small score difference. The family comes from the strongest evidence; a claim only picks the parent
    inside it (a card naming another family's base is a misstatement even if that base scores "derived").

    Without a claim: with distances d = 1 − score roughly additive along the tree, a child C of ``best``
    (whose parent is P) has d(C,P) − d(C,best) ≈ d(best,P); we stay at ``best`` only if the observed gap
    score(best) − score(P) is more than max(½·(1 − s(best,P)), :data:`SCORE_RESOLUTION`), so on a tie
    (attacks and quantized copies score ≈ 1 against each other) the older model wins.

    A claim two or more generations above ``best`` on its detected chain is not that ambiguity: to be
    literally true it would make the model a sibling of ``best``'s ancestor that resembles ``best``
    more than its own parent, while cards commonly name the original of a chain (the Hub's
    ``base_model`` is "the model this one derives from", and any ancestor is). There the claim is
    honoured as an ancestor: the walk from ``best`` picks the parent, going no higher than the claim.
    """
    claims = [x for x in (score(d) for d in declared)
              if x is not None and x.verdict == "derived" and x.family == best.family]
    above = chain(tree, best.key) if claims else []
    deep = [x for x in claims if x.key in above[1:]]
    if claims and len(deep) < len(claims):
        return max((x for x in claims if x not in deep), key=lambda x: x.score)
    stop = {x.key for x in deep}
    for _ in range(MAX_HOPS):
        up = tree.parent(best.key)
        p = score(up[0]) if up else None
        if up is None or p is None or p.verdict != "derived":
            break
        if best.score - p.score > max(0.5 * (1.0 - up[1]), SCORE_RESOLUTION):
            return best
        best = p
        if best.key in stop:  # never above what the card names
            break
    return best


def merge_parent(s: Subject, declared: Sequence[str], parent: Candidate | None, matches: list[Candidate],
                 score: Score, tree: ParentTree, between: Callable[[str, str], float]) -> Candidate | None:
    """A second parent, when ``s`` is a merge of its placed parent P and another indexed model Y.

    With distances d = 1 − score roughly additive along the tree, a child of P is no closer to any Y
    off its own chain than P is: d(M,Y) ≈ d(M,P) + d(P,Y) ≥ d(P,Y). A merge of P and Y lies between
    them, closer to Y than P is: r = (d(P,Y) − d(M,Y)) / d(P,Y) ≈ Y's share of the mix. Y is a second
    parent when r ≥ :data:`MERGE_BETWEEN` and the gap d(P,Y) − d(M,Y) is over the files' score
    resolution; d(P,Y) = 1 − ``between(P, Y)``.

    1 − score is a squared chord (a cosine's), so √d obeys the triangle inequality and the gap is at
    most d(M,P) + 2·√(d(M,P)·d(M,Y)): a Y for which that is under the resolution (a copy of P, an
    attacked twin) is not scored against P at all. Of the Ys that pass, the best-scoring is moved up
    its own chain as the parent is (:func:`choose_parent`), so a merge with a base is not filed under
    the base's attacked copy. Only Y among the three best other ``derived`` matches off P's own line (not
    a fine-tune of P, nor P one of its fine-tunes) are tried: P's line can fill a shortlist with near-ties
    (a 50/50 merge scores the same half against every member of either family) and is no second parent.
    """
    if parent is None:
        return None
    d_mp = 1.0 - parent.score
    line = {parent.key, *chain(tree, parent.key)}
    cands = sorted((x for x in matches if x.verdict == "derived" and x.key not in (s.key, parent.key)
                    and x.key not in line and parent.key not in chain(tree, x.key)
                    and d_mp + 2.0 * (d_mp * max(0.0, 1.0 - x.score)) ** 0.5 > SCORE_RESOLUTION),
                   key=lambda x: -x.score)[:3]
    for y in cands:
        d_py = 1.0 - between(parent.key, y.key)
        gap = d_py - (1.0 - y.score)
        if gap > SCORE_RESOLUTION and gap >= MERGE_BETWEEN * d_py:
            return choose_parent(y, [b for b in declared if b not in line], score, tree)
    return None
