"""Function-preserving weight transforms ("attacks") on LLaMA-family HF state dicts.

Each returns a new state dict computing exactly the same function (up to float rounding):

* ``permute_hidden`` (T1) and ``signed_permute_hidden``: residual coordinates permuted (and sign
  flipped), norm gains permuted with them — RMSNorm commutes with signed permutations;
* ``fold_and_rotate`` (T3 + T5): fold every RMSNorm gain into its consumers, set gains to 1, then
  rotate the residual stream by a dense orthogonal ``R`` (``rms(xR) = rms(x)``);
* ``scale_qk_heads`` / ``scale_qk_pairs``: ``q ← c·q``, ``k ← k/c`` per (KV group, head) or per RoPE
  pair, pairs also rotated by a common 2×2 rotation (commutes with RoPE), ``c`` log-uniform;
* ``permute_heads``: KV heads (with their query groups and O columns) permuted;
* ``permute_mlp`` (T2): MLP neurons permuted;
* ``awq_scale``: per-channel ``s``: norm gains divided by ``s``, consumer input columns times ``s``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SD = dict[str, np.ndarray]


def _layers(cfg: dict[str, Any]) -> range:
    return range(int(cfg["num_hidden_layers"]))


def _dims(cfg: dict[str, Any]) -> tuple[int, int, int, int]:
    h = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or h)
    hd = int(cfg.get("head_dim") or cfg["hidden_size"] // h)
    return int(cfg["hidden_size"]), h, kv, hd


READERS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
           "mlp.gate_proj.weight", "mlp.up_proj.weight")
WRITERS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def _residual_map(sd: SD, cfg: dict[str, Any], m: np.ndarray, norms_perm: np.ndarray | None) -> SD:
    """Apply ``x ← x M`` to the residual stream (M orthogonal or signed permutation)."""
    out = dict(sd)
    out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"] @ m
    if "lm_head.weight" in sd:
        out["lm_head.weight"] = sd["lm_head.weight"] @ m
    for i in _layers(cfg):
        p = f"model.layers.{i}."
        for r in READERS:
            out[p + r] = sd[p + r] @ m
        for w in WRITERS:
            out[p + w] = m.T @ sd[p + w]
        if norms_perm is not None:
            for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
                out[p + n] = sd[p + n][norms_perm]
    if norms_perm is not None:
        out["model.norm.weight"] = sd["model.norm.weight"][norms_perm]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def signed_permute_hidden(sd: SD, cfg: dict[str, Any], seed: int = 0, signs: bool = True) -> SD:
    rng = np.random.default_rng(seed)
    d = int(cfg["hidden_size"])
    perm = rng.permutation(d)
    m = np.zeros((d, d), dtype=np.float64)
    m[perm, np.arange(d)] = rng.choice([-1.0, 1.0], d) if signs else 1.0
    return _residual_map(sd, cfg, m, perm)


def permute_hidden(sd: SD, cfg: dict[str, Any], seed: int = 0) -> SD:
    return signed_permute_hidden(sd, cfg, seed, signs=False)


def fold_norms(sd: SD, cfg: dict[str, Any]) -> SD:
    """Fold every RMSNorm gain into its consumers and set the gains to 1."""
    out = {k: v.astype(np.float64) for k, v in sd.items()}
    for i in _layers(cfg):
        p = f"model.layers.{i}."
        g1, g2 = out[p + "input_layernorm.weight"], out[p + "post_attention_layernorm.weight"]
        for r in READERS[:3]:
            out[p + r] = out[p + r] * g1[None, :]
        for r in READERS[3:]:
            out[p + r] = out[p + r] * g2[None, :]
        out[p + "input_layernorm.weight"] = np.ones_like(g1)
        out[p + "post_attention_layernorm.weight"] = np.ones_like(g2)
    gf = out["model.norm.weight"]
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"].copy()
    out["lm_head.weight"] = out["lm_head.weight"] * gf[None, :]
    out["model.norm.weight"] = np.ones_like(gf)
    return {k: v.astype(np.float32) for k, v in out.items()}


def fold_and_rotate(sd: SD, cfg: dict[str, Any], seed: int = 0) -> SD:
    """T3 + T5: fold gains, then a Haar-random dense rotation of the residual stream."""
    d = int(cfg["hidden_size"])
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    rot = q * np.sign(np.diag(r))[None, :]
    return _residual_map(fold_norms(sd, cfg), cfg, rot, None)


def _qk_scale(sd: SD, cfg: dict[str, Any], seed: int, per_pair: bool, lo: float, hi: float) -> SD:
    rng = np.random.default_rng(seed)
    _, h, kv, hd = _dims(cfg)
    g = h // kv
    out = dict(sd)
    for i in _layers(cfg):
        p = f"model.layers.{i}.self_attn."
        q = sd[p + "q_proj.weight"].astype(np.float64).reshape(h, hd, -1).copy()
        k = sd[p + "k_proj.weight"].astype(np.float64).reshape(kv, hd, -1).copy()
        for j in range(kv):
            if per_pair:
                for f in range(hd // 2):
                    c = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                    th = rng.uniform(0, 2 * np.pi)
                    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
                    rows = [f, f + hd // 2]  # HF rotate_half pairing
                    k[j, rows] = rot @ k[j, rows] / c
                    for hh in range(j * g, (j + 1) * g):
                        q[hh, rows] = c * (rot @ q[hh, rows])
            else:
                c = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                k[j] /= c
                q[j * g : (j + 1) * g] *= c
        out[p + "q_proj.weight"] = q.reshape(h * hd, -1).astype(np.float32)
        out[p + "k_proj.weight"] = k.reshape(kv * hd, -1).astype(np.float32)
    return out


def scale_qk_heads(sd: SD, cfg: dict[str, Any], seed: int = 0, lo: float = 0.01, hi: float = 100.0) -> SD:
    return _qk_scale(sd, cfg, seed, False, lo, hi)


def scale_qk_pairs(sd: SD, cfg: dict[str, Any], seed: int = 0, lo: float = 0.01, hi: float = 100.0) -> SD:
    return _qk_scale(sd, cfg, seed, True, lo, hi)


def permute_heads(sd: SD, cfg: dict[str, Any], seed: int = 0) -> SD:
    rng = np.random.default_rng(seed)
    d, h, kv, hd = _dims(cfg)
    g = h // kv
    out = dict(sd)
    for i in _layers(cfg):
        p = f"model.layers.{i}.self_attn."
        perm = rng.permutation(kv)
        qperm = np.concatenate([np.arange(j * g, (j + 1) * g) for j in perm])
        out[p + "q_proj.weight"] = sd[p + "q_proj.weight"].reshape(h, hd, -1)[qperm].reshape(h * hd, -1)
        out[p + "k_proj.weight"] = sd[p + "k_proj.weight"].reshape(kv, hd, -1)[perm].reshape(kv * hd, -1)
        out[p + "v_proj.weight"] = sd[p + "v_proj.weight"].reshape(kv, hd, -1)[perm].reshape(kv * hd, -1)
        out[p + "o_proj.weight"] = sd[p + "o_proj.weight"].reshape(d, h, hd)[:, qperm].reshape(d, h * hd)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def permute_mlp(sd: SD, cfg: dict[str, Any], seed: int = 0) -> SD:
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for i in _layers(cfg):
        p = f"model.layers.{i}.mlp."
        perm = rng.permutation(sd[p + "up_proj.weight"].shape[0])
        out[p + "gate_proj.weight"] = sd[p + "gate_proj.weight"][perm]
        out[p + "up_proj.weight"] = sd[p + "up_proj.weight"][perm]
        out[p + "down_proj.weight"] = np.ascontiguousarray(sd[p + "down_proj.weight"][:, perm])
    return out


def awq_scale(sd: SD, cfg: dict[str, Any], seed: int = 0, lo: float = 0.1, hi: float = 10.0) -> SD:
    rng = np.random.default_rng(seed)
    d = int(cfg["hidden_size"])
    out = dict(sd)
    for i in _layers(cfg):
        p = f"model.layers.{i}."
        for norm, readers in (("input_layernorm.weight", READERS[:3]), ("post_attention_layernorm.weight", READERS[3:])):
            s = np.exp(rng.uniform(np.log(lo), np.log(hi), d))
            out[p + norm] = (sd[p + norm] / s).astype(np.float32)
            for r in readers:
                out[p + r] = (sd[p + r] * s[None, :]).astype(np.float32)
    return out


ATTACKS = {
    "permute_hidden": permute_hidden,
    "signed_permute_hidden": signed_permute_hidden,
    "fold_and_rotate": fold_and_rotate,
    "scale_qk_heads": scale_qk_heads,
    "scale_qk_pairs": scale_qk_pairs,
    "permute_heads": permute_heads,
    "permute_mlp": permute_mlp,
    "awq_scale": awq_scale,
}
