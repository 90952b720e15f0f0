"""bench.fingerprint: sparse checkpoints of a real layout, and every tier run on one (a tiny shape here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fingerprint as bf
from fingerprint.canonical import open_model


def test_sparse_shape_reads_and_every_tier_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bf, "CACHE", tmp_path)
    monkeypatch.setitem(bf.SHAPES, "T", {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                                         "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 4096,
                                         "vocab_size": 1000, "tie_word_embeddings": False})
    path = bf.write_shape("T")
    f = path / "model.safetensors"
    assert f.stat().st_blocks * 512 < f.stat().st_size  # the MLP is a hole
    m = open_model(path)
    assert m.spec.hidden_size == 128 and m.spec.num_layers == 4 and json.loads((path / "config.json").read_text())
    screen, verify, before = (bf.run_tier(t, path, before_layers=1) for t in ("screen", "verify", "before"))
    assert 0 < screen["read"] < verify["read"] < verify["total"]
    assert screen["stored"] > 0 and verify["stored"] > 0 and before["seconds"] > 0  # (a tiny model's screen is the larger)
    assert bf.write_shape("T") == path and bf.write_shape("T", seed=1) != path
