"""The chaos crawl (bench/chaos.py) on the tiny zoo: a fifth of all requests fail, the graph does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import compare, crawl
from hubsim import Chaos
from zoo.manifest import Manifest

pytestmark = pytest.mark.slow


def test_a_crawl_through_20_percent_faults_gives_the_clean_graph(tiny_zoo: Manifest, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    clean = crawl(tiny_zoo.root, tmp_path / "clean", None)
    chaotic = crawl(tiny_zoo.root, tmp_path / "chaos", Chaos(rate=0.2, seed=3, hang_s=0.6), timeout=0.3)
    print(f"\nclean {clean.seconds:.0f} s, chaos {chaotic.seconds:.0f} s in {chaotic.passes} passes "
          f"({chaotic.stopped} stopped early), faults {dict(chaotic.faults)}")
    assert set(chaotic.faults) == {"429", "status", "timeout", "reset", "truncate"}
    assert sum(chaotic.faults.values()) >= 100
    assert len(clean.results) == len(tiny_zoo) + 2  # every zoo model and the two re-uploads
    assert compare(clean, chaotic) == []  # same graph, same results, same fingerprint bytes, none twice
