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


def _split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ok = set(supported_names())
    fams = _all()
    return [f for f in fams if f["architecture"] in ok], [f for f in fams if f["architecture"] not in ok]


def catalog() -> list[dict[str, Any]]:
    """Every family we can fingerprint: ``family``, ``architecture``, ``license``, ``gated`` and its ``repos``."""
    return _split()[0]


def unreadable() -> list[dict[str, Any]]:
    """Catalog families whose architecture ``fingerprint/architectures`` has no data file for yet."""
    return _split()[1]


def select(families: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    """The named families (all readable ones when none is named).

    Raises:
        UnknownFamilyError: a name the catalog does not list.
        UnreadableFamilyError: a named family whose architecture we cannot read yet.
    """
    readable, later = _split()
    bad = sorted(f"{f['family']} ({f['architecture']})" for f in later if f["family"] in families)
    if bad:
        raise UnreadableFamilyError(bad)
    cat = [f for f in readable if not families or f["family"] in families]
    unknown = sorted(set(families) - {f["family"] for f in cat})
    if unknown:
        raise UnknownFamilyError(unknown)
    return cat
