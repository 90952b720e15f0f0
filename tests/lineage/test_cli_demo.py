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
