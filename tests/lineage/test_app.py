"""lineage.app: the composition root's jobs that span packages (rematch when a base family joins), and the
one fingerprint store the crawler and the index share."""

from __future__ import annotations

import os
from pathlib import Path

from hubdata import repo

from hubsim import HubSim
from lineage.app import open_app
from lineage.settings import Settings


def parents(app: object) -> dict[str, str]:
    store = app.store  # type: ignore[attr-defined]
    labels = store.labels([e.src for e in store.detected_edges(None)] + [e.dst for e in store.detected_edges(None)])
    return {labels[e.src][0]: labels[e.dst][0] for e in store.detected_edges(None)}


def test_rematch_places_what_matched_nothing_once_its_base_joins(models: dict[str, Path], tmp_path: Path) -> None:
    """Rematch replays the crawl's fingerprints from the shared store: here an fsspec URL, so the home
    holds no fingerprint file at all; with the default store each file is written once, in the index."""
    hub = HubSim()
    hub.start()
    repo(hub, "alice/ft", models["ft"], 2)
    repo(hub, "carol/other", models["other"], 4)
    objects = tmp_path / "objects"
    env = {**os.environ, "LINEAGE_HOME": str(tmp_path / "late"), "LINEAGE_FINGERPRINT_STORE": f"file://{objects}"}
    with open_app(Settings.from_env(env)) as app:
        c = app.crawler(hub.endpoint, progress=False)
        app.crawl(c)  # the fine-tune's base is not on the Hub yet: it matches nothing
        assert parents(app) == {}
        repo(hub, "org/base", models["base"], 1)  # the base is published (or made public) later
        app.add_base("org/base", "base", endpoint=hub.endpoint)
        doc = app.rematch(c)
        assert doc["rematched"] == 2 and "base" in doc["new"], doc  # the first rematch: all that is unplaced
        late = parents(app)
        assert late == {"alice/ft": "org/base"}  # and carol's independent model stays unplaced
        assert app.rematch(c)["skipped"] == "no family joined the index"
    assert not list((tmp_path / "late").rglob("*.lfp"))
    assert len(list((objects / "fingerprints").glob("*.lfp"))) == 3  # base, ft, other: once each
    env = {**os.environ, "LINEAGE_HOME": str(tmp_path / "early")}
    env.pop("LINEAGE_FINGERPRINT_STORE", None)
    with open_app(Settings.from_env(env)) as app:  # the base indexed before the crawl
        app.add_base("org/base", "base", endpoint=hub.endpoint)
        app.crawl(app.crawler(hub.endpoint, progress=False))
        early = parents(app)
        entries = {e.file for e in app.index.entries.values()}
    hub.stop()
    assert late == early
    assert not (tmp_path / "early" / "crawl" / "fingerprints").exists()
    stored = {f"fingerprints/{p.name}" for p in (tmp_path / "early" / "index" / "fingerprints").glob("*.lfp")}
    assert stored == entries and len(stored) == 3  # every entry's file (the unplaced model's too), once


def test_comparing_two_checkpoints_imports_neither_torch_nor_the_crawler(models: dict[str, Path]) -> None:
    # `lineage compare` of two tiny models took 12.5 s for a 0.16 s comparison: lineage.app imported torch,
    # the crawler and the alerts at start-up, though two checkpoints compare through numpy alone
    import subprocess
    import sys

    code = ("import sys; from lineage.app import compare_paths; r = compare_paths(sys.argv[1], sys.argv[2]); "
            "print(r.verdict, sorted(m for m in ('torch', 'crawler.crawl', 'alerts.delivery', 'huggingface_hub') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(models["base"]), str(models["ft"])], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[2], env={**os.environ})
    assert out.stdout.strip() == "derived []", out.stdout + out.stderr


def test_a_process_keeps_one_index_and_catches_up_with_other_writers(tmp_path: Path) -> None:
    """Every app of a process (each service job opens one) shares one open index, brought up to date with
    what another process added since, without reading it again whole."""
    import shutil

    from fingerprint.index import Index
    from fingerprint.sketch import load

    golden = Path(__file__).parents[1] / "data" / "golden-tiny-llama.lfp"
    s = Settings.from_env({"LINEAGE_HOME": str(tmp_path)})
    Index(tmp_path / "index").add(golden, "org/a", "fam")
    with open_app(s) as app:
        first = app.index
        assert list(first.entries) == ["org/a"] and first.db.rows().live.sum() == 1
    copy = tmp_path / "b.lfp"
    shutil.copyfile(golden, copy)
    Index(tmp_path / "index").add(copy, "org/b", "fam")  # another process's writer
    with open_app(s) as app:
        assert app.index is first
        assert first.db.rows().live.sum() == 2
        assert sorted(n for n, _, _ in first.screen(load(golden), 5)) == ["org/a", "org/b"]
