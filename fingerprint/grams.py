"""Per-layer input Grams of Q and K, plain (AWM) or RoPE-pair normalized (lineage).

Pair normalization: ``K = Σ_b W_bᵀ W_b / ‖W_b W_bᵀ‖_F`` over disjoint row blocks ``b`` — the two rows
of each RoPE frequency pair inside each head (HF ``rotate_half`` pairs ``i`` with ``i + r/2``;
interleaved pairs ``2i`` with ``2i + 1``), the non-rotary rows of a head as one block, or a whole
head without RoPE. A function-preserving rescaling of a head (``q_h ← c q_h``, ``k_h ← k_h / c``) or
a scaled rotation inside a pair multiplies ``W_bᵀ W_b`` and ``‖W_b W_bᵀ‖_F`` by the same factor, so
``K`` is unchanged. Because the blocks are disjoint, ``K = (diag(s) W)ᵀ (diag(s) W)`` with
``s = ‖W_b W_bᵀ‖_F^{-1/2}`` on the rows of block ``b``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the torch versions below import it when called; row_blocks and pair_scales never do
    import torch


def row_blocks(n_heads: int, head_dim: int, rotary_dim: int, style: str) -> np.ndarray:
    """Block id of every row of a (heads · head_dim)-row projection."""
    ids = np.empty(n_heads * head_dim, dtype=np.int64)
    nxt = 0
    r = rotary_dim if style != "none" else 0
    for h in range(n_heads):
        base = h * head_dim
        if style == "half":
            for i in range(r // 2):
                ids[base + i] = ids[base + i + r // 2] = nxt
                nxt += 1
        elif style == "interleaved":
            for i in range(r // 2):
                ids[base + 2 * i] = ids[base + 2 * i + 1] = nxt
                nxt += 1
        if r < head_dim:
            ids[base + r : base + head_dim] = nxt
            nxt += 1
    return ids


def pair_scales(w: np.ndarray, blocks: np.ndarray, head_dim: int) -> np.ndarray:
    """``s = ‖W_b W_bᵀ‖_F^{-1/2}`` on the rows of each block ``b`` (numpy, float64), so that
    ``(diag(s) W)ᵀ (diag(s) W)`` is the pair-normalized Gram.

    Blocks never cross heads (:func:`row_blocks`), so ``‖W_b W_bᵀ‖_F² = Σ_{i,j∈b} (w_i·w_j)²`` is read off
    the per-head row Grams, ``heads × head_dim² × d`` work instead of ``rows² × d``.
    """
    rows, d = w.shape
    if rows % head_dim:
        raise ValueError(f"{rows} rows are not whole heads of {head_dim}")
    heads = w.reshape(rows // head_dim, head_dim, d)
    r = np.matmul(heads, heads.transpose(0, 2, 1)).astype(np.float64)
    b = blocks.reshape(rows // head_dim, head_dim)
    contrib = np.where(b[:, :, None] == b[:, None, :], r * r, 0.0).sum(axis=2).reshape(-1)
    norms2 = np.bincount(blocks, weights=contrib, minlength=int(blocks.max()) + 1)
    # An all-zero block (magnitude pruning) contributes nothing however it is scaled: 0, not 0 · ∞.
    live = norms2 > 1e-150
    scales: np.ndarray = np.where(live, np.where(live, norms2, 1.0) ** -0.25, 0.0)
    out: np.ndarray = scales[blocks]
    return out


def pair_normalized_gram(w: torch.Tensor, blocks: np.ndarray) -> torch.Tensor:
    """``Σ_b W_bᵀ W_b / ‖W_b W_bᵀ‖_F`` (see module docstring), float64."""
    import torch

    w = w.to(torch.float64)
    n_blocks = int(blocks.max()) + 1
    idx = torch.from_numpy(blocks)
    # ‖W_b W_bᵀ‖_F² = Σ_{i,j ∈ b} (w_i · w_j)²; blocks have ≤ head_dim rows, so loop over offsets.
    norms2 = torch.zeros(n_blocks, dtype=torch.float64)
    gram_rows = w @ w.T
    same = idx[:, None] == idx[None, :]
    contrib = torch.where(same, gram_rows**2, torch.zeros((), dtype=torch.float64)).sum(dim=1)
    norms2.index_add_(0, idx, contrib)
    s = norms2.clamp_min(1e-300).pow(-0.25)[idx]
    ws = w * s[:, None]
    return ws.T @ ws


def plain_gram(w: torch.Tensor) -> torch.Tensor:
    """``Wᵀ W`` in float64."""
    import torch

    w = w.to(torch.float64)
    return w.T @ w
