"""``lineage web --get``: one page or its JSON twin on stdout, answered in process (no server, no socket)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lineage.cli import main


def run(*args: str, code: int = 0) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


def test_get_prints_a_pages_json_twin_the_same_as_the_json_path(loaded: None) -> None:
    twin = json.loads(run("web", "--get", "/model/bob/sft3.json"))
    assert twin["model"]["id"] == "bob/sft3" and [p["parent"] for p in twin["detected_parents"]] == ["bob/sft2"]
    assert json.loads(run("web", "--get", "/model/bob/sft3", "--json")) == twin  # Accept: application/json
    fam = json.loads(run("web", "--get", "/family/llama-x.json?focus=alice/sft"))
    assert fam["family"] == "llama-x" and fam["focus"] == "alice/sft" and fam["root"] == "meta/base"


def test_get_prints_the_html_page(loaded: None) -> None:
    page = run("web", "--get", "/model/bob/sft3")
    assert page.lstrip().lower().startswith("<!doctype html>") and "bob/sft3" in page


def test_get_of_a_missing_page_is_one_error_line(loaded: None) -> None:
    r = CliRunner().invoke(main, ["web", "--get", "/model/nobody/none.json"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("Error: GET /model/nobody/none.json answered 404") and r.stderr.count("\n") == 1
    r = CliRunner().invoke(main, ["web", "--get", "model/x"])
    assert r.exit_code == 2 and "starts with '/'" in r.stderr
