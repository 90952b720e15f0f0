"""crawler.fetch: the fingerprint unit of work is pure and picklable, so a worker process gives the same bytes."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crawler.crawl import Crawler, CrawlOptions, Runner
from crawler.fetch import FetchOptions, fingerprint_repo
from crawler.records import HubModel, Outcome
from fingerprint.canonical import open_model
from fingerprint.sketch import load, sketch_model
from hubsim import HubSim


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """Two spawned worker processes, shared by this module's tests (each starts an interpreter and torch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_HUB_OFFLINE", raising=False)  # the workers import huggingface_hub afresh, online
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as p:
            list(p.map(abs, [1, 2]))  # start both now, while the variable is unset
            yield p


def test_fingerprint_repo_in_a_process_pool_returns_the_in_process_bytes(
        hub: HubSim, models: dict[str, Path], tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    c = Crawler(CrawlOptions(endpoint=hub.endpoint, home=tmp_path), progress=False)
    repos = ["org/base", "alice/ft"]
    infos = [c.info(r, hub.repos[r].sha) for r in repos]
    assert pickle.loads(pickle.dumps(infos)) == infos  # what a pool sends
    here = [fingerprint_repo(m, c.fetch_options) for m in infos]
    served = {r: hub.served(r) for r in repos}
    there = list(pool.map(fingerprint_repo, infos, repeat(c.fetch_options)))
    for r, a, b in zip(repos, here, there):
        assert a.status == b.status == "fingerprinted", (a.reason, b.reason)
        assert a.data is not None and a.data == b.data
        assert a.bytes_read == b.bytes_read > 0
        assert hub.served(r) == 2 * served[r]  # the workers read the same ranges again, over HTTP
    # and they hold the fingerprint of the local checkpoint (its metadata differs: bytes read over HTTP)
    (tmp_path / "remote.lfp").write_bytes(here[0].data or b"")
    remote, local = load(tmp_path / "remote.lfp"), sketch_model(open_model(models["base"]))
    assert remote.keys == local.keys and np.array_equal(remote.embed, local.embed)
    assert all(np.array_equal(a, b) for a, b in zip(remote.q + remote.k, local.q + local.k, strict=True))
    c.close()


def _crawl(hub: HubSim, home: Path, runner: Runner | None) -> tuple[Any, ...]:
    """One crawl (in this process, or through ``runner`` three models at a time): what it recorded."""
    c = Crawler(CrawlOptions(endpoint=hub.endpoint, home=home), progress=False)
    placed: list[str] = []
    s = (c.run(place=lambda out: placed.append(out.status)) if runner is None
         else c.process(None, c.discover(), lambda out: placed.append(out.status), runner, batch=3))
    fps = sorted(p.name for p in (home / "fingerprints").glob("*.lfp"))
    out = ({r["id"]: (r["status"], r["bytes_read"]) for r in c.state.results()}, sorted(placed), dict(s.statuses),
           fps, [load(home / "fingerprints" / f).keys[:5] for f in fps])
    c.close()
    return out


def test_a_crawl_through_a_process_pool_records_what_an_in_process_crawl_records(
        hub: HubSim, tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    def runner(batch: list[HubModel], options: FetchOptions) -> list[Outcome]:
        return list(pool.map(fingerprint_repo, batch, repeat(options)))

    here = _crawl(hub, tmp_path / "here", None)
    there = _crawl(hub, tmp_path / "pool", runner)
    assert here == there
    assert here[2] == {"fingerprinted": 4, "gated": 1}


def test_a_sentence_transformers_repo_is_read_from_its_module_folder_over_http(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """An older sentence-transformers repo (``modules.json``, the BERT in ``0_Transformer/`` with a WordPiece
    ``vocab.txt``) is fingerprinted by ranged reads of the folder's files, as the local checkpoint is."""
    import json

    from hubdata import repo
    from tinymodels import V

    root = tmp_path / "st"
    (root / "1_Pooling").mkdir(parents=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    shutil.copytree(tiny_models["bert"], root / "0_Transformer")
    (root / "0_Transformer" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]"] + [f"w{i}" for i in range(2, V)]) + "\n")
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    with HubSim() as sim:
        repo(sim, "org/minibert", root, 1, pipeline_tag="sentence-similarity")
        c = Crawler(CrawlOptions(endpoint=sim.endpoint, home=tmp_path / "home"), progress=False)
        out = fingerprint_repo(c.info("org/minibert", sim.repos["org/minibert"].sha), c.fetch_options)
        c.close()
    assert out.status == "fingerprinted", out.reason
    (tmp_path / "remote.lfp").write_bytes(out.data or b"")
    remote, local = load(tmp_path / "remote.lfp"), sketch_model(open_model(root))
    assert remote.keys == local.keys and np.array_equal(remote.embed, local.embed)
    assert all(np.array_equal(a, b) for a, b in zip(remote.q + remote.k, local.q + local.k, strict=True))


def test_a_cards_from_scratch_claim_is_read_with_the_weights_and_found_false(
        models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fine-tune whose card text says "trained from scratch": the worker reads README.md at the same
    commit (bounded), the graph keeps the quote, and the alerts find the claim contradicted by the weights."""
    from hubdata import repo

    from alerts.findings import evaluate
    from lineage.app import open_app
    from lineage.settings import Settings

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    liar = tmp_path / "liar"
    shutil.copytree(models["ft"], liar)
    (liar / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Liar-7B\nLiar-7B was trained from scratch "
                                    "on our own corpus. <script>alert(1)</script>\n")
    with HubSim() as hub:
        repo(hub, "org/base", models["base"], 1)
        repo(hub, "eve/liar", liar, 2)
        settings = Settings.from_env({"LINEAGE_HOME": str(tmp_path / "home")})
        with open_app(settings, writer="test") as app:
            app.add_base("org/base", "base", hub.endpoint)
            app.crawl(app.crawler(hub.endpoint, progress=False))
            [m] = [x for x in app.store.get_models(["eve/liar"])]
            assert m.claims == "Liar-7B was trained from scratch on our own corpus."
            found = [f for f in evaluate(app.store) if f.kind == "scratch_claim"]
    assert [(f.model_id, f.base_id, f.severity) for f in found] == [("eve/liar", "org/base", "medium")]
    assert found[0].evidence["quote"] == m.claims
