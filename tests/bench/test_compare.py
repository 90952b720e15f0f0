"""bench.compare's sparse checkpoints: full-size files whose unread tensors are holes, compared for real."""

from __future__ import annotations

import json
from pathlib import Path

from bench.compare import build_sparse
from bench.io import peak_rss_kib
from fingerprint.canonical import open_model
from fingerprint.similarity.lineage import compare_lineage


def test_sparse_pair_is_full_size_holes_and_compares_as_derived(tmp_path: Path) -> None:
    base = build_sparse(tmp_path / "base", 128, 2, 4096, 300, 1, None)
    ft = build_sparse(tmp_path / "ft", 128, 2, 4096, 300, 1, 0.3)
    f = base / "model.safetensors"
    header_len = int.from_bytes(f.read_bytes()[:8], "little")
    header = json.loads(f.read_bytes()[8:8 + header_len])
    data = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert f.stat().st_size == 8 + header_len + data  # every tensor is there, MLP included
    assert f.stat().st_blocks * 512 < 0.5 * f.stat().st_size  # ... but the MLP takes no disk
    a, b = open_model(base), open_model(ft)
    r = compare_lineage(a, b)
    assert r.verdict == "derived" and r.score > 0.8
    assert a.bytes_read < 0.3 * a.total_bytes  # the holes are never read


def test_peak_rss_is_this_process_s_own() -> None:
    kib = peak_rss_kib()
    assert 10_000 < kib < 8 * 1024**2  # a Python process with numpy loaded, in KiB
