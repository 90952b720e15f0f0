"""bench.gpu runs end to end (on the CPU here, at small widths): the synthetic fine-tune is called derived."""

from __future__ import annotations

from bench.gpu import SyntheticModel, bench


def test_bench_gpu_rows_on_the_cpu() -> None:
    row = bench(128, 2, ["cpu"])
    assert row["d"] == 128 and row["cpu"]["fingerprint_s"] > 0 and row["cpu"]["compare_s"] > 0
    assert row["cpu"]["score"] > 0.9  # 2% noise on the same weights: the same lineage
    assert row["cpu"]["screen_s"] > 0
    m = SyntheticModel(128, 2, seed=3)
    a, b = m.attention(0), SyntheticModel(128, 2, seed=3).attention(0)
    assert (a[0] == b[0]).all() and a[0].shape == (128, 128)  # seeded: the same model twice
