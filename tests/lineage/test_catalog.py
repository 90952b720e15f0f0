"""lineage.catalog: the shipped catalog of base families is well-formed and readable."""

from __future__ import annotations

from crawler.records import valid_repo_id
from fingerprint.architectures import resolve_architecture
from lineage import catalog


def test_every_family_is_well_formed_and_every_repo_listed_once() -> None:
    fams = catalog.catalog() + catalog.unreadable()
    assert len({f["family"] for f in fams}) == len(fams)
    repos = [r for f in fams for r in f["repos"]]
    assert len(set(repos)) == len(repos) and all(valid_repo_id(r) == r for r in repos)
    assert all(isinstance(f["license"], str) and f["license"] and isinstance(f["gated"], bool) for f in fams)


def test_every_readable_family_resolves_to_an_architecture_file() -> None:
    """The architecture a family lists is one a config.json naming it opens with (a wrapper resolves to its text model)."""
    for f in catalog.catalog():
        arch, _, _ = resolve_architecture({"architectures": [f["architecture"]]})
        assert arch.format == "hf", f["family"]
    assert [f["family"] for f in catalog.unreadable()] == ["mamba"]  # a pure state-space model has no attention to read
