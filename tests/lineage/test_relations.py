"""lineage.relations and lineage.report through the CLI: `lineage relation`, `lineage compare --report`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from lineage.cli import main
from tests.tinymodels import build_hf, llama_base, llama_config, perturb, save_state_dict, write_wordlevel_tokenizer
from zoo import merges

EVIL = '<img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("relations")
    base, cfg, sd = llama_base(root / "base")
    a, b = perturb(sd, 0.05, 1), perturb(sd, 0.2, 2)
    out = {"base": base, "a": save_state_dict(a, cfg, root / "a", base), "b": save_state_dict(b, cfg, root / "b", base)}
    out["merged"] = save_state_dict(merges.linear([a, b], [0.25, 0.75]), cfg, root / "merged", base)
    # a hostile directory name and card: both must come out as text in every page and message
    evil = root / f"x{EVIL.replace('/', '')}"
    shutil.copytree(out["a"], evil)
    (evil / "README.md").write_text(f"---\nbase_model: {json.dumps(EVIL)}\nbase_model_relation: finetune\n---\n")
    out["evil"] = evil
    other = build_hf("llama", root / "other", seed=5, config=llama_config())
    write_wordlevel_tokenizer(other, 512)
    out["other"] = other
    return out


def test_relation_json_types_the_pair_and_shows_the_card_beside(fam: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["relation", str(fam["evil"]), str(fam["base"]), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["relation"] == "finetune" and doc["recipe"] is None
    assert doc["declared"] == {"base_model": EVIL, "base_model_relation": "finetune"}


def test_relation_of_a_merge_gives_its_weights(fam: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["relation", str(fam["merged"]), str(fam["a"]), str(fam["b"])])
    assert r.exit_code == 0, r.output
    assert "relation   merge" in r.output
    assert re.search(r"merge      linear: weights 0\.25\d, 0\.75\d", r.output), r.output


def test_an_unrelated_pair_is_refused_in_one_line(fam: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["relation", str(fam["other"]), str(fam["base"])])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "share no weights" in r.output


def test_compare_report_holds_the_json_facts_and_fetches_nothing(fam: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "evidence.html"
    r = CliRunner().invoke(main, ["compare", str(fam["base"]), str(fam["evil"]), "--report", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["verdict"] == "derived" and doc["relation"]["relation"] == "finetune" and doc["report"] == str(out)
    html = out.read_text()
    facts = json.loads(re.search(r'<script type="application/json" id="facts">(.*?)</script>', html, re.S)
                       .group(1).replace("<\\/", "</"))
    assert facts["compare"]["score"] == doc["score"] and facts["relation"] == doc["relation"]
    assert "default-src 'none'" in html and "http" not in html.split("</style>", 1)[1].split('id="facts"')[0]
    assert EVIL not in html.split('id="facts"')[0] and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("data:image/png;base64,") == 2  # both fingerprint pictures


def test_relation_report_draws_the_merge(fam: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merge.html"
    r = CliRunner().invoke(main, ["relation", str(fam["merged"]), str(fam["a"]), str(fam["b"]),
                                  "--base", str(fam["base"]), "--report", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "Merge recipe: linear" in html and "<svg" in html
    weights = [float(x) for x in re.findall(r"<td class=n>(0\.\d{4})</td>", html.split("Merge recipe")[1])[:2]]
    assert np.allclose(weights, [0.25, 0.75], atol=0.02)


def test_graph_and_fingerprint_name_the_same_relations() -> None:
    from fingerprint.relation import RELATIONS
    from graph.records import TYPED_RELATIONS

    assert (*RELATIONS, "untyped") == TYPED_RELATIONS  # graph may not import fingerprint: two lists, kept equal


def test_type_edges_types_what_the_crawl_placed_over_http_once(hub: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A crawl of the stand-in places two fine-tunes; `lineage type-edges` reads both ends of each edge by
    ranged requests and stores the type; a second pass has nothing left; `derivatives --relation` filters."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = {"LINEAGE_HOME": str(tmp_path / "home"), "LINEAGE_HUB_ENDPOINT": hub.endpoint}
    run = CliRunner().invoke
    assert run(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint], env=env).exit_code == 0
    assert run(main, ["crawl", "--endpoint", hub.endpoint, "--json"], env=env).exit_code == 0
    r = run(main, ["type-edges", "--json"], env=env)
    assert r.exit_code == 0, r.output
    first = json.loads(r.output)
    assert first.pop("bytes_read") > 0 and first == {"typed": 2, "untyped": 0, "later": 0}
    again = run(main, ["type-edges", "--json"], env=env)
    assert json.loads(again.output) == {"typed": 0, "untyped": 0, "later": 0, "bytes_read": 0}  # nothing left, nothing read
    doc = json.loads(run(main, ["derivatives", "org/base", "--json"], env=env).output)
    assert {d["id"]: d["relation"] for d in doc["derivatives"]} == {"alice/ft": "finetune", "bob/ft2": "finetune"}
    only = json.loads(run(main, ["derivatives", "org/base", "--relation", "quantized", "--json"], env=env).output)
    assert only["derivatives"] == [] and only["relation"] == "quantized"


@pytest.mark.slow
def test_type_edges_killed_mid_pass_resumes_without_loss(hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL `lineage type-edges` once it has typed one edge: the typed edge stays, the next pass types
    only the rest, and the graph ends as an uninterrupted pass leaves it."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    run = CliRunner().invoke
    homes = {h: tmp_path / h for h in ("ref", "killed")}
    for home in homes.values():
        env = {"LINEAGE_HOME": str(home)}
        assert run(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint], env=env).exit_code == 0
        assert run(main, ["crawl", "--endpoint", hub.endpoint, "--json"], env=env).exit_code == 0
    assert run(main, ["type-edges", "--json"], env={"LINEAGE_HOME": str(homes["ref"]), "LINEAGE_HUB_ENDPOINT": hub.endpoint}).exit_code == 0

    def typed(home: Path) -> dict[tuple[str, str], str | None]:
        with sqlite3.connect(home / "graph.sqlite") as con:
            return {(s, d): r for s, d, r in con.execute("SELECT src, dst, relation FROM derived_from")}

    env = {**os.environ, "LINEAGE_HOME": str(homes["killed"]), "LINEAGE_HUB_ENDPOINT": hub.endpoint,
           "PYTHONPATH": str(Path(__file__).parents[2])}
    hub.delay_s = 0.05  # every weight read is slow: the pass is mid-way when the first edge is stored
    p = subprocess.Popen([sys.executable, "-m", "lineage", "type-edges"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not any(typed(homes["killed"]).values()):
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    hub.delay_s = 0.0
    at_kill = {k: v for k, v in typed(homes["killed"]).items() if v}
    assert len(at_kill) == 1, at_kill  # killed after the first edge, before the second
    r = run(main, ["type-edges", "--json"], env={"LINEAGE_HOME": str(homes["killed"]), "LINEAGE_HUB_ENDPOINT": hub.endpoint})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["typed"] == 1  # only what was left
    assert typed(homes["killed"]) == typed(homes["ref"]) and all(typed(homes["ref"]).values())
