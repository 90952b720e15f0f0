"""The manual stays true to the code: generated pages are current, every command has an example, every
setting and architecture file is documented, every internal link resolves, the site builds offline, and
the README stays a front page."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fingerprint.architectures import load_architectures
from lineage.cli import main
from lineage.settings import SETTINGS

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _gen() -> object:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen()


def _markdown() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", sorted(GEN.PAGES))  # type: ignore[attr-defined]
def test_generated_pages_are_current(page: str) -> None:
    text = GEN.PAGES[page]()  # type: ignore[attr-defined]
    assert (DOCS / page).read_text("utf-8") == text, f"docs/{page} is stale: run python docs/gen_reference.py"


def test_the_reference_goes_stale_when_a_commands_help_changes() -> None:
    # the check above is only worth something if a changed --help changes the page it compares
    cmd = main.commands["inspect"]
    before = GEN.cli_page()  # type: ignore[attr-defined]
    old = cmd.help
    try:
        cmd.help = (old or "") + "\n\nA sentence the reference does not have."
        assert GEN.cli_page() != before  # type: ignore[attr-defined]
    finally:
        cmd.help = old


def test_every_command_has_an_example_and_is_in_the_reference() -> None:
    reference = (DOCS / "reference" / "cli.md").read_text("utf-8")
    missing = []
    for path, cmd in GEN.commands(main):  # type: ignore[attr-defined]
        name = " ".join(path)
        if "Example:" not in (cmd.help or ""):
            missing.append(name)
        assert f"## lineage {name} " in reference, name
    assert "Example:" in (main.help or "")
    assert not missing, f"commands without an Example: in their help: {missing}"
    assert isinstance(main, click.Group)


def test_every_setting_and_architecture_file_is_documented() -> None:
    settings = (DOCS / "reference" / "settings.md").read_text("utf-8")
    for s in SETTINGS:
        assert f"`{s.env}`" in settings and s.help in settings, s.env
    table = (DOCS / "reference" / "architectures.md").read_text("utf-8")
    for name in load_architectures():
        assert f"`{name}.json`" in table, name
    for f in (ROOT / "fingerprint" / "architectures").glob("*.json"):
        assert f"`{f.name}`" in table, f.name


def test_every_internal_link_resolves() -> None:
    broken = []
    for page in _markdown():
        text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)  # code blocks hold no links
        for m in LINK.finditer(text):
            target = (m.group(1) or m.group(2)).split("#")[0]
            if not target or re.match(r"^[a-z]+:", target):
                continue  # an anchor on the same page, or an external URL
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_docs_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text("utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert pages and all(p in nav for p in pages), [p for p in pages if p not in nav]


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text("utf-8").splitlines()
    assert len(lines) <= 300, len(lines)
    # it starts with the two commands a new user runs: the main job and the tests
    first_block = "\n".join(lines[: next(i for i, x in enumerate(lines) if x.startswith("## ") and i > 0) + 12])
    assert "lineage demo" in first_block and "python -m pytest -q" in first_block
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert "python -m pytest -q\n" in ci or ci.rstrip().endswith("python -m pytest -q")


@pytest.mark.slow
def test_the_site_builds_offline_with_nothing_from_a_cdn(tmp_path: Path) -> None:
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    external = []
    for html in site.rglob("*.html"):
        text = html.read_text("utf-8")
        external += [f"{html.relative_to(site)}: {u}" for u in
                     re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="(https?://[^"]+)"', text)]
    assert not external, external[:10]
    assert (site / "reference" / "cli" / "index.html").exists()


def test_ci_installs_into_a_virtual_environment_of_its_own() -> None:
    # a fixed venv path in the shared temp dir let two CI runs on one machine overwrite each other's
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert "mktemp -d" in ci and "/tmp/lineage-ci-venv" not in ci
    assert ci.index("mktemp -d") < ci.index("python3 -m venv") < ci.index("pip install")
