"""The chaos crawl (bench/chaos.py) on two families of the tiny zoo (the gated base, its re-uploads,
attacks and quantized copies, and a base the catalog leaves out): a fifth of all requests fail, the graph
does not. ``python -m bench.chaos`` runs the whole small zoo (README)."""

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
    fams = ("llama-a", "neox-e")
    clean = crawl(tiny_zoo.root, tmp_path / "clean", None, families=fams)
    chaotic = crawl(tiny_zoo.root, tmp_path / "chaos", Chaos(rate=0.2, seed=3, hang_s=0.6), timeout=0.3, families=fams)
    print(f"\nclean {clean.seconds:.0f} s, chaos {chaotic.seconds:.0f} s in {chaotic.passes} passes "
          f"({chaotic.stopped} stopped early), faults {dict(chaotic.faults)}")
    assert set(chaotic.faults) == {"429", "status", "timeout", "reset", "truncate"}
    assert sum(chaotic.faults.values()) >= 40
    served = [m for m in tiny_zoo if set(m.roots) <= set(fams)]
    assert len(clean.results) == len(served) + 2  # every served model and the two re-uploads
    assert compare(clean, chaotic) == []  # same graph, same results, same fingerprint bytes, none twice
