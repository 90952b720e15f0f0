"""Format converters used by the zoo and the tests: GGUF (F16/Q8_0/Q4_K...), fp8, GPTQ/AWQ int4, sharding.

These write what real tools write (llama.cpp naming and Q/K row permutation, DeepSeek-style fp8
block scales, transformers-style shard indexes), so the readers are tested against real layouts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import quants
from safetensors.numpy import load_file, save_file

LLAMA_LIKE = {"llama", "mistral", "qwen2"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation (HF rotate_half order → interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Quantize rows (length multiple of 256) to GGML Q4_K blocks (simple min/max search).

    Block layout (144 bytes per 256 values): f16 d, f16 dmin, 12 bytes of packed 6-bit
    sub-block scales/mins for 8 sub-blocks of 32, then 128 bytes of 4-bit quants. A value is
    ``d·sc·q − dmin·m``.
    """
    rows, n = x.shape
    blocks = x.reshape(-1, 8, 32).astype(np.float32)
    mn = np.minimum(blocks.min(axis=2), 0.0)
    mx = blocks.max(axis=2)
    scale = np.maximum((mx - mn) / 15.0, 1e-12)  # per sub-block step
    minv = -mn
    d = np.maximum(scale.max(axis=1) / 63.0, 1e-12)
    dmin = np.maximum(minv.max(axis=1) / 63.0, 1e-12)
    sc = np.clip(np.round(scale / d[:, None]), 1, 63).astype(np.uint8)
    m = np.clip(np.round(minv / dmin[:, None]), 0, 63).astype(np.uint8)
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    eff = d16.astype(np.float32)[:, None] * sc
    effm = dmin16.astype(np.float32)[:, None] * m
    q = np.clip(np.round((blocks + effm[:, :, None]) / eff[:, :, None]), 0, 15).astype(np.uint8)
    packed = np.zeros((blocks.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    qs = np.zeros((blocks.shape[0], 128), dtype=np.uint8)
    for j in range(4):  # 64 values per 32 bytes: low nibble sub-block 2j, high nibble 2j+1
        qs[:, 32 * j : 32 * j + 32] = q[:, 2 * j] | (q[:, 2 * j + 1] << 4)
    out = np.concatenate([d16.view(np.uint8).reshape(-1, 2), dmin16.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)
    return out.reshape(rows, n // 256 * 144)


K_FALLBACK = {QT.Q2_K: "Q4_0", QT.Q3_K: "Q4_0", QT.Q4_K: "Q5_0", QT.Q5_K: "Q5_1", QT.Q6_K: "Q8_0"}


def _encode(arr: np.ndarray, qtype: str) -> tuple[np.ndarray, QT | None]:
    if arr.ndim == 1 or qtype == "F32":
        return arr.astype(np.float32), None
    if qtype == "F16":
        return arr.astype(np.float16), None
    t = QT[qtype]
    # llama.cpp falls back per tensor when the row length is not a multiple of the block size, to the
    # nearest legacy type (llama_tensor_get_type: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; Q2_K/Q3_K go
    # to IQ4_NL, which gguf-py cannot write, so Q4_0 here). A blanket Q8_0 made the tiny zoo's (d=64)
    # "Q4_K" copy byte-identical to its Q8_0 copy, so it tested nothing.
    block = 256 if t in K_FALLBACK else 32
    if arr.shape[-1] % block:
        fallback = K_FALLBACK.get(t, "Q8_0")
        return _encode(arr, fallback if arr.shape[-1] % 32 == 0 else "F16")
    if t == QT.Q4_K:
        return quantize_q4_k(arr), t
    return quants.quantize(arr.astype(np.float32), t), t


def to_gguf(src: Path, out: Path, qtype: str = "F16", tokens: list[str] | None = None) -> Path:
    """Convert a llama-like HF safetensors model to GGUF the way llama.cpp does."""
    cfg = json.loads((src / "config.json").read_text())
    arch = cfg["model_type"]
    if arch not in LLAMA_LIKE:
        raise ValueError(f"to_gguf supports {sorted(LLAMA_LIKE)}, not {arch}")
    sd = load_file(str(src / "model.safetensors"))
    n_h, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    d, n_layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    w = gguf.GGUFWriter(str(out), arch)
    w.add_block_count(n_layers)
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(d)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_h)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(d // n_h)
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    if tokens is None:
        tokens = _tokens_of(src, cfg["vocab_size"])
    w.add_tokenizer_model("gpt2" if any(t.startswith("Ġ") for t in tokens) else "llama")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                 "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
                 "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
                 "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
                 "self_attn.v_proj.bias": "attn_v.bias",
                 "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                 "mlp.down_proj.weight": "ffn_down.weight"}
    for name, arr in sorted(sd.items()):
        if name in names:
            gname = names[name]
        else:
            parts = name.split(".")
            gname = f"blk.{parts[2]}." + per_layer[".".join(parts[3:])]
        if arch == "llama" and gname.endswith(("attn_q.weight", "attn_k.weight")):
            arr = _permute(arr, n_h if "attn_q" in gname else n_kv)
        data, raw = _encode(arr, qtype)
        if raw is None:
            w.add_tensor(gname, data)
        else:
            w.add_tensor(gname, data, raw_shape=data.shape, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _tokens_of(src: Path, vocab_size: int) -> list[str]:
    tj = src / "tokenizer.json"
    if tj.exists():
        vocab = json.loads(tj.read_text())["model"]["vocab"]
        toks = [""] * vocab_size
        for t, i in vocab.items():
            if i < vocab_size:
                toks[i] = t
        return [t or f"<unused{i}>" for i, t in enumerate(toks)]
    return [f"<tok{i}>" for i in range(vocab_size)]


def _fp8(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def to_fp8(src: Path, out: Path, scheme: str = "tensor", block: int = 128) -> Path:
    """Quantize every 2-D projection (not embeddings/lm_head) to float8_e4m3 with scales.

    ``scheme``: ``tensor`` (scalar ``weight_scale``), ``channel`` (``weight_scale [out, 1]``) or
    ``block`` (``weight_scale_inv`` per ``block × block`` tile, DeepSeek-V3 style).
    """
    import torch

    out.mkdir(parents=True, exist_ok=True)
    sd = load_file(str(src / "model.safetensors"))
    res: dict[str, np.ndarray] = {}
    fp8_max = 448.0
    for name, w in sd.items():
        if w.ndim != 2 or "embed" in name or "lm_head" in name:
            res[name] = w
            continue
        if scheme == "tensor":
            s = np.array(np.abs(w).max() / fp8_max, dtype=np.float32)
            q, sname, sval = w / s, name + "_scale", s.reshape(())
        elif scheme == "channel":
            s = (np.abs(w).max(axis=1, keepdims=True) / fp8_max).astype(np.float32)
            q, sname, sval = w / s, name + "_scale", s
        else:
            bo, bi = -(-w.shape[0] // block), -(-w.shape[1] // block)
            s = np.zeros((bo, bi), dtype=np.float32)
            for i in range(bo):
                for j in range(bi):
                    s[i, j] = np.abs(w[i * block : (i + 1) * block, j * block : (j + 1) * block]).max() / fp8_max
            full = np.repeat(np.repeat(s, block, 0), block, 1)[: w.shape[0], : w.shape[1]]
            q, sname, sval = w / full, name + "_scale_inv", s
        res[name] = _fp8(q.astype(np.float32))
        res[sname] = sval
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in res.items()}
    for k, v in res.items():
        if k.endswith(".weight") and v.dtype == np.uint8 and (k + "_scale" in res or k + "_scale_inv" in res):
            tensors[k] = tensors[k].view(torch.float8_e4m3fn)
    from safetensors.torch import save_file as save_torch

    save_torch(tensors, str(out / "model.safetensors"))
    _copy_side_files(src, out)
    return out


def shard(src: Path, out: Path, n_shards: int = 3) -> Path:
    """Split ``model.safetensors`` into ``n_shards`` files with a transformers-style index."""
    out.mkdir(parents=True, exist_ok=True)
    sd = load_file(str(src / "model.safetensors"))
    names = sorted(sd)
    weight_map: dict[str, str] = {}
    per = -(-len(names) // n_shards)
    for i in range(n_shards):
        fn = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: sd[n] for n in names[i * per : (i + 1) * per]}
        save_file(part, str(out / fn))
        weight_map.update(dict.fromkeys(part, fn))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _copy_side_files(src, out)
    return out


AWQ_ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7])
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _pack(q: np.ndarray, axis: int, order: np.ndarray | None = None) -> np.ndarray:
    """Eight nibbles per int32 along ``axis`` (low bits first; AWQ's interleaved ``order`` within each word)."""
    q = np.moveaxis(q.astype(np.uint32), axis, -1)
    q = q.reshape(*q.shape[:-1], q.shape[-1] // 8, 8)
    if order is not None:
        q = q[..., order]
    words = np.zeros(q.shape[:-1], np.uint32)
    for i in range(8):
        words |= q[..., i] << np.uint32(4 * i)
    return np.ascontiguousarray(np.moveaxis(words, -1, axis)).view(np.int32)


def to_int4(src: Path, out: Path, method: str = "gptq", group: int = 128) -> Path:
    """Quantize every decoder linear layer to 4 bits, asymmetric round-to-nearest per ``group`` input features
    (``scale = (max − min)/15``, ``zero = round(−min/scale)``, the range widened to hold 0), packed as AutoGPTQ (``qweight [in/8, out]``,
    ``qzeros`` v1 with the ``−1`` offset, ``scales``, ``g_idx``) or AutoAWQ writes it (``qweight [in, out/8]``
    in AWQ's nibble order), with ``quantization_config`` in ``config.json``. RTN, not GPTQ's error feedback:
    the layout is what is tested."""
    out.mkdir(parents=True, exist_ok=True)
    sd = load_file(str(src / "model.safetensors"))
    res: dict[str, np.ndarray] = {}
    for name, w in sd.items():
        if w.ndim != 2 or not name.endswith(tuple(f"{p}.weight" for p in _LINEAR)):
            res[name] = w
            continue
        n_out, n_in = w.shape
        g = w.astype(np.float64).reshape(n_out, n_in // group, group)
        lo, hi = np.minimum(g.min(axis=2), 0.0), np.maximum(g.max(axis=2), 0.0)  # the range holds 0, as AutoGPTQ's
        scale = np.maximum(hi - lo, 1e-12) / 15.0
        # AutoGPTQ's v1 layout stores z − 1 in a nibble, so it cannot hold a zero point of 0 (read back as 16)
        zero = np.clip(np.round(-lo / scale), 1 if method == "gptq" else 0, 15)
        q = np.clip(np.round(g / scale[..., None]) + zero[..., None], 0, 15).reshape(n_out, n_in).astype(np.uint32)
        base = name[: -len(".weight")]
        scales = scale.T.astype(np.float16)  # [groups, out]
        zeros = zero.T.astype(np.uint32)
        if method == "gptq":
            res[base + ".qweight"] = _pack(q.T, 0)  # [in/8, out]
            res[base + ".qzeros"] = _pack(zeros - 1, 1)  # v1 checkpoints store z − 1
            res[base + ".g_idx"] = (np.arange(n_in) // group).astype(np.int32)
        else:
            res[base + ".qweight"] = _pack(q.T, 1, AWQ_ORDER)  # [in, out/8]
            res[base + ".qzeros"] = _pack(zeros, 1, AWQ_ORDER)
        res[base + ".scales"] = scales
    # safetensors' numpy writer stores a transposed view's memory as is: every array goes out C-contiguous
    save_file({k: np.ascontiguousarray(v) for k, v in res.items()}, str(out / "model.safetensors"))
    _copy_side_files(src, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": method, "bits": 4, "group_size": group}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _copy_side_files(src: Path, out: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copy2(f, out / f.name)
