"""The README stays true: generated tables and documented settings."""

from __future__ import annotations

from pathlib import Path

from fingerprint.architectures import architecture_table
from lineage.settings import SETTINGS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_architecture_table_in_sync() -> None:
    assert architecture_table() in README


def test_every_setting_documented() -> None:
    for s in SETTINGS:
        assert f"`{s.env}`" in README and s.help in README
