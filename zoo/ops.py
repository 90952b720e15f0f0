"""What each recipe op does to weights: build a base, fine-tune, prune, upcycle, extend, merge.

Models are transformers modules in float32 while they are worked on; ``build.py`` saves them.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

Model = Any


def make_config(arch: str, size: dict[str, Any], vocab: int, gqa: bool = False) -> Any:
    import transformers as tf

    d, h = size["d"], size["heads"]
    common = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=size["layers"], num_attention_heads=h,
                  max_position_embeddings=size["seq"] * 4, tie_word_embeddings=False)
    if arch == "llama":
        return tf.LlamaConfig(**common, intermediate_size=size["ffn"], num_key_value_heads=size["kv_gqa"] if gqa else h,
                              head_dim=d // h, rope_theta=10000.0)
    if arch == "qwen2":
        return tf.Qwen2Config(**common, intermediate_size=size["ffn"], num_key_value_heads=h, rope_theta=10000.0,
                              use_sliding_window=False)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(**common, intermediate_size=4 * d, rotary_pct=0.5, use_parallel_residual=True,
                                hidden_act="gelu")
    raise ValueError(arch)


def new_model(cfg: Any, seed: int) -> Model:
    import transformers as tf

    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(cfg).float().eval()


def _linears(model: Model) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]


def prune_magnitude(model: Model, sparsity: float) -> Model:
    """Zero the smallest ``sparsity`` share of every layer matrix by |w| (embeddings and head kept)."""
    with torch.no_grad():
        for _, lin in _linears(model):
            w = lin.weight
            k = int(w.numel() * sparsity)
            if k:
                thr = w.abs().flatten().kthvalue(k).values
                w[w.abs() <= thr] = 0.0
    return model


def prune_depth(model: Model) -> Model:
    """Drop the middle decoder layer (and renumber the rest)."""
    layers = model.model.layers if hasattr(model, "model") else model.gpt_neox.layers
    drop = len(layers) // 2
    kept = torch.nn.ModuleList([m for i, m in enumerate(layers) if i != drop])
    for i, m in enumerate(kept):
        for sub in m.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = i
    if hasattr(model, "model"):
        model.model.layers = kept
    else:
        model.gpt_neox.layers = kept
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[: len(kept)]
    return model


def prune_width(model: Model, keep: float, seed: int) -> Model:
    """Width pruning of a LLaMA/Qwen2 model: keep the residual dims with the largest embedding-column norm
    (every reader/writer and norm follows) and the MLP neurons with the largest down-projection norm."""
    import transformers as tf

    cfg = copy.deepcopy(model.config)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = cfg.hidden_size
    dims = torch.argsort(sd["model.embed_tokens.weight"].norm(dim=0), descending=True)[: int(d * keep)].sort().values
    ffn = cfg.intermediate_size
    new_ffn = int(ffn * keep)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k in ("model.embed_tokens.weight", "lm_head.weight"):
            out[k] = v[:, dims]
        elif k.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")) or k == "model.norm.weight":
            out[k] = v[dims]
        elif k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            out[k] = v[:, dims]
        elif k.endswith("o_proj.weight"):
            out[k] = v[dims, :]
        else:
            out[k] = v
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.mlp."
        neurons = torch.argsort(sd[p + "down_proj.weight"].norm(dim=0), descending=True)[:new_ffn].sort().values
        out[p + "gate_proj.weight"] = sd[p + "gate_proj.weight"][neurons][:, dims]
        out[p + "up_proj.weight"] = sd[p + "up_proj.weight"][neurons][:, dims]
        out[p + "down_proj.weight"] = sd[p + "down_proj.weight"][dims][:, neurons]
    cfg.hidden_size, cfg.intermediate_size = len(dims), new_ffn
    cfg.head_dim = model.config.hidden_size // model.config.num_attention_heads  # heads keep their width
    new = tf.AutoModelForCausalLM.from_config(cfg).float().eval()
    new.load_state_dict(out, strict=True)
    return new


def upcycle(model: Model, experts: int, seed: int) -> Model:
    """LLaMA → Mixtral: every expert starts as a copy of the dense MLP; the router is new (small random)."""
    import transformers as tf

    c = model.config
    cfg = tf.MixtralConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                           num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                           num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
                           max_position_embeddings=c.max_position_embeddings, num_local_experts=experts,
                           num_experts_per_tok=2, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=None)
    torch.manual_seed(seed)
    moe = tf.AutoModelForCausalLM.from_config(cfg).float().eval()
    src = model.state_dict()
    dst = moe.state_dict()
    new: dict[str, torch.Tensor] = {}
    for k, v in dst.items():
        if k in src:
            new[k] = src[k]
        elif ".mlp.experts." in k or ".block_sparse_moe.experts." in k:
            layer = k.split(".layers.")[1].split(".")[0]
            mlp = f"model.layers.{layer}.mlp."
            g, u, dn = src[mlp + "gate_proj.weight"], src[mlp + "up_proj.weight"], src[mlp + "down_proj.weight"]
            if k.endswith("gate_up_proj"):  # fused experts [E, 2*ffn, d] (transformers >= 5)
                new[k] = torch.cat([g, u], 0)[None].repeat(experts, 1, 1).reshape(v.shape) if v.shape[1] == 2 * g.shape[0] \
                    else torch.cat([g.T, u.T], 1)[None].repeat(experts, 1, 1)
            elif k.endswith("down_proj"):
                new[k] = dn[None].repeat(experts, 1, 1) if v.shape[1:] == dn.shape else dn.T[None].repeat(experts, 1, 1)
            elif k.endswith("w1.weight"):
                new[k] = g
            elif k.endswith("w3.weight"):
                new[k] = u
            elif k.endswith("w2.weight"):
                new[k] = dn
            else:
                raise KeyError(k)
        else:
            new[k] = v * 0.1 if "gate" in k else v  # router: small random
    moe.load_state_dict(new, strict=True)
    return moe


def extend_vocab(model: Model, n_new: int, seed: int) -> Model:
    """Append ``n_new`` embedding rows (mean + small noise, the usual recipe) to input and output embeddings."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        old_in = model.get_input_embeddings().weight
        old_out = model.get_output_embeddings().weight
        v = old_in.shape[0]
        model.resize_token_embeddings(v + n_new, mean_resizing=False)
        for emb, old in ((model.get_input_embeddings().weight, old_in), (model.get_output_embeddings().weight, old_out)):
            emb[v:] = old.mean(0) + 0.01 * old.std() * torch.randn(n_new, old.shape[1], generator=g)
    return model


def merge_linear(models: list[Model]) -> Model:
    out = copy.deepcopy(models[0])
    sds = [m.state_dict() for m in models]
    out.load_state_dict({k: sum(sd[k] for sd in sds) / len(sds) for k in sds[0]})
    return out


def merge_ties(base: Model, models: list[Model], density: float) -> Model:
    """TIES: trim each task vector to its top ``density`` by magnitude, elect a sign per weight by total
    mass, average the agreeing entries, add to the base."""
    out = copy.deepcopy(base)
    b = base.state_dict()
    tvs = [{k: m.state_dict()[k] - b[k] for k in b} for m in models]
    new = {}
    for k in b:
        stack = torch.stack([tv[k] for tv in tvs])
        if stack[0].numel() > 1:
            flat = stack.abs().reshape(len(tvs), -1)
            kth = max(1, int(flat.shape[1] * (1 - density)))
            thr = flat.kthvalue(kth, dim=1).values.reshape(-1, *([1] * (stack.ndim - 1)))
            stack = torch.where(stack.abs() >= thr, stack, torch.zeros_like(stack))
        sign = torch.sign(stack.sum(0))
        agree = (torch.sign(stack) == sign) & (stack != 0)
        merged = (stack * agree).sum(0) / agree.sum(0).clamp(min=1)
        new[k] = b[k] + merged
    out.load_state_dict(new)
    return out


def state_dict_np(model: Model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
