"""Findings: what the graph says is suspect about a model, each with a stable dedup key.

Computed from the graph as it is now (declared and detected edges, exact copies, families, card
fields), so a finding appears and resolves as the graph changes: a fixed card, a removed edge or a
re-detection changes the next evaluation. Kinds:

* ``undeclared_base``: the weights derive from a base the card does not name (no ``base_model``);
* ``declared_differently``: the card names bases, none of them the detected family's;
* ``license_conflict``: the model's licence breaks a rule of its strictest base's licence (rule table);
* ``attribution_missing``: a notice or naming rule of the base licence is not met;
* ``hidden_copy``: an exact re-upload (``SAME_WEIGHTS``) whose card names no base and whose licence is
  missing or differs from the original's;
* ``unknown_license``: a derivative whose licence cannot be recognised, of a base whose terms matter;
* ``scratch_claim``: the card's text says the model was trained from scratch, and the weights derive from
  a parent;
* ``relation_differs``: the card's ``base_model_relation`` for its detected parent contradicts the
  relation the weights show (a quantization or a plain copy published as a fine-tune, a fine-tune
  published as a quantization, a merge that is not one): :data:`CONSISTENT`.

Declared derivatives are judged too: a card may name its base honestly and still relicense it.

Each kind comes from a small finder (:data:`FINDERS`) over one batched read of the graph (:class:`Graph`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from alerts.licenses import License, canonical, clean
from alerts.rules import SEVERITIES, Severity, judge, rules, strictest
from graph import queries
from graph.records import FamilyRecord, ModelRecord
from graph.store import MAX_DEPTH, EdgeRow, LineageStore

Kind = Literal["license_conflict", "undeclared_base", "declared_differently", "attribution_missing", "hidden_copy",
               "unknown_license", "scratch_claim", "relation_differs"]
KINDS: tuple[Kind, ...] = ("license_conflict", "undeclared_base", "declared_differently", "attribution_missing",
                           "hidden_copy", "unknown_license", "scratch_claim", "relation_differs")
DEFAULT_SEVERITY: dict[str, Severity] = {"undeclared_base": "medium", "declared_differently": "medium",
                                         "hidden_copy": "medium", "scratch_claim": "medium", "relation_differs": "low"}
#: Which typed relations (fingerprint.relation, on the detected edge) a card's declared relation (the Hub's
#: ``base_model_relation``) is consistent with; ``unknown`` claims nothing. A merged LoRA is a fine-tune.
CONSISTENT: dict[str, frozenset[str]] = {
    "finetune": frozenset({"finetune", "adapter_merged", "continued_pretraining", "vocab_changed", "pruned", "upcycled"}),
    "adapter": frozenset({"adapter_merged", "finetune"}),
    "quantized": frozenset({"quantized", "copy"}),
    "merge": frozenset({"merge"}),
}


@dataclass(frozen=True)
class Finding:
    """One suspect fact about one model, with the evidence behind it.

    ``dedup_key`` is stable for the same (kind, model, base, rule) whatever the score does; ``digest``
    changes only with what a reader would call a material change (licence, declared bases, reason).
    """

    kind: Kind
    severity: Severity
    model_key: str
    model_id: str
    organization: str
    base_key: str | None
    base_id: str | None
    family: str | None
    license: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        rule = self.evidence.get("rule") or ""
        blob = f"{rules().version}|{self.kind}|{self.model_key}|{self.base_key or ''}|{rule}"
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @property
    def digest(self) -> str:
        material = {"severity": self.severity, "license": self.license, "reason": self.reason,
                    "declared": self.evidence.get("declared"), "base": self.base_key}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dedup_key": self.dedup_key}


def at_least(severity: str, floor: str) -> bool:
    """Whether ``severity`` is ``floor`` or worse (unknown names count as ``info``)."""
    rank: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
    return rank.get(severity, 0) >= rank.get(floor, 0)


def _license(m: ModelRecord | None) -> License:
    return canonical(m.license, m.license_name, m.license_link) if m is not None else canonical(None)


def _finding(kind: Kind, severity: Severity, m: ModelRecord, base: ModelRecord | None, family: str | None, reason: str,
             **evidence: Any) -> Finding:
    mid = clean(m.id) or m.key
    card = {k: v for k, v in (("license", clean(m.license, 64)), ("license_name", clean(m.license_name)),
                              ("license_link", clean(m.license_link))) if v}
    evidence = {"card": card, **evidence}
    return Finding(kind, severity, m.key, mid, mid.split("/")[0], base.key if base else None,
                   (clean(base.id) or base.key) if base else None, clean(family), _license(m).label(), clean(reason, 400)
                   or kind, {k: v for k, v in evidence.items() if v is not None})


@dataclass
class Graph:
    """What every finder reads, from batched graph reads made once per evaluation: of the whole graph,
    or (:meth:`read` with ``keys``) of the models ``keys`` and what their findings depend on."""

    store: LineageStore
    #: detected parents (key, score) and the z of each detected edge, per model key
    parents: dict[str, list[tuple[str, float | None]]]
    zs: dict[tuple[str, str], float | None]
    #: declared base keys per model key
    declared: dict[str, list[str]]
    copies: list[EdgeRow]
    models: dict[str, ModelRecord]
    families: dict[str, FamilyRecord | None]
    #: the models whose findings this read supports (None: every model)
    scope: set[str] | None = None
    #: detected parents of the scope's ancestors too (their ancestry decides ``declared_differently``)
    ancestry: dict[str, list[str]] = field(default_factory=dict)
    #: the typed relation of each detected edge, and the relation each card declares for each base
    typed: dict[tuple[str, str], str | None] = field(default_factory=dict)
    claimed: dict[tuple[str, str], str | None] = field(default_factory=dict)

    @classmethod
    def read(cls, store: LineageStore, keys: set[str] | None = None) -> Graph:
        """Read what the finders need; ``keys``: only for those models (:func:`affected` widens a change
        log's keys to them), each kind of fact in one batched read."""
        if keys is None:
            edges = store.detected_edges(None)
            declared_rows = store.declared_edges(None)
            copies = store.copies()
        else:
            edges = store.detected_from(sorted(keys))
            declared_rows = store.declared_edges(sorted(keys))
            copies = store.copies_among(sorted(keys))
        detected = [e for e in edges if e.verdict == "derived"]
        declared: dict[str, list[str]] = defaultdict(list)
        for e in declared_rows:
            declared[e.src].append(e.dst)
        parents: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
        zs: dict[tuple[str, str], float | None] = {}
        ancestry: dict[str, list[str]] = defaultdict(list)
        for e in detected:
            parents[e.src].append((e.dst, e.score))
            zs[(e.src, e.dst)] = e.z
            ancestry[e.src].append(e.dst)
        if keys is not None:  # the scope's ancestors' parents, a level per read (chains are short)
            frontier = {p for v in ancestry.values() for p in v} - set(ancestry)
            for _ in range(MAX_DEPTH):
                if not frontier:
                    break
                up = [e for e in store.detected_from(sorted(frontier)) if e.verdict == "derived"]
                for e in up:
                    ancestry[e.src].append(e.dst)
                frontier = {e.dst for e in up} - set(ancestry) - frontier
        ks = set(parents) | set(declared) | {d for v in declared.values() for d in v} | {
            p for v in parents.values() for p, _ in v} | {c.src for c in copies} | {c.dst for c in copies}
        models = {m.key: m for m in store.get_models(sorted(ks))}
        got = store.families_of(sorted(ks))
        fams: dict[str, FamilyRecord | None] = {k: got.get(k) for k in ks}
        roots = {f.root_key for f in fams.values() if f is not None and f.root_key}
        models.update({m.key: m for m in store.get_models(sorted(roots - set(models)))})
        typed = {(e.src, e.dst): e.relation for e in detected}
        claimed = {(e.src, e.dst): e.relation for e in declared_rows}
        return cls(store, parents, zs, declared, copies, models, fams, keys, ancestry, typed, claimed)

    def root_of(self, key: str) -> ModelRecord | None:
        """The root of ``key``'s family."""
        f = self.families.get(key) or self.store.family_of(key)
        return self.models.get(f.root_key) if f is not None and f.root_key else None

    def family(self, key: str) -> str | None:
        f = self.families.get(key)
        return f.name if f is not None else None

    def is_root(self, key: str) -> bool:
        f = self.families.get(key)
        return f is not None and f.root_key == key


def affected(store: LineageStore, touched: Sequence[str]) -> set[str]:
    """The models whose findings a write to the models ``touched`` may change, in batched reads:

    * those models;
    * every member of a family whose root is among them (a member's licence is judged against its
      family root's);
    * the detected descendants of all of these (their ancestry, which decides ``declared_differently``,
      runs through a changed model);
    * the models whose cards declare any of these (judged against the declared base's family root,
      and against its family);
    * the other end of their exact-copy pairs (a copy is judged against its original's root).
    """
    keys = set(touched)
    roots = {f.name for k, f in store.families_of(sorted(keys)).items() if f.root_key == k}
    for name in sorted(roots):
        keys.update(store.family_members(name))
    frontier = set(keys)
    for _ in range(MAX_DEPTH):
        frontier = set(store.children_of(sorted(frontier))) - keys
        if not frontier:
            break
        keys |= frontier
    keys.update(store.declarers_of(sorted(keys)))
    for c in store.copies_among(sorted(keys)):
        keys.update((c.src, c.dst))
    return keys


def find_undeclared(g: Graph) -> Iterator[Finding]:
    """``undeclared_base`` and ``declared_differently``: a detected parent the card does not name (no
    ``base_model``), or names bases none of which is the detected family's (``graph.queries.undeclared``)."""
    detected = [EdgeRow(src, dst, "DERIVED_FROM", score, "derived") for src, ps in g.parents.items() for dst, score in ps]
    rows = queries.undeclared_rows(detected, g.ancestry, g.declared, g.models,
                                   {k: f for k, f in g.families.items() if f is not None})
    for row in rows:
        m = g.models.get(row["key"])
        p = next((g.models[k] for k, _ in g.parents.get(row["key"], []) if k in g.models), None)
        if m is None:
            continue
        kind: Kind = "undeclared_base" if row["reason"] == "undeclared" else "declared_differently"
        what = ("the weights derive from {p}; the card names no base" if kind == "undeclared_base"
                else "the weights derive from {p}; the card names " + ", ".join(row["declared"]))
        yield _finding(kind, DEFAULT_SEVERITY[kind], m, p, row["family"], what.format(p=row["detected_parent"]),
                       score=row["score"], z=g.zs.get((m.key, p.key)) if p else None,
                       detected_parent=row["detected_parent"], declared=row["declared"])


def find_license_breaks(g: Graph) -> Iterator[Finding]:
    """``license_conflict``, ``attribution_missing``, ``unknown_license``: every derivative (detected or
    declared, not a family root) against its strictest base's licence, by the rule table
    (:func:`alerts.rules.judge`)."""
    for key in sorted(set(g.parents) | set(g.declared)):
        m = g.models.get(key)
        if m is None or g.is_root(key):
            continue
        bases = {r.key: r for r in [g.root_of(key), *(g.root_of(d) for d in g.declared.get(key, []))]
                 if r is not None and r.key != key}
        base = _strictest(list(bases.values()))
        if base is None:
            continue
        score, z = next(((s, g.zs.get((key, d))) for d, s in g.parents.get(key, [])), (None, None))
        for j in judge(_license(m), _license(base), m.id.split("/")[-1]):
            yield _finding(j.kind, j.severity, m, base, g.family(key), j.reason, rule=j.rule, clause=j.clause,
                           base_license=_license(base).label(), score=score, z=z,
                           declared=[g.models[d].id for d in g.declared.get(key, []) if d in g.models])


def _copies(g: Graph) -> Iterator[tuple[ModelRecord, ModelRecord]]:
    """(copy, original) of every exact re-upload whose card names no base. ``SAME_WEIGHTS`` is unordered;
    the copy is the later-created side (on a tie, the one whose card names no base)."""
    for c in g.copies:
        a, b = g.models.get(c.src), g.models.get(c.dst)
        if a is None or b is None:
            continue
        m, orig = sorted([a, b], key=lambda x: (x.created_at_ms or 0, not g.declared.get(x.key), x.key), reverse=True)
        if not g.declared.get(m.key):  # a re-upload that names its base says what it is
            yield m, orig


def find_hidden_copies(g: Graph) -> Iterator[Finding]:
    """``hidden_copy``: an exact re-upload that names no base, ``low`` when it keeps the original's
    licence, ``medium`` when its licence is missing or another."""
    for m, orig in _copies(g):
        mine, theirs = _license(m), _license(orig)
        severity: Severity = "low" if mine.known and mine.key == theirs.key else "medium"
        yield _finding("hidden_copy", severity, m, orig, g.family(m.key),
                       f"same weight files as {clean(orig.id)}; the card names no base (licence {mine.label()}, "
                       f"original {theirs.label()})", original=clean(orig.id))


def find_copy_license_breaks(g: Graph) -> Iterator[Finding]:
    """The licence rules for a hidden copy, against its original's family root (or the original)."""
    for m, orig in _copies(g):
        base = g.root_of(orig.key) or orig
        if base.key != m.key:
            for j in judge(_license(m), _license(base), m.id.split("/")[-1]):
                yield _finding(j.kind, j.severity, m, base, g.family(m.key), j.reason, rule=j.rule, clause=j.clause,
                               base_license=_license(base).label(), original=clean(orig.id))


def find_relation_claims(g: Graph) -> Iterator[Finding]:
    """``relation_differs``: a card that declares its detected parent with a ``base_model_relation`` the
    typed edge contradicts (:data:`CONSISTENT`); ``medium`` when a copy or quantization is published as
    a fine-tune (the Hub's tree then shows it as one), else ``low``. Untyped edges claim nothing."""
    for (src, dst), typed in sorted(g.typed.items()):
        claim = g.claimed.get((src, dst))
        if typed in (None, "untyped") or claim not in CONSISTENT or typed in CONSISTENT[claim]:
            continue
        m, p = g.models.get(src), g.models.get(dst)
        if m is None or p is None:
            continue
        severity: Severity = "medium" if claim == "finetune" and typed in ("copy", "quantized") else "low"
        yield _finding("relation_differs", severity, m, p, g.family(src),
                       f"the card calls it a {claim} of {clean(p.id)}; the weights say {typed}",
                       rule=f"declared {claim}", declared_relation=claim, typed_relation=typed,
                       score=next((sc for d, sc in g.parents.get(src, []) if d == dst), None), z=g.zs.get((src, dst)))


def find_scratch_claims(g: Graph) -> Iterator[Finding]:
    """``scratch_claim``: the card's text claims training from scratch (a quote kept by the crawler), and
    the weights derive from a detected parent."""
    for key, ps in sorted(g.parents.items()):
        m = g.models.get(key)
        if m is None or not m.claims or not ps:
            continue
        dst, score = max(ps, key=lambda x: x[1] or 0.0)
        p = g.models.get(dst)
        if p is None:
            continue
        yield _finding("scratch_claim", DEFAULT_SEVERITY["scratch_claim"], m, p, g.family(key),
                       f"the card says it was trained from scratch; the weights derive from {clean(p.id)}",
                       quote=clean(m.claims, 200), score=score, z=g.zs.get((key, dst)))


#: The finders, each a function of the graph read once; a new kind of finding is a function and a line here.
FINDERS: dict[str, Callable[[Graph], Iterable[Finding]]] = {
    "undeclared": find_undeclared,
    "license": find_license_breaks,
    "hidden_copy": find_hidden_copies,
    "copy_license": find_copy_license_breaks,
    "relation": find_relation_claims,
    "scratch": find_scratch_claims,
}


def evaluate(store: LineageStore, keys: set[str] | None = None) -> list[Finding]:
    """Every finding the graph supports now (every :data:`FINDERS` entry over one read of the graph),
    one per dedup key, sorted by model then kind; ``keys``: only the findings of those models (read
    from what they depend on; :func:`affected` says which models a change concerns)."""
    g = Graph.read(store, keys)
    uniq = {f.dedup_key: f for finder in FINDERS.values() for f in finder(g)
            if keys is None or f.model_key in keys}
    return sorted(uniq.values(), key=lambda f: (f.model_id, KINDS.index(f.kind), f.base_id or ""))


def _strictest(bases: list[ModelRecord]) -> ModelRecord | None:
    lic = {b.key: _license(b) for b in bases}
    best = strictest(list(lic.values()))
    return next((b for b in bases if lic[b.key] is best), None)
