"""``lineage demo``'s guards that need no zoo build: it never builds a zoo into a directory that holds
something else."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lineage.cli import main


def test_a_non_empty_directory_that_is_no_zoo_is_refused_untouched(tmp_path: Path) -> None:
    target = tmp_path / "my-project"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["demo", "--zoo", str(target)])
    assert r.exit_code == 2 and "is not empty and holds no model zoo" in r.output and r.output.count("\n") == 1
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_the_docs_say_how_many_catalog_bases_the_demo_indexes() -> None:
    # the README once said four while the demo indexed three
    from lineage.demo import UNCATALOGUED
    from zoo.recipes import BASES

    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    n = words[len(BASES) - len(UNCATALOGUED)]
    root = Path(__file__).parents[2]
    assert f"fingerprints {n} catalog bases" in (root / "README.md").read_text("utf-8")
    assert f"fingerprints {n} \"catalog\" bases" in (root / "docs" / "getting-started.md").read_text("utf-8")


def test_the_hubsim_example_names_the_zoo_cache_the_demo_builds() -> None:
    r = CliRunner().invoke(main, ["hubsim", "--help"])
    assert "lineage hubsim ~/.cache/model-lineage/zoo/tiny-" in r.output and "~/.lineage/zoo" not in r.output
