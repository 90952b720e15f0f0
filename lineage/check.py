"""``lineage check``: a provenance gate for pipelines that pull models, with graded exit codes.

A check fingerprints the model (a local checkpoint, a ``.lfp`` file or a Hub repo at its current commit),
matches it against the index and grades what it found, then applies a policy:

========  ==============  =====================================================================================
exit      outcome         meaning
========  ==============  =====================================================================================
0         ``verified``    derived from an indexed family, and the exact variant is known: its fingerprint holds
                          the same evidence as an indexed entry's, or its card declares a base the index holds in
                          that family
10        ``family``      derived from an indexed family, but the exact variant is not verified (no declared
                          base, or a declared base the weights do not confirm)
20        ``inconclusive`` no family is confirmed: the weights match nothing indexed (unknown provenance) or
                          not clearly enough
30        ``violation``   the policy refuses it: a blocked licence (of the family's root), a required declared
                          base missing, or unknown provenance under ``unknown = "fail"``
2         (error)         the check could not run (a bad path, an unreachable Hub, a malformed policy)
========  ==============  =====================================================================================

A policy file (TOML) says which licences are allowed, warned or blocked (for every family, or per
family), whether a declared base is required and whether unknown provenance fails closed. An override
(``--override REASON``) turns a refusal into exit 0 and appends who, what and why to
``$LINEAGE_HOME/check/overrides.jsonl``. Evidence is cached in ``$LINEAGE_HOME/check/cache.db`` by the
model's identity (a Hub repo's commit sha, a local checkpoint's file sizes and times) and the index's
state; the policy is applied afresh every time.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from lineage.errors import LineageError

EXIT = {"verified": 0, "family": 10, "inconclusive": 20, "violation": 30}


class PolicyError(LineageError, ValueError):
    """A policy file that cannot be read or says something the gate does not understand."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"policy {path}: {reason}")


@dataclass(frozen=True)
class LicenceRules:
    allowed: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    """What a pipeline accepts. ``allowed`` empty: every licence not blocked is allowed."""

    licences: LicenceRules = LicenceRules()
    families: dict[str, LicenceRules] = field(default_factory=dict)
    require_declared_base: bool = False
    unknown: str = "warn"  # "fail": unknown provenance is a violation

    @staticmethod
    def load(path: str | Path | None) -> Policy:
        """Read a policy file (``None``: the default policy, which refuses nothing).

        Raises:
            PolicyError: unreadable, not TOML, or with keys or values the gate does not know.
        """
        if path is None:
            return Policy()
        try:
            doc = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise PolicyError(str(path), str(e)) from e

        def rules(d: Any, where: str) -> LicenceRules:
            if not isinstance(d, dict) or set(d) - {"allowed", "warn", "blocked"}:
                raise PolicyError(str(path), f"[{where}] takes only allowed, warn and blocked lists")
            out = {}
            for k, v in d.items():
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise PolicyError(str(path), f"[{where}] {k} must be a list of licence ids")
                out[k] = tuple(x.lower() for x in v)
            return LicenceRules(**out)

        unknown_keys = set(doc) - {"licenses", "families", "provenance"}
        if unknown_keys:
            raise PolicyError(str(path), f"unknown section(s) {', '.join(sorted(unknown_keys))}")
        prov = doc.get("provenance", {})
        if not isinstance(prov, dict) or set(prov) - {"require_declared_base", "unknown"} \
                or prov.get("unknown", "warn") not in ("warn", "fail") \
                or not isinstance(prov.get("require_declared_base", False), bool):
            raise PolicyError(str(path), '[provenance] takes require_declared_base = true|false and unknown = "warn"|"fail"')
        fams = doc.get("families", {})
        if not isinstance(fams, dict):
            raise PolicyError(str(path), "[families.NAME] tables expected")
        return Policy(rules(doc.get("licenses", {}), "licenses"), {k: rules(v, f"families.{k}") for k, v in fams.items()},
                      prov.get("require_declared_base", False), prov.get("unknown", "warn"))


def grade(evidence: dict[str, Any]) -> str:
    """``verified``, ``family`` or ``inconclusive`` from the evidence alone (module docstring)."""
    fam = evidence.get("family")
    if not fam or evidence.get("verdict") != "derived":
        return "inconclusive"
    if evidence.get("exact_entry") or any(b in evidence.get("family_entries", ()) for b in evidence.get("declared", ())):
        return "verified"
    return "family"


def apply_policy(evidence: dict[str, Any], policy: Policy) -> tuple[str, list[str], list[str]]:
    """``(outcome, reasons, warnings)``: the grade, unless the policy turns it into a ``violation``."""
    outcome = grade(evidence)
    reasons: list[str] = []
    warnings: list[str] = []
    licence = (evidence.get("family_license") or "").lower() or None
    if outcome in ("verified", "family"):
        for rules, where in ((policy.families.get(evidence["family"]), f"family {evidence['family']}"),
                             (policy.licences, "every family")):
            if rules is None:
                continue
            if licence in rules.blocked:
                reasons.append(f"licence {licence} of {evidence['family']} is blocked ({where})")
            elif rules.allowed and licence not in rules.allowed and licence not in rules.warn:
                reasons.append(f"licence {licence or 'unknown'} of {evidence['family']} is not allowed ({where})")
            elif licence in rules.warn:
                warnings.append(f"licence {licence} of {evidence['family']} needs review ({where})")
            break  # a family's own rules replace the global ones
        if policy.require_declared_base and not evidence.get("declared"):
            reasons.append("the card declares no base model and the policy requires one")
    elif policy.unknown == "fail":
        reasons.append("unknown provenance: no indexed family is confirmed, and the policy fails closed")
    else:
        warnings.append("unknown provenance: no indexed family is confirmed")
    return ("violation" if reasons else outcome), reasons, warnings


class CheckCache:
    """Evidence by model identity and index state (SQLite, one row per identity)."""

    def __init__(self, home: Path) -> None:
        (home / "check").mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(home / "check" / "cache.db")
        self.db.execute("CREATE TABLE IF NOT EXISTS evidence (identity TEXT PRIMARY KEY, index_state TEXT, doc TEXT)")

    def get(self, identity: str, index_state: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT doc FROM evidence WHERE identity = ? AND index_state = ?",
                              (identity, index_state)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, identity: str, index_state: str, doc: dict[str, Any]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO evidence VALUES (?, ?, ?)", (identity, index_state, json.dumps(doc)))

    def close(self) -> None:
        self.db.close()


def local_identity(path: Path) -> str:
    """A local checkpoint's identity: SHA-256 over its files' names, sizes and modification times (no content read)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path.parent)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "local:" + h.hexdigest()


def log_override(home: Path, result: dict[str, Any], reason: str) -> dict[str, Any]:
    """Append one override to ``$LINEAGE_HOME/check/overrides.jsonl`` (who, when, what, the outcome set aside, why)."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user": getpass.getuser(),
             "model": result["model"], "identity": result["identity"], "outcome": result["outcome"],
             "reasons": result["reasons"], "reason": reason}
    (home / "check").mkdir(parents=True, exist_ok=True)
    with open(home / "check" / "overrides.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def _same_content(a: Any, b: Any) -> bool:
    """Two fingerprints of the same weights: equal anchors, embedding rows, head rows and Q/K factors (their
    files may differ in metadata only: the source's name, the bytes read)."""
    import numpy as np

    def same(x: Any, y: Any) -> bool:
        return (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))

    return (a.keys == b.keys and same(a.embed, b.embed) and same(a.lm_head, b.lm_head) and len(a.q) == len(b.q)
            and all(same(x, y) for x, y in zip(a.q + a.k, b.q + b.k, strict=True)))


def _match_evidence(index: Any, sk: Any, declared: tuple[str, ...], shortlist: int = 8) -> dict[str, Any]:
    """What the index says of one fingerprint: the best family, its verdict and score, whether this exact
    fingerprint is an indexed entry (and that entry's graph key), and which declared bases the index holds in
    that family."""
    scored, _ = index.match(sk, top=shortlist, shortlist=shortlist)
    if not scored:
        return {"family": None, "verdict": None, "score": None, "declared": list(declared)}
    best = scored[0]
    entry = index.db.get(best.name)
    in_family = [b for b in declared if (e := index.db.get(b)) is not None and e.family == best.family]
    return {"family": best.family, "base": best.name, "base_key": entry.facts.key if entry is not None else None,
            "verdict": best.verdict, "score": round(float(best.score), 4),
            "exact_entry": entry is not None and _same_content(index.sketch(best.name), sk),
            "declared": list(declared), "family_entries": in_family}


def run_check(app: Any, target: str, policy: Policy, endpoint: str | None = None) -> dict[str, Any]:
    """Check one model (a path, a ``.lfp`` or a Hub repo id) with ``app``'s index, store and crawler.

    Returns the JSON result: ``model``, ``identity``, ``outcome``, ``exit_code``, ``reasons``, ``warnings``,
    ``evidence`` and ``cached`` (whether the evidence came from the cache).

    Raises:
        InvalidRepoIdError: ``target`` is neither an existing path nor a ``namespace/name`` id.
        CrawlerError, FingerprintError: the model could not be read.
    """
    from crawler.records import valid_repo_id
    from fingerprint.sketch import sketch_of
    from lineage.errors import InvalidRepoIdError

    index = app.index
    state = index.db.stamp
    cache = CheckCache(app.settings.home)
    try:
        p = Path(target)
        hub_model = None
        if p.exists():
            identity = local_identity(p)
        elif valid_repo_id(target) == target:
            crawler = app.crawler(endpoint, progress=False)
            hub_model = crawler.info(target, "main")
            identity = f"hub:{target}@{hub_model.sha}"
        else:
            raise InvalidRepoIdError(target)
        evidence = cache.get(identity, state)
        cached = evidence is not None
        if evidence is None:
            if hub_model is None:
                sk, declared = sketch_of(p), ()
            else:
                sk, declared = crawler.fingerprint(hub_model).sketch, tuple(hub_model.base_models)
            evidence = _match_evidence(index, sk, declared)
            if hub_model is not None:
                evidence["card_license"] = hub_model.license
            cache.put(identity, state, evidence)
    finally:
        cache.close()
    # the matched entry's own family record (one indexed read), not every family of the graph
    key = evidence.get("base_key")
    rec = app.store.families_of([key]).get(key) if key else None
    evidence["family_license"] = rec.license if rec is not None else None
    outcome, reasons, warnings = apply_policy(evidence, policy)
    return {"model": target, "identity": identity, "outcome": outcome, "exit_code": EXIT[outcome], "reasons": reasons,
            "warnings": warnings, "evidence": evidence, "cached": cached}
