"""lineage.repair: a home two crawls wrote at once is placed again into the graph one crawl writes.

The corruption is made the way a user made it (issue 37: two ``lineage demo`` started 3 s apart, before
the writer lock and the SQLite index): two applications open the same home, each with its own copy of
the index, and crawl the same stand-in in turns, a few models each. Each places models against an
index that lacks the other's, and one's copy is lost (then, the last to save its whole index won). The
repaired home must equal a home one crawl wrote: every edge, family, candidate flag and copy, the index
entries and the alerts' findings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from crawlorder import tree

from zoo.manifest import Manifest

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    return {"LINEAGE_HOME": str(home), "LINEAGE_DISABLE_PROGRESS_BARS": "1", "LINEAGE_WORKERS": "inline"}


def _two_writers(zoo: Manifest, home: Path, turn: int = 4) -> None:
    """Two apps on one home crawl the stand-in in turns of ``turn`` models (module docstring)."""
    from fingerprint.index import Index
    from hubsim import HubSim
    from lineage.app import open_app
    from lineage.demo import GATED, OPERATOR_TOKEN, UNCATALOGUED
    from lineage.settings import Settings
    from lineage.zoohub import EPOCH, zoo_repos

    catalog = [m for m in zoo if m.category == "base" and m.name not in UNCATALOGUED]
    s = Settings.from_env(_env(home))
    with HubSim(accepted_tokens=frozenset({OPERATOR_TOKEN})) as hub:
        for r in zoo_repos(zoo, EPOCH, 2, GATED):
            hub.add(r)
        with open_app(s) as first:
            for m in catalog:
                first.add_base(m.id, m.name, hub.endpoint, token=OPERATOR_TOKEN)
        with open_app(s) as a, open_app(s) as b:  # both read the index as the bootstrap left it
            shutil.copytree(home / "index", home.parent / "index-b")  # b's copy, lost after the crawl
            a._index, b._index = Index(home / "index"), Index(home.parent / "index-b")
            ca = a.crawler(hub.endpoint, progress=False, state_label="order")
            cb = b.crawler(hub.endpoint, progress=False, state_label="order")
            while True:
                done = sum(a.crawl(ca, turn).statuses.values()) + sum(b.crawl(cb, turn).statuses.values())
                if not done:
                    break


def _home(home: Path) -> dict[str, Any]:
    """What a user sees of a home: the tree, the index entries and families, the alerts' findings."""
    from alerts.findings import evaluate
    from fingerprint.index import Index
    from graph.sqlite import SqliteStore

    store = SqliteStore(home / "graph.sqlite")
    try:
        dump, findings = store.dump(), sorted(f.dedup_key for f in evaluate(store))
    finally:
        store.close()
    entries = Index(home / "index").entries
    return {**tree(dump), "index": sorted((e.name, e.family, e.facts.hidden) for e in entries.values()),
            "findings": findings}


def test_a_home_two_crawls_corrupted_is_repaired_to_the_graph_one_crawl_writes(
        one_crawl: dict[str, Any], tiny_zoo: Manifest, tmp_path: Path) -> None:
    from crawler.state import placed_outcomes
    from lineage.app import open_app
    from lineage.cli import main
    from lineage.repair import REPAIR_MARK, RepairPendingError, mark, rebuild_index
    from lineage.settings import Settings

    clean = _home(one_crawl["home"])
    home = tmp_path / "two"
    _two_writers(tiny_zoo, home)
    broken = _home(home)
    # the corruption is real, and of the kind reported: index entries lost, edges and alerts missing,
    # more candidate families than there are
    assert len(broken["index"]) < len(clean["index"]) and len(broken["derived"]) < len(clean["derived"])
    assert len(broken["candidates"]) > len(clean["candidates"]) and broken["findings"] != clean["findings"]

    # a repair killed after it rebuilt the index leaves its mark: crawls refuse to run until one finishes
    mark(home)
    rebuild_index(home / "index", None)
    with open_app(Settings.from_env(_env(home))) as app, pytest.raises(RepairPendingError):
        app.crawl(app.crawler("http://127.0.0.1:9", progress=False))
    r = CliRunner().invoke(main, ["repair", "--json"], env=_env(home))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    repaired = _home(home)
    for part in clean:
        assert repaired[part] == clean[part], (part, sorted(set(map(str, repaired[part])) ^ set(map(str, clean[part])))[:8])
    fingerprinted = sum(1 for o in placed_outcomes(home / "crawl" / "crawl.sqlite") if o.status == "fingerprinted")
    assert (doc["models"], doc["copies"]) == (fingerprinted, len(clean["copies"]))
    assert doc["moved"] > 0 and doc["dropped"] == [] and doc["after"]["DERIVED_FROM"] == len(clean["derived"])
    assert not (home / REPAIR_MARK).exists()


def test_repair_of_a_missing_home_is_one_line(tmp_path: Path) -> None:
    from lineage.cli import main

    r = CliRunner().invoke(main, ["repair"], env=_env(tmp_path / "nope"))
    assert r.exit_code == 2 and r.output.startswith("Error: LINEAGE_HOME=") and len(r.output.splitlines()) == 1
