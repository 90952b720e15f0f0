"""How stored projections map to per-head Q, K and V rows in Hugging Face order.

Three layouts need more than a name: fused QKV tensors (:func:`split_fused_qkv`), llama.cpp's
permuted Q/K rows (:func:`unpermute_gguf_rows`) and multi-head latent attention (:func:`mla_heads`).

Multi-head latent attention (DeepSeek-V2/V3/R1, Kimi-K2) is read as ordinary heads. MLA projects the (normed) residual ``x`` into low-rank latents and expands them per head:

* queries ``q_h = B_Q,h · diag(γ_q) · rms(A_Q x)`` (or ``W_Q,h x`` without a query latent, V2-Lite),
  each head ``[q_nope (n) | q_pe (r)]``;
* keys ``k_h = [k_nope,h | k_pe]`` with ``k_nope,h = B_KV,h^{nope} · diag(γ_kv) · rms(A_KV^{lat} x)`` and
  ``k_pe = A_KV^{pe} x``, one RoPE key shared by every head;
* values ``v_h = B_KV,h^{v} · diag(γ_kv) · rms(A_KV^{lat} x)``.

Dropping the per-token RMS scalars (a positive factor per token and latent, not a weight), the
bilinear form ``q_hᵀ k_h`` is that of the projections ``W_Q,h = B_Q,h diag(γ_q) A_Q`` and
``W_K,h = [B_KV,h^{nope} diag(γ_kv) A_KV^{lat} ; A_KV^{pe}]``. These products are what the fingerprint
reads, with each head's rows reordered to ``[rope | nope]`` so the RoPE pairs come first as in every
other family. Why the fingerprint stays invariant to the attacks it is for:

* a rotation or permutation of the residual stream acts on the columns of ``A_Q`` and ``A_KV`` only,
  so on the products' columns, as for a plain ``W_Q``;
* an orthogonal change of a latent basis (``A ← P A``, ``B ← B diag(γ) Pᵀ diag(γ')^{-1}``) commutes with
  RMS normalisation and cancels inside the product; a scaling of ``A`` is undone by the RMS norm and
  scales the product's rows by one factor, which the RoPE-pair normalisation of the Grams divides out
  (``k_pe`` and each head's ``nope`` rows are separate blocks);
* a permutation of heads permutes the rows of ``B_Q`` and ``B_KV`` together, as in multi-head attention.
"""

from __future__ import annotations

import numpy as np

from fingerprint.errors import ArchitectureMismatchError


def split_fused_qkv(
    w: np.ndarray, layout: str, n_heads: int, n_kv: int, head_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a fused QKV weight (rows are outputs) into Q, K, V by its layout.

    * ``contiguous``: rows ``[q (H·hd) | k (KV·hd) | v (KV·hd)]``;
    * ``per_head``: rows reshape to ``(H, 3, hd)`` (GPT-NeoX, Falcon MHA); needs ``KV == H``;
    * ``grouped``: rows reshape to ``(KV, H/KV + 2, hd)``: each KV group holds its query heads, then
      its key and value head (Falcon new decoder architecture).

    Works for 1-D biases too (treated as a single column).
    """
    rest = w.shape[1:]
    if layout == "contiguous":
        nq, nk = n_heads * head_dim, n_kv * head_dim
        if w.shape[0] != nq + 2 * nk:
            raise ArchitectureMismatchError("qkv", f"fused QKV has {w.shape[0]} rows, expected {nq + 2 * nk}")
        return w[:nq], w[nq : nq + nk], w[nq + nk :]
    if layout == "per_head":
        if n_kv != n_heads or w.shape[0] != 3 * n_heads * head_dim:
            raise ArchitectureMismatchError("qkv", f"per-head fused QKV of {w.shape[0]} rows does not fit {n_heads} heads")
        r = w.reshape(n_heads, 3, head_dim, *rest)
        return (r[:, 0].reshape(-1, *rest), r[:, 1].reshape(-1, *rest), r[:, 2].reshape(-1, *rest))
    if layout == "grouped":
        g = n_heads // n_kv
        if w.shape[0] != n_kv * (g + 2) * head_dim:
            raise ArchitectureMismatchError("qkv", f"grouped fused QKV of {w.shape[0]} rows does not fit")
        r = w.reshape(n_kv, g + 2, head_dim, *rest)
        return (r[:, :g].reshape(-1, *rest), r[:, g].reshape(-1, *rest), r[:, g + 1].reshape(-1, *rest))
    raise ArchitectureMismatchError("qkv", f"unknown fused layout {layout!r}")


def unpermute_gguf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs back to HF ``rotate_half`` order).

    llama.cpp stores ``w.reshape(H, 2, hd/2, ...).swapaxes(1, 2)``; this applies the inverse.
    """
    rest = w.shape[1:]
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def mla_heads(
    q: np.ndarray | tuple[np.ndarray, np.ndarray | None, np.ndarray],
    kv_a: np.ndarray,
    kv_a_gain: np.ndarray | None,
    kv_b: np.ndarray,
    heads: int,
    nope: int,
    rope: int,
    v_dim: int,
    kv_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W_Q, W_K, W_V)`` of an MLA layer as ``(H·(r+n), d)``, ``(H·(r+n), d)``, ``(H·v, d)``.

    Args:
        q: ``W_Q`` (``(H·(n+r), d)``), or ``(A_Q, γ_q, B_Q)`` with a query latent.
        kv_a: ``A_KV`` = ``kv_a_proj_with_mqa``, ``(kv_rank + r, d)``: the latent rows, then ``k_pe``.
        kv_a_gain: ``γ_kv`` of ``kv_a_layernorm`` (``None``: none stored).
        kv_b: ``B_KV`` = ``kv_b_proj``, ``(H·(n + v), kv_rank)``.
    """
    if isinstance(q, tuple):
        qa, qg, qb = q
        wq = (qb * qg[None, :] if qg is not None else qb) @ qa
    else:
        wq = q
    d = kv_a.shape[1]
    hd = nope + rope
    if wq.shape != (heads * hd, d) or kv_a.shape[0] != kv_rank + rope or kv_b.shape != (heads * (nope + v_dim), kv_rank):
        raise ValueError(f"MLA shapes q {wq.shape}, kv_a {kv_a.shape}, kv_b {kv_b.shape} do not fit "
                         f"{heads} heads of {nope}+{rope} (values {v_dim}, latent {kv_rank})")
    lat = kv_a[:kv_rank] * kv_a_gain[:, None] if kv_a_gain is not None else kv_a[:kv_rank]
    b = kv_b.reshape(heads, nope + v_dim, kv_rank)
    k_nope = (b[:, :nope] @ lat).reshape(heads, nope, d)
    k_pe = np.broadcast_to(kv_a[kv_rank:], (heads, rope, d))
    k = np.concatenate([k_pe, k_nope], axis=1).reshape(heads * hd, d)
    qh = wq.reshape(heads, hd, d)
    qc = np.concatenate([qh[:, nope:], qh[:, :nope]], axis=1).reshape(heads * hd, d)
    v = (b[:, nope:] @ lat).reshape(heads * v_dim, d)
    return np.ascontiguousarray(qc), np.ascontiguousarray(k), np.ascontiguousarray(v)
