"""GPTQ and AWQ packed int4 weights dequantize to what was packed."""

from __future__ import annotations

import numpy as np

from fingerprint.io.quant import _AWQ_ORDER, dequantize_awq, dequantize_gptq


def pack_rows(q: np.ndarray) -> np.ndarray:
    """Pack nibbles along axis 0 (8 per int32, low bits first)."""
    r, c = q.shape
    q = q.reshape(r // 8, 8, c).astype(np.uint32)
    return sum(q[:, i] << (4 * i) for i in range(8)).astype(np.uint32).view(np.int32)


def pack_cols(q: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    r, c = q.shape
    q = q.reshape(r, c // 8, 8).astype(np.uint32)
    if order is not None:
        q = q[:, :, order]
    return sum(q[:, :, i] << (4 * i) for i in range(8)).astype(np.uint32).view(np.int32)


def test_gptq_act_order() -> None:
    rng = np.random.default_rng(0)
    n_in, n_out, group = 64, 16, 16
    q = rng.integers(0, 16, (n_in, n_out))
    z = rng.integers(1, 15, (n_in // group, n_out))
    s = rng.uniform(0.01, 0.1, (n_in // group, n_out)).astype(np.float32)
    g_idx = rng.permutation(np.arange(n_in) // group)  # act-order: groups not contiguous
    expected = (s[g_idx] * (q - z[g_idx])).T
    got = dequantize_gptq(pack_rows(q), pack_cols(z - 1), s, g_idx, v1_zero_offset=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_awq_packing_order() -> None:
    rng = np.random.default_rng(1)
    n_in, n_out, group = 32, 16, 8
    q = rng.integers(0, 16, (n_in, n_out))
    z = rng.integers(0, 16, (n_in // group, n_out))
    s = rng.uniform(0.01, 0.1, (n_in // group, n_out)).astype(np.float32)
    gi = np.arange(n_in) // group
    expected = (s[gi] * (q - z[gi])).T
    got = dequantize_awq(pack_cols(q, _AWQ_ORDER), pack_cols(z, _AWQ_ORDER), s)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_fp8_blocks_of_128_over_a_width_that_is_not_a_multiple(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """576 rows in 128-row tiles are 5 tiles, the last one partial: reading them as 5 tiles of 116 rows
    mis-scales most of the matrix (what SmolLM2-135M in DeepSeek-V3's fp8 layout showed)."""
    import json

    from safetensors.numpy import save_file

    from fingerprint.io.quant import QuantizedSafetensors
    from fingerprint.io.safetensors import SafetensorsReader
    from fingerprint.io.source import LocalRepo
    from zoo.convert import to_fp8

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((576, 320)) * np.linspace(0.1, 4.0, 576)[:, None]).astype(np.float32)
    save_file({"model.layers.0.mlp.up_proj.weight": w}, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    out = to_fp8(src, tmp_path / "fp8", "block")
    reader = QuantizedSafetensors(SafetensorsReader(LocalRepo(out), ["model.safetensors"]))
    back = reader.read("model.layers.0.mlp.up_proj.weight")
    assert np.linalg.norm(back - w) / np.linalg.norm(w) < 0.05  # e4m3 rounding: ~3%
