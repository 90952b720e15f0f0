"""Licence knowledge: Hub licence ids mapped to canonical keys of the ScanCode LicenseDB.

The LicenseDB ships inside ``license-expression`` (``data/scancode-licensedb-index.json``: key, category,
SPDX id). A Hub id that is a LicenseDB key (``apache-2.0``, ``mit``, ``cc-by-nc-4.0``) or an SPDX id
needs nothing more; the few that are not (``llama2``, ``gemma``...) and the ``license_name`` values that
accompany ``license: other`` (``qwen``...) are mapped in ``alerts/data/hub_licenses.json``, ours and
versioned. Everything from a card is hostile: it is bounded and stripped of control characters before it
is looked up or shown.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import license_expression

MAX_FIELD = 200  # characters kept of a card's licence fields (a Hub id is at most ~40)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(value: object, limit: int = MAX_FIELD) -> str | None:
    """A card string made safe to keep: control and bidi characters removed, whitespace folded, cut to
    ``limit`` characters (an ellipsis marks the cut); None for a missing or empty value."""
    if value is None:
        return None
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class License:
    """A model's licence as declared and as understood.

    Attributes:
        declared: the card's ``license`` (cleaned), e.g. ``llama2`` or ``other``.
        name: ``license_name`` for ``other`` (cleaned).
        key: the ScanCode LicenseDB key, or None when we cannot tell what it is.
        category: the LicenseDB category (``Permissive``, ``Proprietary Free``, ``Source-available``...).
        spdx: the SPDX id (or ``LicenseRef-scancode-…``).
    """

    declared: str | None
    name: str | None
    key: str | None
    category: str | None
    spdx: str | None

    @property
    def known(self) -> bool:
        return self.key is not None

    def label(self) -> str:
        if self.declared == "other" and self.name:
            return f"other ({self.name})"
        return self.declared or "none"


@functools.cache
def _licensedb() -> dict[str, dict[str, Any]]:
    path = resources.files(license_expression).joinpath("data/scancode-licensedb-index.json")
    return {e["license_key"]: e for e in json.loads(path.read_text("utf-8"))}


@functools.cache
def _hub_table() -> dict[str, Any]:
    return dict(json.loads(resources.files("alerts").joinpath("data/hub_licenses.json").read_text("utf-8")))


@functools.cache
def _by_spdx() -> dict[str, str]:
    out: dict[str, str] = {}
    for key, e in _licensedb().items():
        for s in [e.get("spdx_license_key"), *(e.get("other_spdx_license_keys") or [])]:
            if s:
                out.setdefault(str(s).lower(), key)
    return out


def lookup(key: str) -> tuple[str | None, str | None]:
    """(category, SPDX id) of a canonical key, from the LicenseDB or, for the few it lacks, our table."""
    e = _licensedb().get(key)
    if e is not None:
        return e.get("category"), e.get("spdx_license_key")
    ours = _hub_table()["not_in_licensedb"].get(key)
    return (ours["category"], None) if ours else (None, None)


def _key_of(ident: str, table: dict[str, str]) -> str | None:
    s = ident.strip().lower()
    if s in table:
        return table[s]
    if s in _licensedb():
        return s
    return _by_spdx().get(s)


def canonical(license: object, license_name: object = None, license_link: object = None) -> License:
    """Understand a card's ``license`` (with ``license_name``/``license_link`` when it is ``other``).

    ``unknown``, ``other`` without a recognisable name, and anything unmapped get ``key=None``.
    """
    declared, name = clean(license, 64), clean(license_name)
    key: str | None = None
    t = _hub_table()
    if declared and declared.lower() not in ("other", "unknown"):
        key = _key_of(declared, t["hub_to_key"])
    elif declared and declared.lower() == "other":
        for cand in (name, clean(license_link)):
            if cand:
                slug = re.sub(r"[^a-z0-9.+-]+", "-", cand.lower()).strip("-")
                key = _key_of(slug, t["other_aliases"]) or next(
                    (v for k, v in t["other_aliases"].items() if slug.startswith(k)), None)
                if key:
                    break
    category, spdx = lookup(key) if key else (None, None)
    return License(declared, name, key, category, spdx)
