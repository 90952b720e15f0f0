"""Tiny fixed-seed models of every supported architecture, built with ``transformers``.

Real modeling code gives real tensor names and layouts, so the architecture files are tested
against what the Hub actually ships, not against themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

D, L, H, KV, FF, V = 64, 2, 4, 2, 128, 256


def _cfg(name: str) -> Any:
    import transformers as tf

    common: dict[str, Any] = dict(hidden_size=D, intermediate_size=FF, num_hidden_layers=L,
                                  num_attention_heads=H, vocab_size=V, max_position_embeddings=128)
    if name == "llama":
        return tf.LlamaConfig(num_key_value_heads=KV, **common)
    if name == "mistral":
        return tf.MistralConfig(num_key_value_heads=KV, **common)
    if name == "mixtral":
        return tf.MixtralConfig(num_key_value_heads=KV, num_local_experts=4, num_experts_per_tok=2, **common)
    if name == "qwen2":
        return tf.Qwen2Config(num_key_value_heads=KV, **common)
    if name == "qwen3":
        return tf.Qwen3Config(num_key_value_heads=KV, head_dim=16, **common)
    if name == "gemma":
        return tf.GemmaConfig(num_key_value_heads=KV, head_dim=16, **common)
    if name == "gemma2":
        return tf.Gemma2Config(num_key_value_heads=KV, head_dim=16, **common)
    if name == "gemma3":
        return tf.Gemma3TextConfig(num_key_value_heads=KV, head_dim=16, **common)
    if name == "phi3":
        return tf.Phi3Config(num_key_value_heads=KV, pad_token_id=0, bos_token_id=1, eos_token_id=2, **common)
    if name == "gpt_neox":
        return tf.GPTNeoXConfig(**common)
    if name == "gpt2":
        return tf.GPT2Config(n_embd=D, n_layer=L, n_head=H, vocab_size=V, n_positions=128)
    if name == "falcon":
        return tf.FalconConfig(hidden_size=D, num_hidden_layers=L, num_attention_heads=H, vocab_size=V,
                               new_decoder_architecture=True, num_kv_heads=KV)
    if name == "olmo":
        return tf.OlmoConfig(num_key_value_heads=KV, **common)
    if name == "olmo2":
        return tf.Olmo2Config(num_key_value_heads=KV, **common)
    if name == "starcoder2":
        return tf.Starcoder2Config(num_key_value_heads=KV, **common)
    return _cfg_more(tf, name, common)


def _cfg_more(tf: Any, name: str, common: dict[str, Any]) -> Any:
    """Configs of the families added with MoE, dense newcomers and encoders (ids that fit the tiny vocabulary)."""
    kv: dict[str, Any] = dict(num_key_value_heads=KV, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    moe = dict(num_experts_per_tok=2)
    if name == "granite":
        return tf.GraniteConfig(**kv, **common)
    if name == "qwen_moe":
        return tf.Qwen3MoeConfig(**kv, **moe, num_experts=4, moe_intermediate_size=32, head_dim=16, **common)
    if name == "gpt_oss":
        return tf.GptOssConfig(**kv, **moe, num_local_experts=4, head_dim=16, **common)
    if name == "llama4":
        return tf.Llama4TextConfig(**kv, num_local_experts=4, head_dim=16, intermediate_size_mlp=FF, **common)
    if name == "phimoe":
        return tf.PhimoeConfig(**kv, **moe, num_local_experts=4, **common)
    if name == "stablelm":
        return tf.StableLmConfig(**kv, **common)
    if name == "nemotron":
        return tf.NemotronConfig(**kv, **common)
    if name == "cohere":
        return tf.CohereConfig(**kv, **common)
    if name == "glm":
        return tf.Glm4Config(**kv, head_dim=16, **common)
    if name == "phi":
        return tf.PhiConfig(**kv, partial_rotary_factor=0.5, **common)
    if name == "apertus":
        return tf.ApertusConfig(**kv, **common)
    if name == "deepseek":  # layer 0 dense, layer 1 MoE; MLA heads of 8 (no RoPE) + 8 (RoPE) dims, values of 16
        return tf.DeepseekV3Config(**common, pad_token_id=None, bos_token_id=None, eos_token_id=None, n_routed_experts=4,
                                   num_experts_per_tok=2, moe_intermediate_size=32, q_lora_rank=32, kv_lora_rank=16,
                                   qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=D // H, n_group=1, topk_group=1,
                                   first_k_dense_replace=1)
    hyb: dict[str, Any] = dict(**kv, **{**common, "num_hidden_layers": 2 * L})  # attention in every other layer
    if name == "falcon_h1":
        return tf.FalconH1Config(**kv, mamba_d_ssm=D, mamba_n_heads=H, mamba_d_head=D // H, mamba_d_state=16, mamba_n_groups=1,
                                 **common)
    if name == "jamba":
        return tf.JambaConfig(**hyb, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
                              num_experts=2, use_mamba_kernels=False)
    if name == "granitemoehybrid":
        return tf.GraniteMoeHybridConfig(**hyb, layer_types=["mamba", "attention"] * L, mamba_n_heads=H, mamba_d_head=2 * D // H,
                                         mamba_d_state=16, num_local_experts=2, num_experts_per_tok=1)
    if name == "lfm2":
        return tf.Lfm2Config(**hyb, layer_types=["conv", "full_attention"] * L)
    if name == "qwen3_next":
        return tf.Qwen3NextConfig(**hyb, head_dim=D // H, layer_types=["linear_attention", "full_attention"] * L, num_experts=2,
                                  num_experts_per_tok=1, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                  linear_num_value_heads=H, linear_num_key_heads=KV, linear_key_head_dim=16, linear_value_head_dim=16)
    if name == "opt":
        return tf.OPTConfig(hidden_size=D, ffn_dim=FF, num_hidden_layers=L, num_attention_heads=H, vocab_size=V,
                            word_embed_proj_dim=D, max_position_embeddings=128, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    if name == "bloom":
        return tf.BloomConfig(hidden_size=D, n_layer=L, n_head=H, vocab_size=V)
    if name == "gptj":
        return tf.GPTJConfig(n_embd=D, n_layer=L, n_head=H, vocab_size=V, rotary_dim=8, n_positions=128, n_inner=FF)
    if name == "gpt_neo":
        return tf.GPTNeoConfig(hidden_size=D, num_layers=L, num_heads=H, vocab_size=V, intermediate_size=FF,
                               attention_types=[[["global", "local"], 1]], max_position_embeddings=128)
    if name == "mpt":
        return tf.MptConfig(d_model=D, n_layers=L, n_heads=H, vocab_size=V, max_seq_len=128)
    if name == "gpt_bigcode":
        return tf.GPTBigCodeConfig(n_embd=D, n_layer=L, n_head=H, vocab_size=V, n_positions=128, multi_query=True, n_inner=FF)
    enc = dict(hidden_size=D, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H, vocab_size=V)
    if name == "bert":
        return tf.BertConfig(**enc)
    if name == "deberta_v2":
        return tf.DebertaV2Config(**enc)
    if name == "distilbert":
        return tf.DistilBertConfig(dim=D, hidden_dim=FF, n_layers=L, n_heads=H, vocab_size=V)
    if name == "modernbert":
        return tf.ModernBertConfig(**{**enc, "num_hidden_layers": 3}, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                   cls_token_id=1, sep_token_id=2)
    if name == "mpnet":
        return tf.MPNetConfig(**enc)
    if name == "electra":
        return tf.ElectraConfig(**enc, embedding_size=D)
    if name == "t5":
        return tf.T5Config(d_model=D, d_ff=FF, num_layers=L, num_heads=H, d_kv=D // H, vocab_size=V,
                           feed_forward_proj="gated-gelu")
    raise KeyError(name)


#: Built by transformers (real modeling code, real tensor names).
HF_ARCHITECTURES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
                    "gpt_neox", "gpt2", "falcon", "olmo", "olmo2", "starcoder2",
                    "granite", "qwen_moe", "gpt_oss", "llama4", "phimoe", "stablelm", "nemotron", "cohere", "glm",
                    "phi", "apertus", "deepseek", "falcon_h1", "jamba", "granitemoehybrid", "lfm2", "qwen3_next",
                    "opt", "bloom", "gptj", "gpt_neo", "mpt", "gpt_bigcode"]
#: Encoders, built by transformers as their bare model (sentence-transformers' layout) or a task head.
ENCODERS = {"bert": "masked", "deberta_v2": "bare", "distilbert": "masked", "modernbert": "masked", "t5": "bare", "mpnet": "bare"}
#: Remote-code families transformers does not ship: written from a tiny LLaMA by their published layouts.
REMOTE_CODE = ["internlm2", "baichuan"]
#: Mixture-of-experts families (the MLP is per expert; the fingerprint reads attention only).
MOE = {"mixtral", "qwen_moe", "gpt_oss", "llama4", "phimoe", "deepseek"}
#: Hybrids: state-space, convolution or linear-attention layers between the attention layers (L of them).
HYBRID = {"jamba", "granitemoehybrid", "lfm2", "qwen3_next"}


def build_hf(name: str, out: Path, seed: int = 0, config: Any = None) -> Path:
    """Save a randomly initialised tiny model of architecture ``name`` (HF layout) under ``out``."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = config if config is not None else _cfg(name)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    # Random init leaves norm gains at 1; make them non-trivial so folding is really tested.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in pname or "ln" in pname):
                p.copy_(torch.rand_like(p) + 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_encoder(name: str, out: Path, seed: int = 0) -> Path:
    """Save a tiny encoder (bare model or masked-LM head, see :data:`ENCODERS`) with non-trivial norm gains."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = _cfg(name)
    if name == "t5":
        model = tf.T5EncoderModel(cfg)
    else:
        model = (tf.AutoModelForMaskedLM if ENCODERS.get(name, "masked") == "masked" else tf.AutoModel).from_config(cfg)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in pname.lower() or "ln" in pname):
                p.copy_(torch.rand_like(p) + 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_remote_code(name: str, out: Path, seed: int = 0) -> Path:
    """InternLM2 (``wqkv`` grouped by KV head) or Baichuan (``W_pack`` = [q | k | v], multi-head) from a tiny LLaMA.

    The Q/K/V weights are the LLaMA's, so the canonical view must give back the LLaMA's matrices.
    """
    from safetensors.numpy import load_file

    src = build_hf("llama", out.parent / f"{out.name}-llama", seed=seed,
                   config=_cfg("llama") if name == "internlm2" else llama_config({"num_key_value_heads": H, "num_hidden_layers": L,
                                                                                 "vocab_size": V}))
    sd = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    hd, kv = D // H, cfg["num_key_value_heads"]
    new: dict[str, np.ndarray] = {}
    for key, w in sd.items():
        if name == "internlm2":
            key = (key.replace("model.embed_tokens.", "model.tok_embeddings.").replace("lm_head.", "output.")
                   .replace("self_attn.o_proj", "attention.wo").replace("input_layernorm", "attention_norm")
                   .replace("post_attention_layernorm", "ffn_norm").replace("mlp.gate_proj", "feed_forward.w1")
                   .replace("mlp.up_proj", "feed_forward.w3").replace("mlp.down_proj", "feed_forward.w2"))
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if ".self_attn.q_proj." in key:
            p = key.split("self_attn.")[0]
            q, k, v = w, sd[key.replace("q_proj", "k_proj")], sd[key.replace("q_proj", "v_proj")]
            if name == "internlm2":
                g = H // kv
                fused = np.concatenate([q.reshape(kv, g, hd, D), k.reshape(kv, 1, hd, D), v.reshape(kv, 1, hd, D)], axis=1)
                new[p + "attention.wqkv.weight"] = fused.reshape(-1, D)
            else:
                new[p + "self_attn.W_pack.weight"] = np.concatenate([q, k, v])
            continue
        new[key] = w
    arch = {"internlm2": ("InternLM2ForCausalLM", "internlm2"), "baichuan": ("BaichuanForCausalLM", "baichuan")}[name]
    cfg = {**{k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                  "vocab_size", "rms_norm_eps")},
           "architectures": [arch[0]], "model_type": arch[1], "tie_word_embeddings": False}
    if name == "internlm2":
        cfg["num_key_value_heads"] = kv
    return save_state_dict(new, cfg, out)


def build_llava(out: Path, seed: int = 0) -> Path:
    """A tiny LLaVA (CLIP tower + projector + llama LM) with real wrapper names."""
    import transformers as tf

    torch.manual_seed(seed)
    vision = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 image_size=32, patch_size=8)
    cfg = tf.LlavaConfig(vision_config=vision, text_config=_cfg("llama"))
    model = tf.LlavaForConditionalGeneration(cfg)
    model.save_pretrained(out, safe_serialization=True)
    return out


def write_config(path: Path, cfg: dict[str, Any]) -> None:
    (path / "config.json").write_text(json.dumps(cfg))


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def write_wordlevel_tokenizer(path: Path, vocab_size: int, prefix: str = "w") -> None:
    """A minimal ``tokenizer.json`` (WordLevel) whose tokens are ``{prefix}{i}``."""
    vocab = {f"{prefix}{i}": i for i in range(vocab_size)}
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": None, "decoder": None,
          "model": {"type": "WordLevel", "vocab": vocab, "unk_token": f"{prefix}0"}}
    (path / "tokenizer.json").write_text(json.dumps(tj))


def llama_config(seed_dims: dict[str, int] | None = None) -> Any:
    import transformers as tf

    dims = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, max_position_embeddings=128)
    dims.update(seed_dims or {})
    return tf.LlamaConfig(**dims)


def save_state_dict(sd: dict[str, np.ndarray], cfg: dict[str, Any], out: Path, tokenizer_from: Path | None = None) -> Path:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg))
    if tokenizer_from is not None:
        (out / "tokenizer.json").write_text((tokenizer_from / "tokenizer.json").read_text())
    return out


def perturb(sd: dict[str, np.ndarray], rel: float, seed: int) -> dict[str, np.ndarray]:
    """A stand-in for fine-tuning: every tensor moved by ``rel`` of its own scale, at random."""
    rng = np.random.default_rng(seed)
    return {k: (v + rel * v.std() * rng.standard_normal(v.shape)).astype(np.float32) for k, v in sd.items()}


def llama_base(out: Path, seed: int = 0) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """A tiny LLaMA (``llama_config``) with a 512-token word-level tokenizer: its directory, config and
    state dict, to derive children from."""
    from safetensors.numpy import load_file

    base = build_hf("llama", out, seed=seed, config=llama_config())
    write_wordlevel_tokenizer(base, 512)
    return base, json.loads((base / "config.json").read_text()), load_file(str(base / "model.safetensors"))


def golden_model(out: Path) -> Path:
    """A fixed-seed tiny LLaMA written from numpy alone (no framework init code that could change)."""
    d, layers, heads, kv, ff, vocab = 32, 2, 4, 2, 64, 96
    sd = {"model.embed_tokens.weight": randn(vocab, d, seed=1), "lm_head.weight": randn(vocab, d, seed=2),
          "model.norm.weight": 1 + 0.1 * randn(d, seed=3)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd |= {p + "self_attn.q_proj.weight": randn(heads * 8, d, seed=10 + i), p + "self_attn.k_proj.weight": randn(kv * 8, d, seed=20 + i),
               p + "self_attn.v_proj.weight": randn(kv * 8, d, seed=30 + i), p + "self_attn.o_proj.weight": randn(d, heads * 8, seed=40 + i),
               p + "mlp.gate_proj.weight": randn(ff, d, seed=50 + i), p + "mlp.up_proj.weight": randn(ff, d, seed=60 + i),
               p + "mlp.down_proj.weight": randn(d, ff, seed=70 + i), p + "input_layernorm.weight": 1 + 0.1 * randn(d, seed=80 + i),
               p + "post_attention_layernorm.weight": 1 + 0.1 * randn(d, seed=90 + i)}
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ff, "vocab_size": vocab,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "rope_theta": 10000.0}
    save_state_dict(sd, cfg, out)
    write_wordlevel_tokenizer(out, vocab)
    return out


def attacked_family(root: Path) -> dict[str, Path]:
    """A base, an unrelated model of the same shape and tokenizer ("other"), a derivative of the base with
    0.3σ noise ("derived"), and every function-preserving attack of ``zoo.attacks`` applied to it (by name)."""
    from safetensors.numpy import load_file

    from zoo.attacks import ATTACKS

    out: dict[str, Path] = {}
    for name, seed in (("base", 0), ("other", 1)):
        p = build_hf("llama", root / name, seed=seed, config=llama_config())
        write_wordlevel_tokenizer(p, 512)
        out[name] = p
    cfg = json.loads((out["base"] / "config.json").read_text())
    sd = load_file(str(out["base"] / "model.safetensors"))
    out["derived"] = save_state_dict(perturb(sd, 0.3, seed=7), cfg, root / "derived", out["base"])
    dsd = load_file(str(out["derived"] / "model.safetensors"))
    for attack, fn in ATTACKS.items():
        out[attack] = save_state_dict(fn(dsd, cfg, seed=11), cfg, root / attack, out["base"])
    return out
