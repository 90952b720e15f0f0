"""The shipped catalog of well-known base families (``lineage/data/catalog.json``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from fingerprint.architectures import supported_names
from lineage.errors import UnknownFamilyError, UnreadableFamilyError


def _all() -> list[dict[str, Any]]:
    data = json.loads(resources.files("lineage").joinpath("data/catalog.json").read_text("utf-8"))
    return list(data["families"])


def catalog() -> list[dict[str, Any]]:
    """Every family we can fingerprint: ``family``, ``architecture``, ``license``, ``gated`` and its ``repos``."""
    ok = set(supported_names())
    return [f for f in _all() if f["architecture"] in ok]


def unreadable() -> list[dict[str, Any]]:
    """Catalog families whose architecture ``fingerprint/architectures`` has no data file for yet."""
    ok = set(supported_names())
    return [f for f in _all() if f["architecture"] not in ok]


def select(families: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    """The named families (all readable ones when none is named).

    Raises:
        UnknownFamilyError: a name the catalog does not list.
        UnreadableFamilyError: a named family whose architecture we cannot read yet.
    """
    bad = sorted(f"{f['family']} ({f['architecture']})" for f in unreadable() if f["family"] in families)
    if bad:
        raise UnreadableFamilyError(bad)
    cat = [f for f in catalog() if not families or f["family"] in families]
    unknown = sorted(set(families) - {f["family"] for f in cat})
    if unknown:
        raise UnknownFamilyError(unknown)
    return cat
