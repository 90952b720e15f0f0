"""Every architecture file resolves every canonical role of a real (transformers-built) tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tinymodels import ENCODERS, FF, HF_ARCHITECTURES, HYBRID, KV, MOE, REMOTE_CODE, D, H, L, V

from fingerprint.architectures import load_architectures, resolve_architecture
from fingerprint.canonical import open_model
from fingerprint.errors import UnknownArchitectureError

ALL = [*HF_ARCHITECTURES, *ENCODERS, *REMOTE_CODE]
MHA = {"gpt_neox", "gpt2", "baichuan", "deepseek", "opt", "bloom", "gptj", "gpt_neo", "mpt", *ENCODERS}  # these configs have no KV-head setting
NO_GATE = {"gpt_neox", "gpt2", "falcon", "starcoder2", "phi", "nemotron", "apertus", "bert", "deberta_v2", "distilbert", "mpnet",
           "opt", "bloom", "gptj", "gpt_neo", "mpt", "gpt_bigcode"}
QK_NORM = {"qwen3", "olmo2", "gemma3", "qwen_moe", "qwen3_next", "lfm2"}


def test_every_architecture_file_is_exercised() -> None:
    hf_files = {n for n, a in load_architectures().items() if a.format == "hf"}
    assert hf_files == set(ALL)
    assert {n for n, a in load_architectures().items() if a.format == "gguf"} == {"gguf"}
    assert {n for n, a in load_architectures().items() if a.encoder} == set(ENCODERS)


@pytest.mark.parametrize("name", [*ALL, "llava"])
def test_roles_resolve_with_right_shapes(name: str, tiny_models: dict[str, Path]) -> None:
    m = open_model(tiny_models[name])
    s = m.spec
    arch = "llama" if name == "llava" else name
    assert s.architecture == arch
    hd = D // H
    kv = H if name in MHA else 1 if name == "gpt_bigcode" else KV
    layers = 3 if name == "modernbert" else L
    assert (s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim) == (layers, D, H, kv, hd)
    assert m.embed().shape == (V, D)
    for layer in range(layers):
        q, k = m.attention(layer)
        assert q.shape == (H * hd, D) and k.shape == (kv * hd, D)
        assert m.value(layer).shape == (kv * hd, D)
        assert m.output(layer).shape == (D, H * hd)
        assert m.gain("norm_in", layer) is not None or name in ("olmo", "olmo2")
        if name not in MOE | HYBRID:
            gate, up, down = m.mlp(layer)
            ff = 4 * D if name in ("gpt2", "falcon", "bloom", "mpt") else FF
            assert up.shape == (ff, D) and down.shape == (D, ff)
            assert (gate is None) == (name in NO_GATE)
        if name in QK_NORM:
            qn, kn = m.qk_norms(layer)
            assert qn is not None and kn is not None
    ids = [3, 4, 5, 100]
    assert np.array_equal(m.embed_rows(ids), m.embed()[ids])
    head = m.lm_head_rows(ids)
    assert (head is None) == s.tied
    assert s.tied or name not in ENCODERS  # an encoder's MLM decoder is not an output head we read
    if name == "llava":
        assert s.wrapper == "LlavaForConditionalGeneration"
        names = {t.name for t in m.fingerprint_tensors()}
        assert not any("vision_tower" in n for n in names)


@pytest.mark.parametrize("name", ["bert", "distilbert"])
def test_post_layernorm_encoder_folds_the_previous_layers_output_norm(name: str, tiny_models: dict[str, Path]) -> None:
    """Layer ℓ of a post-LN encoder reads LayerNorm_out(ℓ-1); layer 0 reads the embedding LayerNorm."""
    m = open_model(tiny_models[name])
    prefix = "bert." if name == "bert" else "distilbert."
    out_norm = "encoder.layer.0.output.LayerNorm.weight" if name == "bert" else "transformer.layer.0.output_layer_norm.weight"
    emb = m.reader.read(prefix + "embeddings.LayerNorm.weight")
    np.testing.assert_array_equal(m.gain("norm_in", 0), emb)
    np.testing.assert_array_equal(m.gain("norm_in", 1), m.reader.read(prefix + out_norm))
    assert not np.array_equal(emb, m.reader.read(prefix + out_norm))


def test_modernbert_layer0_reads_the_embedding_norm(tiny_models: dict[str, Path]) -> None:
    m = open_model(tiny_models["modernbert"])
    np.testing.assert_array_equal(m.gain("norm_in", 0), m.reader.read("model.embeddings.norm.weight"))
    np.testing.assert_array_equal(m.gain("norm_in", 2), m.reader.read("model.layers.2.attn_norm.weight"))


@pytest.mark.parametrize("name", REMOTE_CODE)
def test_remote_code_fused_qkv_gives_back_the_source_projections(name: str, tiny_models: dict[str, Path]) -> None:
    """InternLM2's grouped ``wqkv`` and Baichuan's ``W_pack`` split into exactly the Q, K, V they were fused from."""
    m = open_model(tiny_models[name])
    src = open_model(tiny_models[name].parent / f"{name}-llama")
    for layer in range(L):
        for a, b in zip(m.attention(layer), src.attention(layer), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(m.value(layer), src.value(layer))
    np.testing.assert_array_equal(m.lm_head_rows([1, 2, 3]), src.lm_head_rows([1, 2, 3]))


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


@pytest.mark.parametrize("name", ALL)
def test_compare_tells_a_derivative_from_an_independent_model_in_every_architecture(
    name: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Both tiers run on every family: a 0.3σ-perturbed copy is derived and screens close, another seed is
    independent and screens far."""
    from safetensors.numpy import load_file
    from tinymodels import (
        build_encoder,
        build_hf,
        build_remote_code,
        perturb,
        save_state_dict,
        write_wordlevel_tokenizer,
    )

    from fingerprint import screen
    from fingerprint.screen import screen_model
    from fingerprint.similarity import compare

    base = tmp_path / "base"
    shutil.copytree(tiny_models[name], base)
    write_wordlevel_tokenizer(base, V)
    build = build_encoder if name in ENCODERS else build_remote_code if name in REMOTE_CODE else build_hf
    other = build(name, tmp_path / "other", seed=1)
    write_wordlevel_tokenizer(other, V)
    cfg = json.loads((base / "config.json").read_text())
    derived = save_state_dict(perturb(load_file(str(base / "model.safetensors")), 0.3, seed=7), cfg, tmp_path / "derived", base)
    near, far = compare(open_model(base), open_model(derived)), compare(open_model(base), open_model(other))
    assert (near.verdict, far.verdict) == ("derived", "independent"), (near.score, far.score)
    sb, sd, so = (screen_model(open_model(p)) for p in (base, derived, other))
    near_s, far_s = screen.compare(sb, sd).score, screen.compare(sb, so).score
    assert near_s > 0.8 and far_s < 0.3, (near_s, far_s)


def _sentence_transformers_layout(src: Path, root: Path, module_path: str) -> Path:
    """An older sentence-transformers repo: the transformer in ``module_path``, a WordPiece ``vocab.txt``."""
    (root / "1_Pooling").mkdir(parents=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": D, "pooling_mode_mean_tokens": True}))
    shutil.copytree(src, root / module_path)
    (root / module_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                          + [f"w{i}" if i % 2 else f"##w{i}" for i in range(5, V)]) + "\n")
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": module_path, "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return root


def test_sentence_transformers_module_folder_and_wordpiece_vocab_txt(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from fingerprint.similarity import compare

    st = _sentence_transformers_layout(tiny_models["deberta_v2"], tmp_path / "st", "0_Transformer")
    m = open_model(st)
    assert m.spec.architecture == "deberta_v2" and m.repo.name.endswith("/0_Transformer")
    vocab = m.vocab()
    assert vocab.source == "vocab.txt" and vocab.size == V and "[CLS]" not in vocab.keys and vocab.keys["##w6"] == 6
    r = compare(m, open_model(st))
    assert r.verdict == "derived" and r.score > 0.99


def test_sentence_transformers_module_path_from_the_hub_is_bounded(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from fingerprint.errors import FingerprintError

    st = _sentence_transformers_layout(tiny_models["bert"], tmp_path / "st", "0_Transformer")
    (st / "modules.json").write_text(json.dumps([{"path": "../../etc", "type": "sentence_transformers.models.Transformer"}]))
    with pytest.raises(FingerprintError):
        open_model(st)


def test_mla_heads_are_the_models_own_queries_and_keys_up_to_the_latent_rms(tiny_models: dict[str, Path]) -> None:
    """transformers' DeepSeek-V3 modules give each head's q = [q_nope | q_pe] and k = [k_nope | k_pe]; the canonical
    rows are [pe | nope] per head, and equal those up to one positive factor per token (the latent RMS norm)."""
    import torch
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(tiny_models["deepseek"]).float()
    m = open_model(tiny_models["deepseek"])
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, D)).astype(np.float32))
    nope, rope = 8, 8
    for layer in range(L):
        at = hf.model.layers[layer].self_attn
        with torch.no_grad():
            q = at.q_b_proj(at.q_a_layernorm(at.q_a_proj(x))).view(5, H, nope + rope).numpy()
            ckv = at.kv_a_proj_with_mqa(x)
            k_pe = ckv[:, 16:].numpy()
            k_nope = at.kv_b_proj(at.kv_a_layernorm(ckv[:, :16])).view(5, H, nope + D // H)[..., :nope].numpy()
        wq, wk = m.attention(layer, fold=False)
        ours_q = (x.numpy() @ wq.T).reshape(5, H, rope + nope)
        ours_k = (x.numpy() @ wk.T).reshape(5, H, rope + nope)
        np.testing.assert_allclose(ours_k[:, :, :rope], np.repeat(k_pe[:, None], H, axis=1), rtol=1e-4, atol=1e-5)
        for ours, theirs in ((ours_q[:, :, rope:], q[..., :nope]), (ours_q[:, :, :rope], q[..., nope:]),
                             (ours_k[:, :, rope:], k_nope)):
            t, o = theirs.reshape(5, -1), ours.reshape(5, -1)
            c = (t * o).sum(1) / (o * o).sum(1)  # the per-token factor that best maps ours onto theirs
            assert np.all(c > 0)
            assert np.linalg.norm(t - c[:, None] * o, axis=1).max() <= 1e-4 * np.linalg.norm(t, axis=1).min()


@pytest.mark.parametrize("name", sorted(HYBRID))
def test_a_hybrid_reads_its_attention_layers_in_depth_order(name: str, tiny_models: dict[str, Path]) -> None:
    """Attention sits in every other stored layer of these tiny hybrids: canonical layer i is stored layer 2i + 1."""
    m = open_model(tiny_models[name])
    assert m.spec.num_layers == L
    for i in range(L):
        raw = m.reader.read(f"model.layers.{2 * i + 1}.self_attn.k_proj.weight")
        _, k = m.attention(i, fold=False)
        np.testing.assert_array_equal(k, raw)
    assert not m.has("q", L)  # no canonical layer past the last attention layer
    from fingerprint.inspect import inspect_model

    report = inspect_model(tiny_models[name])
    assert report["attention_layers"] == [2 * i + 1 for i in range(L)] and "hybrid" in report["kind"]


def test_gated_queries_read_only_the_query_half(tiny_models: dict[str, Path]) -> None:
    """Qwen3-Next's q_proj holds [query | gate] per head (transformers chunks each head's 2·head_dim rows)."""
    m = open_model(tiny_models["qwen3_next"])
    raw = m.reader.read("model.layers.1.self_attn.q_proj.weight")
    q, _ = m.attention(0, fold=False)
    hd = D // H
    np.testing.assert_array_equal(q, raw.reshape(H, 2 * hd, D)[:, :hd].reshape(H * hd, D))


def test_electra_reads_as_bert_and_one_with_narrower_embeddings_is_refused(tmp_path: Path) -> None:
    """ELECTRA's discriminator has BERT's layout under ``electra.``; a small ELECTRA projects narrower embeddings
    into its layers, which the fingerprint does not read: one clear error, not a wrong answer."""
    import transformers as tf
    from tinymodels import build_encoder

    from fingerprint.errors import ArchitectureMismatchError

    m = open_model(build_encoder("electra", tmp_path / "electra"))
    assert m.spec.architecture == "bert" and m.name("q", 0) == "electra.encoder.layer.0.attention.self.query.weight"
    narrow = tf.ElectraForMaskedLM(tf.ElectraConfig(hidden_size=D, embedding_size=D // 2, intermediate_size=FF,
                                                     num_hidden_layers=L, num_attention_heads=H, vocab_size=V))
    narrow.save_pretrained(tmp_path / "narrow", safe_serialization=True)
    with pytest.raises(ArchitectureMismatchError, match="embedding shape"):
        open_model(tmp_path / "narrow")
