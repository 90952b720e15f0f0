"""Canonical equivalences: the same weights in another format or layout give the same canonical Q/K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from tinymodels import build_hf

from fingerprint.canonical import open_model
from fingerprint.layouts import split_fused_qkv, unpermute_gguf_rows
from zoo.convert import to_fp8, to_gguf


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hf("llama", tmp_path_factory.mktemp("canon") / "llama", seed=3)


def _qk(path: Path) -> list[np.ndarray]:
    m = open_model(path)
    return [x for layer in range(m.spec.num_layers) for x in m.attention(layer)]


def test_fused_contiguous_equals_unfused(llama: Path, tmp_path: Path) -> None:
    """Phi-3 style qkv_proj/gate_up_proj holding the same weights."""
    sd = load_file(str(llama / "model.safetensors"))
    cfg = json.loads((llama / "config.json").read_text())
    fused: dict[str, np.ndarray] = {}
    for name, w in sd.items():
        if ".self_attn.q_proj." in name:
            p = name.replace("q_proj", "{}")
            fused[name.replace("q_proj", "qkv_proj")] = np.concatenate([sd[p.format(x)] for x in ("q_proj", "k_proj", "v_proj")])
        elif ".mlp.gate_proj." in name:
            fused[name.replace("gate_proj", "gate_up_proj")] = np.concatenate([w, sd[name.replace("gate_proj", "up_proj")]])
        elif not any(s in name for s in (".k_proj.", ".v_proj.", ".up_proj.")):
            fused[name] = w
    out = tmp_path / "phi3"
    out.mkdir()
    save_file(fused, str(out / "model.safetensors"))
    cfg.update(architectures=["Phi3ForCausalLM"], model_type="phi3")
    (out / "config.json").write_text(json.dumps(cfg))
    for a, b in zip(_qk(llama), _qk(out)):
        np.testing.assert_array_equal(a, b)
    ma, mb = open_model(llama), open_model(out)
    for x, y in zip(ma.mlp(1), mb.mlp(1)):
        np.testing.assert_array_equal(x, y)


def test_interleaved_layouts_split_by_layout_not_thirds() -> None:
    rng = np.random.default_rng(0)
    H, KV, hd, d = 4, 2, 8, 16
    q, k, v = rng.standard_normal((H * hd, d)), rng.standard_normal((KV * hd, d)), rng.standard_normal((KV * hd, d))
    # GPT-NeoX: (H, 3, hd) per head, MHA only.
    k_mha, v_mha = rng.standard_normal((H * hd, d)), rng.standard_normal((H * hd, d))
    per_head = np.stack([q.reshape(H, hd, d), k_mha.reshape(H, hd, d), v_mha.reshape(H, hd, d)], axis=1).reshape(-1, d)
    sq, sk, sv = split_fused_qkv(per_head, "per_head", H, H, hd)
    assert np.array_equal(sq, q) and np.array_equal(sk, k_mha) and np.array_equal(sv, v_mha)
    naive = np.split(per_head, 3)
    assert not np.array_equal(naive[0], q)  # naive thirds would be wrong
    # Falcon new decoder: (KV, H/KV + 2, hd).
    g = H // KV
    grouped = np.concatenate(
        [np.concatenate([q.reshape(KV, g, hd, d)[i].reshape(-1, d), k.reshape(KV, hd, d)[i], v.reshape(KV, hd, d)[i]])
         for i in range(KV)])
    sq, sk, sv = split_fused_qkv(grouped, "grouped", H, KV, hd)
    assert np.array_equal(sq, q) and np.array_equal(sk, k) and np.array_equal(sv, v)


def test_gguf_permutation_roundtrip() -> None:
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(32, 3)
    permuted = w.reshape(4, 2, 4, 3).swapaxes(1, 2).reshape(w.shape)  # llama.cpp's permute
    assert np.array_equal(unpermute_gguf_rows(permuted, 4), w)


@pytest.mark.parametrize(("qtype", "tol"), [("F16", 1e-3), ("Q8_0", 1.5e-2)])
def test_gguf_equals_safetensors(llama: Path, tmp_path: Path, qtype: str, tol: float) -> None:
    g = to_gguf(llama, tmp_path / f"m-{qtype}.gguf", qtype)
    m = open_model(g)
    assert m.spec.source_format == "gguf" and m.spec.num_kv_heads == 2
    for a, b in zip(_qk(llama), _qk(g)):
        assert rel(a, b) < tol
    assert rel(open_model(llama).embed(), m.embed()) < tol


def test_gguf_q4_k_decodes(tmp_path: Path) -> None:
    """K-quants need rows of 256: a wider model."""
    import transformers as tf

    cfg = tf.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64)
    src = build_hf("llama", tmp_path / "wide", config=cfg)
    g = to_gguf(src, tmp_path / "wide-q4k.gguf", "Q4_K")
    assert open_model(g).reader.tensors["blk.0.attn_q.weight"].dtype == "gguf:Q4_K"
    for a, b in zip(_qk(src), _qk(g)):
        assert rel(a, b) < 0.12


@pytest.mark.parametrize("scheme", ["tensor", "channel", "block"])
def test_fp8_equals_fp32(llama: Path, tmp_path: Path, scheme: str) -> None:
    f = to_fp8(llama, tmp_path / f"fp8-{scheme}", scheme, block=32)
    m = open_model(f)
    assert m.reader.tensors["model.layers.0.self_attn.q_proj.weight"].dtype == "F8_E4M3"
    for a, b in zip(_qk(llama), _qk(f)):
        assert rel(a, b) < 0.05


def test_norm_gains_moved_into_consumers(llama: Path, tmp_path: Path) -> None:
    """AWQ/SmoothQuant-style: γ ← γ·s, W_{q,k,v} ← W·diag(1/s) leaves the canonical Q/K unchanged."""
    sd = load_file(str(llama / "model.safetensors"))
    rng = np.random.default_rng(1)
    for layer in range(2):
        pre = f"model.layers.{layer}."
        s = np.exp(rng.uniform(-2, 2, sd[pre + "input_layernorm.weight"].shape)).astype(np.float32)
        sd[pre + "input_layernorm.weight"] = sd[pre + "input_layernorm.weight"] * s
        for p in ("q_proj", "k_proj", "v_proj"):
            sd[pre + f"self_attn.{p}.weight"] = sd[pre + f"self_attn.{p}.weight"] / s[None, :]
    out = tmp_path / "scaled"
    out.mkdir()
    save_file(sd, str(out / "model.safetensors"))
    (out / "config.json").write_text((llama / "config.json").read_text())
    for a, b in zip(_qk(llama), _qk(out)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gguf_fingerprint_never_reads_a_byte_twice(llama: Path, tmp_path: Path) -> None:
    """A small file's header chunk holds its tensors too: they come from that chunk, not a second read
    (the byte accounting once said "read 138.6% of the file")."""
    from fingerprint.sketch import sketch_model

    g = to_gguf(llama, tmp_path / "small.gguf", "Q8_0")
    sk = sketch_model(open_model(g))
    assert 0 < sk.meta["bytes_read"] <= sk.meta["total_bytes"] == g.stat().st_size
