"""The shipped catalog of well-known base families (``lineage/data/catalog.json``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from lineage.errors import UnknownFamilyError


def catalog() -> list[dict[str, Any]]:
    """Every family: ``family``, ``license``, ``gated`` and its ``repos``."""
    data = json.loads(resources.files("lineage").joinpath("data/catalog.json").read_text("utf-8"))
    return list(data["families"])


def select(families: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
    """The named families (all when none is named).

    Raises:
        UnknownFamilyError: a name the catalog does not list.
    """
    cat = [f for f in catalog() if not families or f["family"] in families]
    unknown = sorted(set(families) - {f["family"] for f in cat})
    if unknown:
        raise UnknownFamilyError(unknown)
    return cat
