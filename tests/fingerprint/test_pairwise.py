"""The streamed float32 pairwise path (fingerprint.similarity.pairwise) against the float64 sketch path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fingerprint.canonical import CanonicalModel, open_model
from fingerprint.similarity import pairwise
from fingerprint.similarity.lineage import compare_fingerprints, compare_lineage
from fingerprint.sketch import Sketch, sketch_model

PAIRS = [("llama-a", "llama-a-sft"), ("llama-a", "llama-b"), ("llama-a", "llama-a-prune-depth"),
         ("llama-a-sft-fold_and_rotate", "llama-a"), ("llama-a", "llama-a-prune-width"), ("qwen2-f", "llama-a"),
         ("llama-b", "llama-b-prune-magnitude")]  # zeroed rows: pair scales 0, not 0 · ∞


def exact_sketch(m: CanonicalModel) -> Sketch:
    """Every shared token and exact float64 factors, with no stored-precision rounding: the reference."""
    return sketch_model(m, rank=None, n_anchors=None, stored_precision=False)


@pytest.fixture(scope="module")
def zoo_dir(tiny_zoo: Any) -> Path:
    return Path(tiny_zoo.dir_of(tiny_zoo.by_name()["llama-a"])).parent


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_streamed_float32_equals_the_float64_sketch_path(zoo_dir: Path, a: str, b: str) -> None:
    """Same verdict, alignment and layer matching; score within 1e-4 and z within 0.1%, for derived,
    independent, depth- and width-pruned and rotated pairs (the tiny zoo's vocabularies are all anchors)."""
    ma, mb = open_model(zoo_dir / a), open_model(zoo_dir / b)
    ref = compare_fingerprints(exact_sketch(ma), exact_sketch(mb))
    got = compare_lineage(ma, mb)
    assert (got.verdict, got.alignment, got.reference) == (ref.verdict, ref.alignment, ref.reference)
    assert [(x.layer_a, x.layer_b) for x in got.layers] == [(x.layer_a, x.layer_b) for x in ref.layers]
    assert got.score == pytest.approx(ref.score, abs=1e-4)
    assert got.z == pytest.approx(ref.z, rel=1e-3)
    assert got.shared_tokens == ref.shared_tokens
    assert set(got.timings) >= {"alignment (LAP, chance, Procrustes)", "reference layers (read, Grams, centring)"}


def test_float16_triangles_score_like_float32(zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the float32 budget the kept triangles are float16 (scaled): scores move by < 1e-5."""
    ma, mb = open_model(zoo_dir / "llama-a"), open_model(zoo_dir / "llama-a-sft")
    full = compare_lineage(ma, mb)
    monkeypatch.setattr(pairwise, "FLOAT32_BUDGET", 0)
    half = compare_lineage(open_model(zoo_dir / "llama-a"), open_model(zoo_dir / "llama-a-sft"))
    assert half.score == pytest.approx(full.score, abs=1e-5)
    assert half.z == pytest.approx(full.z, rel=1e-4)


def test_anchors_are_a_bottom_k_sample_of_at_least_two_rows_per_coordinate() -> None:
    assert pairwise.pair_anchors(256) == 4000
    assert pairwise.pair_anchors(4096) == 8192


def test_comparing_two_checkpoints_never_imports_torch(zoo_dir: Path) -> None:
    """The CPU path is numpy and scipy only: torch costs 224 MB and 1.5 s before any work starts."""
    code = ("import sys\nfrom fingerprint.canonical import open_model\nfrom fingerprint.similarity import METHODS\n"
            f"r = METHODS['lineage'](open_model({str(zoo_dir / 'llama-a')!r}), open_model({str(zoo_dir / 'llama-a-sft')!r}))\n"
            "assert r.verdict == 'derived', r.verdict\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
