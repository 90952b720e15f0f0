"""Licence questions the web UI and the CLI ask of a derivative, answered once, here.

The graph stores licences as the cards give them (``graph.queries`` returns them as they are); whether a
model's licence is its family's is policy, so it is decided by the same licence knowledge
(:func:`alerts.licenses.canonical`) that the alert rules use.
"""

from __future__ import annotations

from typing import Any

from alerts.licenses import canonical
from graph import queries
from graph.store import LineageStore


def differs(license: str | None, family_license: str | None) -> bool:
    """Whether a model's licence is not its family's.

    ``family_license`` None (no family, or a family without a licence): nothing to differ from. Both
    recognised: different LicenseDB keys (``Apache-2.0`` and ``apache-2.0`` are one licence). Either one
    unrecognised: the card strings differ (nothing better can be said of text we cannot read).
    """
    if family_license is None:
        return False
    a, b = canonical(license), canonical(family_license)
    if a.known and b.known:
        return a.key != b.key
    return license != family_license


def suspects(store: LineageStore, family: str | None = None) -> list[dict[str, Any]]:
    """:func:`graph.queries.undeclared`, each row with ``license_differs`` (:func:`differs` of the model's
    licence and its family root's), a cue for the licence alert."""
    rows = queries.undeclared(store, family)
    for r in rows:
        r["license_differs"] = differs(r["license"], r["family_license"])
    return rows
