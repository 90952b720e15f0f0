"""lineage.pipeline: real fingerprints of tiny models placed through the real pipeline, store calls counted.

The rules are tested on plain data in ``tests/lineage/test_placement.py``; here the pipeline gathers
their input from a real index and a real SQLite store and writes their answer, and a store that counts
its calls shows the cost of one placement does not grow with the graph.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from safetensors.numpy import load_file
from tinymodels import build_hf, perturb, save_state_dict, write_wordlevel_tokenizer

from crawler.records import HubModel, Outcome
from fingerprint.index import Index
from fingerprint.sketch import load, save, sketch_of
from graph.records import ModelRecord, SameWeights
from graph.sqlite import SqliteStore
from lineage.pipeline import Pipeline, Placement, subject_of_model

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


class CountingStore:
    """A real store that counts every method call made on it."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*a: Any, **kw: Any) -> Any:
            self.calls[name] += 1
            return attr(*a, **kw)

        return counted


def hub_model(repo_id: str, day: int, bases: tuple[str, ...] = ()) -> HubModel:
    return HubModel(key=f"k-{repo_id}", id=repo_id, sha="0" * 40, author=repo_id.split("/")[0],
                    created_at=T0 + timedelta(days=day), last_modified=None, private=False, gated=False,
                    license="apache-2.0", license_name=None, license_link=None, base_models=bases, base_keys=(),
                    relation=None, tags=(), pipeline_tag=None, library=None, architecture="llama", weights=(),
                    file_sizes={})


@pytest.fixture(scope="module")
def prints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fingerprints of a base, a fine-tune, its fine-tune and an unrelated base. Each generation moves
    every weight by 10% of its scale: the generations differ by more than the files' score resolution
    (at 2% they tie, and a tie is placed under the older model by design)."""
    root = tmp_path_factory.mktemp("chain")
    base = build_hf("llama", root / "base", seed=1)
    cfg = json.loads((base / "config.json").read_text())
    write_wordlevel_tokenizer(base, cfg["vocab_size"])
    ft = perturb(load_file(str(base / "model.safetensors")), 0.1, seed=2)
    dirs = {"base": base, "ft": save_state_dict(ft, cfg, root / "ft", tokenizer_from=base),
            "ft2": save_state_dict(perturb(ft, 0.1, seed=3), cfg, root / "ft2", tokenizer_from=base),
            "other": build_hf("llama", root / "other", seed=9)}
    write_wordlevel_tokenizer(dirs["other"], cfg["vocab_size"])
    return {name: save(sketch_of(d), root / f"{name}.lfp") for name, d in dirs.items()}


@pytest.fixture()
def pipe(tmp_path: Path) -> Iterator[tuple[Pipeline, CountingStore]]:
    store = SqliteStore(":memory:")
    store.ensure_schema()
    counting = CountingStore(store)
    yield Pipeline(counting, Index(tmp_path / "index")), counting  # type: ignore[arg-type]
    store.close()


def crawled(p: Pipeline, repo_id: str, day: int, fp: Path, bases: tuple[str, ...] = ()) -> None:
    p(Outcome(hub_model(repo_id, day, bases), "fingerprinted", fingerprint=fp, sketch=load(fp)))


def parent_of(p: Pipeline, repo_id: str) -> str | None:
    edges = p.store.parent_edges(f"k-{repo_id}")
    return p.store.labels([edges[0].dst])[edges[0].dst][0] if edges else None


def test_a_chain_is_placed_generation_by_generation(pipe: tuple[Pipeline, CountingStore],
                                                    prints: dict[str, Path]) -> None:
    p, _ = pipe
    p.register_base(hub_model("org/base", 0), str(prints["base"]), "llama")
    crawled(p, "alice/ft", 1, prints["ft"])
    crawled(p, "bob/ft2", 2, prints["ft2"])
    crawled(p, "carol/other", 3, prints["other"])
    assert parent_of(p, "alice/ft") == "org/base" and parent_of(p, "bob/ft2") == "alice/ft"
    assert p.store.family_of("k-bob/ft2").name == "llama"
    assert parent_of(p, "carol/other") is None and p.store.get_models(["k-carol/other"])[0].candidate_family
    # every model is in the index under its family, with what placing it again needs
    assert p.index.entries["bob/ft2"].family == "llama" and p.index.entries["bob/ft2"].facts.key == "k-bob/ft2"


def test_a_fine_tune_crawled_before_its_parent_is_placed_when_the_parent_arrives(
        pipe: tuple[Pipeline, CountingStore], prints: dict[str, Path]) -> None:
    p, _ = pipe
    p.register_base(hub_model("org/base", 0), str(prints["base"]), "llama")
    crawled(p, "bob/ft2", 2, prints["ft2"])  # published after alice/ft, crawled first
    assert parent_of(p, "bob/ft2") == "org/base"
    crawled(p, "alice/ft", 1, prints["ft"])
    assert parent_of(p, "bob/ft2") == "alice/ft" and p.revisited >= 1


def test_a_model_placed_again_with_no_family_leaves_its_family(pipe: tuple[Pipeline, CountingStore],
                                                                prints: dict[str, Path]) -> None:
    """Placed, then placed again where nothing matches (an older model arrived, a repair): it and its
    exact copy leave the family; no membership is left behind."""
    p, _ = pipe
    p.register_base(hub_model("org/base", 0), str(prints["base"]), "llama")
    crawled(p, "alice/ft", 1, prints["ft"])
    p.store.upsert_models([ModelRecord(key="k-mirror/ft", id="mirror/ft")], 1)
    p.store.upsert_same_weights([SameWeights("k-mirror/ft", "k-alice/ft", "ab" * 32)], 1)
    crawled(p, "alice/ft", 1, prints["ft"])  # placed again: the copy follows it into the family
    assert p.store.family_of("k-mirror/ft").name == "llama"
    p._apply(subject_of_model(hub_model("alice/ft", 1)), Placement(None, None, None, None, "inconclusive"))
    assert p.store.family_of("k-alice/ft") is None and p.store.family_of("k-mirror/ft") is None
    assert parent_of(p, "alice/ft") is None and p.store.family_members("llama") == ["k-org/base"]


def test_one_placement_costs_a_bounded_number_of_store_calls(prints: dict[str, Path], tmp_path: Path) -> None:
    def cost(extra: int) -> Counter[str]:
        """Store calls to place bob/ft2 under alice/ft, in a graph that also holds ``extra`` other models."""
        store = SqliteStore(":memory:")
        store.ensure_schema()
        counting = CountingStore(store)
        p = Pipeline(counting, Index(tmp_path / f"index-{extra}"))  # type: ignore[arg-type]
        p.register_base(hub_model("org/base", 0), str(prints["base"]), "llama")
        crawled(p, "alice/ft", 1, prints["ft"])
        store.upsert_models([ModelRecord(key=f"k-x/{i}", id=f"x/{i}") for i in range(extra)], 1)
        counting.calls.clear()
        crawled(p, "bob/ft2", 2, prints["ft2"])
        assert parent_of(p, "bob/ft2") == "alice/ft"
        store.close()
        return counting.calls

    small, big = cost(0), cost(2000)
    assert big == small  # the cost does not grow with the graph
    # a small constant: the node and its edges written, one parent lookup per hop walked
    assert sum(small.values()) <= 20 and small["reach"] <= 4, small
