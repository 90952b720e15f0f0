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
* ``unknown_license``: a derivative whose licence cannot be recognised, of a base whose terms matter.

Declared derivatives are judged too: a card may name its base honestly and still relicense it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from alerts.licenses import License, canonical, clean
from alerts.rules import SEVERITIES, Severity, judge, rules, strictest
from graph import queries
from graph.records import ModelRecord
from graph.store import LineageStore

Kind = Literal["license_conflict", "undeclared_base", "declared_differently", "attribution_missing", "hidden_copy",
               "unknown_license"]
KINDS: tuple[Kind, ...] = ("license_conflict", "undeclared_base", "declared_differently", "attribution_missing",
                           "hidden_copy", "unknown_license")
DEFAULT_SEVERITY: dict[str, Severity] = {"undeclared_base": "medium", "declared_differently": "medium",
                                         "hidden_copy": "medium"}


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


def evaluate(store: LineageStore) -> list[Finding]:
    """Every finding the graph supports now, sorted by model then kind."""
    detected = [e for e in store.detected_edges(None) if e.verdict == "derived"]
    declared: dict[str, list[str]] = defaultdict(list)
    for e in store.declared_edges(None):
        declared[e.src].append(e.dst)
    copies = store.copies()
    parents: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    zs: dict[tuple[str, str], float | None] = {}
    for e in detected:
        parents[e.src].append((e.dst, e.score))
        zs[(e.src, e.dst)] = e.z
    keys = set(parents) | set(declared) | {d for v in declared.values() for d in v} | {p for v in parents.values()
                                                                                       for p, _ in v}
    keys |= {c.src for c in copies} | {c.dst for c in copies}
    models = {m.key: m for m in store.get_models(sorted(keys))}
    fams = {k: store.family_of(k) for k in keys}
    roots = {f.root_key for f in fams.values() if f is not None and f.root_key}
    models.update({m.key: m for m in store.get_models(sorted(roots - set(models)))})

    def root_of(key: str) -> ModelRecord | None:
        f = fams.get(key) or store.family_of(key)
        return models.get(f.root_key) if f is not None and f.root_key else None

    def family(key: str) -> str | None:
        f = fams.get(key)
        return f.name if f is not None else None

    def is_root(key: str) -> bool:
        f = fams.get(key)
        return f is not None and f.root_key == key

    out: list[Finding] = []
    for row in queries.undeclared(store):
        m, p = models.get(row["key"]), next((models[k] for k, _ in parents.get(row["key"], []) if k in models), None)
        if m is None:
            continue
        kind: Kind = "undeclared_base" if row["reason"] == "undeclared" else "declared_differently"
        what = ("the weights derive from {p}; the card names no base" if kind == "undeclared_base"
                else "the weights derive from {p}; the card names " + ", ".join(row["declared"]))
        out.append(_finding(kind, DEFAULT_SEVERITY[kind], m, p, row["family"], what.format(p=row["detected_parent"]),
                            score=row["score"], z=zs.get((m.key, p.key)) if p else None,
                            detected_parent=row["detected_parent"], declared=row["declared"]))
    # licences: every derivative (detected or declared) against its strictest base
    for key in sorted(set(parents) | set(declared)):
        m = models.get(key)
        if m is None or is_root(key):
            continue
        bases = {r.key: r for r in [root_of(key), *(root_of(d) for d in declared.get(key, []))] if r is not None
                 and r.key != key}
        base = _strictest(list(bases.values()))
        if base is None:
            continue
        score, z = next(((s, zs.get((key, d))) for d, s in parents.get(key, [])), (None, None))
        for j in judge(_license(m), _license(base), m.id.split("/")[-1]):
            out.append(_finding(j.kind, j.severity, m, base, family(key), j.reason,
                                rule=j.rule, clause=j.clause, base_license=_license(base).label(), score=score, z=z,
                                declared=[models[d].id for d in declared.get(key, []) if d in models]))
    # exact copies: a re-upload that hides where its weights come from. SAME_WEIGHTS is unordered; the
    # copy is the later-created side (on a tie, the one whose card names no base).
    for c in copies:
        a, b = models.get(c.src), models.get(c.dst)
        if a is None or b is None:
            continue
        m, orig = sorted([a, b], key=lambda x: (x.created_at_ms or 0, not declared.get(x.key), x.key), reverse=True)
        if declared.get(m.key):
            continue  # a re-upload that names its base says what it is
        mine, theirs = _license(m), _license(orig)
        severity: Severity = "low" if mine.known and mine.key == theirs.key else "medium"
        out.append(_finding("hidden_copy", severity, m, orig, family(m.key),
                            f"same weight files as {clean(orig.id)}; the card names no base (licence {mine.label()}, "
                            f"original {theirs.label()})", original=clean(orig.id)))
        base = root_of(orig.key) or orig
        if base.key != m.key:
            for j in judge(mine, _license(base), m.id.split("/")[-1]):
                out.append(_finding(j.kind, j.severity, m, base, family(m.key), j.reason, rule=j.rule, clause=j.clause,
                                    base_license=_license(base).label(), original=clean(orig.id)))
    uniq = {f.dedup_key: f for f in out}
    return sorted(uniq.values(), key=lambda f: (f.model_id, KINDS.index(f.kind), f.base_id or ""))


def _strictest(bases: list[ModelRecord]) -> ModelRecord | None:
    lic = {b.key: _license(b) for b in bases}
    best = strictest(list(lic.values()))
    return next((b for b in bases if lic[b.key] is best), None)
