"""Every architecture file resolves every canonical role of a real (transformers-built) tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinymodels import FF, HF_ARCHITECTURES, KV, D, H, L, V

from fingerprint.architectures import load_architectures, resolve_architecture
from fingerprint.canonical import open_model
from fingerprint.errors import UnknownArchitectureError

HEAD_DIM = {"qwen3": 16, "gemma": 16, "gemma2": 16, "gemma3": 16}
MHA = {"gpt_neox", "gpt2"}  # these configs have no KV-head setting


def test_every_architecture_file_is_exercised() -> None:
    hf_files = {n for n, a in load_architectures().items() if a.format == "hf"}
    assert hf_files == set(HF_ARCHITECTURES)
    assert {n for n, a in load_architectures().items() if a.format == "gguf"} == {"gguf"}


@pytest.mark.parametrize("name", [*HF_ARCHITECTURES, "llava"])
def test_roles_resolve_with_right_shapes(name: str, tiny_models: dict[str, Path]) -> None:
    m = open_model(tiny_models[name])
    s = m.spec
    arch = "llama" if name == "llava" else name
    assert s.architecture == arch
    hd = HEAD_DIM.get(name, D // H)
    kv = H if name in MHA else KV
    assert (s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim) == (L, D, H, kv, hd)
    assert m.embed().shape == (V, D)
    for layer in range(L):
        q, k = m.attention(layer)
        assert q.shape == (H * hd, D) and k.shape == (kv * hd, D)
        assert m.value(layer).shape == (kv * hd, D)
        assert m.output(layer).shape == (D, H * hd)
        if name != "mixtral":
            gate, up, down = m.mlp(layer)
            ff = 4 * D if name in ("gpt2", "falcon") else FF
            assert up.shape == (ff, D) and down.shape == (D, ff)
            assert (gate is None) == (name in ("gpt_neox", "gpt2", "falcon", "starcoder2"))
        if name in ("qwen3", "olmo2", "gemma3"):
            qn, kn = m.qk_norms(layer)
            assert qn is not None and kn is not None
    ids = [3, 4, 5, 100]
    assert np.array_equal(m.embed_rows(ids), m.embed()[ids])
    head = m.lm_head_rows(ids)
    assert (head is None) == s.tied
    if name == "llava":
        assert s.wrapper == "LlavaForConditionalGeneration"
        names = {t.name for t in m.fingerprint_tensors()}
        assert not any("vision_tower" in n for n in names)


def test_llava_language_model_equals_plain_llama(tiny_models: dict[str, Path]) -> None:
    """The wrapper's vision tower (whose names also end in self_attn.q_proj) is dropped, not mixed in."""
    m = open_model(tiny_models["llava"])
    for layer in range(L):
        q, _ = m.attention(layer)
        raw = m.reader.read(f"language_model.model.layers.{layer}.self_attn.q_proj.weight")
        g = m.reader.read(f"language_model.model.layers.{layer}.input_layernorm.weight")
        np.testing.assert_allclose(q, raw * g[None, :], rtol=1e-6)


def test_gguf_architecture_file_roles(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The GGUF naming file resolves every role of a llama.cpp-style conversion."""
    from zoo.convert import to_gguf

    m = open_model(to_gguf(tiny_models["llama"], tmp_path / "m.gguf", "F16"))
    s = m.spec
    assert (s.architecture, s.declared_architecture, s.num_layers, s.hidden_size, s.num_kv_heads) == ("gguf", "llama", L, D, KV)
    for layer in range(L):
        q, k = m.attention(layer)
        assert q.shape == (H * (D // H), D) and k.shape == (KV * (D // H), D)
        gate, up, down = m.mlp(layer)
        assert gate is not None and up.shape == (FF, D) and down.shape == (D, FF)
    assert m.embed().shape == (V, D) and m.lm_head_rows([1, 2]) is not None
    assert len(m.vocab().keys) == V


def test_unknown_architecture_lists_supported() -> None:
    with pytest.raises(UnknownArchitectureError) as e:
        resolve_architecture({"architectures": ["MambaForCausalLM"], "model_type": "mamba"})
    msg = str(e.value)
    assert "MambaForCausalLM" in msg and "LlamaForCausalLM" in msg and "Qwen2ForCausalLM" in msg
