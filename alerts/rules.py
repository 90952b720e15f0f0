"""The licence rule table (``alerts/data/rules.json``, versioned data) and the judgement it drives.

A rule says what a base licence requires of a derivative: the same licence (or one of a list), staying
non-commercial, no shared derivatives at all, a name prefix, or attribution only. The judgement:

* a derivative of several bases (a merge) is judged against the **most restrictive** of them:
  no derivatives > share-alike / non-commercial > a required licence > a name rule > attribution;
* an adapter is judged against its base like a fine-tune (it is distributed to be applied to it), and a
  quantized copy likewise (a copy of the base's weights keeps the base's terms);
* an unknown or missing licence on a derivative of a base with a rule is ``unknown_license`` (the terms
  cannot be checked), never a conflict.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict

from alerts.licenses import License

Severity = Literal["info", "low", "medium", "high"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high")
NON_COMMERCIAL = ("cc-by-nc-4.0", "cc-by-nc-3.0", "cc-by-nc-2.0", "cc-by-nc-sa-4.0", "cc-by-nc-sa-3.0",
                  "cc-by-nc-nd-4.0", "cc-by-nc-nd-3.0")


class Rule(BaseModel):
    """One row of the rule table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    bases: tuple[str, ...]
    clause: str
    same_license: tuple[str, ...] | Literal["base"] | None = None
    non_commercial: bool = False
    no_derivatives: bool = False
    name_prefix: str | None = None
    attribution_only: bool = False

    @property
    def strictness(self) -> int:
        if self.no_derivatives:
            return 5
        if self.same_license == "base" or self.non_commercial:
            return 4
        if self.same_license:
            return 3
        if self.name_prefix:
            return 2
        return 1


class RuleTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    about: str
    rules: tuple[Rule, ...]


@functools.cache
def rules() -> RuleTable:
    """The shipped rule table (validated: an unknown field or a wrong type fails loudly at load)."""
    return RuleTable.model_validate(json.loads(resources.files("alerts").joinpath("data/rules.json").read_text("utf-8")))


def rule_for(key: str | None) -> Rule | None:
    if key is None:
        return None
    return next((r for r in rules().rules if key in r.bases), None)


def strictest(bases: list[License]) -> License | None:
    """The base whose licence constrains a derivative most (see module docstring); None if no base."""
    ranked = sorted(bases, key=lambda b: (-(r.strictness if (r := rule_for(b.key)) else 0), b.key or ""))
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class Judgement:
    """What the rule table says of one derivative licence against one base licence."""

    kind: Literal["license_conflict", "attribution_missing", "unknown_license"]
    severity: Severity
    rule: str
    clause: str
    reason: str


def judge(derivative: License, base: License, repo_name: str) -> list[Judgement]:
    """Judge ``derivative`` (the model's licence; ``repo_name`` the part after the namespace) against
    ``base`` (its family's licence)."""
    rule = rule_for(base.key)
    if rule is None:
        return []
    if rule.attribution_only:
        if not derivative.known:
            return [Judgement("unknown_license", "info", rule.id, rule.clause,
                              f"licence {derivative.label()} not recognised (base: {base.label()}, attribution only)")]
        return []
    if not derivative.known:
        return [Judgement("unknown_license", "low", rule.id, rule.clause,
                          f"licence {derivative.label()} not recognised; the base's {base.label()} has terms a "
                          "derivative must keep")]
    out: list[Judgement] = []
    allowed = (base.key,) if rule.same_license == "base" else (rule.same_license or ())
    if rule.no_derivatives:
        out.append(Judgement("license_conflict", "high", rule.id, rule.clause,
                             f"the base's {base.label()} allows no shared derivatives"))
    elif rule.non_commercial and derivative.key not in NON_COMMERCIAL:
        out.append(Judgement("license_conflict", "high", rule.id, rule.clause,
                             f"{derivative.label()} allows commercial use; the base's {base.label()} does not"))
    elif allowed and derivative.key not in allowed:
        out.append(Judgement("license_conflict", "high", rule.id, rule.clause,
                             f"licensed {derivative.label()}; the base's {base.label()} requires its own terms"))
    if rule.name_prefix and not repo_name.lower().startswith(rule.name_prefix):
        out.append(Judgement("attribution_missing", "low", rule.id, rule.clause,
                             f"name does not start with '{rule.name_prefix}' as the base's {base.label()} asks"))
    return out
