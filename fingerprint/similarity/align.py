"""Aligning the residual streams of two models on shared-token embeddings.

* :func:`signed_lap`: AWM's alignment. Columns of the two embedding matrices (over shared tokens)
  are compared by cosine; a (rectangular) linear assignment on ``1 − |cos|`` maps every coordinate
  of the narrower model to one of the wider model, with the sign of the matched cosine.
* :func:`procrustes`: orthogonal Procrustes, ``R = argmin ‖E_B R − E_T‖_F`` over matrices with
  orthonormal columns, ``R = U Vᵀ`` from ``E_Bᵀ E_T = U Σ Vᵀ``. Undoes a dense residual rotation,
  which a signed permutation cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class SignedPermutation:
    """``T``'s coordinate ``j`` corresponds to ``B``'s coordinate ``index[j]`` with sign ``sign[j]``.

    Attributes:
        index: length ``d_T`` array of indices into ``B``'s ``d_B`` coordinates.
        sign: length ``d_T`` array of ±1.
        quality: mean matched ``|cos|``.
    """

    index: np.ndarray
    sign: np.ndarray
    quality: float


def column_cosines(e_b: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """``S_ij = cos(E_B[:, i], E_T[:, j])`` over the shared tokens (rows)."""
    b = e_b.to(torch.float64)
    t = e_t.to(torch.float64)
    b = b / b.norm(dim=0, keepdim=True).clamp_min(1e-12)
    t = t / t.norm(dim=0, keepdim=True).clamp_min(1e-12)
    out: torch.Tensor = b.T @ t
    return out


def signed_lap(e_b: torch.Tensor, e_t: torch.Tensor) -> SignedPermutation:
    """AWM's signed linear assignment of ``T``'s coordinates onto ``B``'s (``d_T ≤ d_B``).

    Cost ``C_ij = 1 − |S_ij|``; ``scipy.optimize.linear_sum_assignment`` (rectangular when the
    widths differ, as for width-pruned models); signs from the matched cosines.
    """
    s = column_cosines(e_b, e_t).cpu().numpy()
    rows, cols = linear_sum_assignment(1.0 - np.abs(s))
    index = np.empty(s.shape[1], dtype=np.int64)
    index[cols] = rows
    matched = s[index, np.arange(s.shape[1])]
    sign = np.where(matched >= 0, 1.0, -1.0)
    return SignedPermutation(index, sign, float(np.abs(matched).mean()))


def chance_lap_quality(e_b: torch.Tensor, e_t: torch.Tensor, seed: int = 0) -> float:
    """Matched ``|cos|`` of the same LAP after shuffling ``T``'s token rows: the chance level.

    It depends on the number of shared tokens and the widths, as the independent-pair baseline
    (about ``1.4/√n`` for isotropic columns) does, but is measured on these very matrices.
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(e_t.shape[0], generator=g).to(e_t.device)
    return signed_lap(e_b, e_t[perm]).quality


def procrustes(e_b: torch.Tensor, e_t: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Orthogonal Procrustes from ``B``'s residual basis to ``T``'s.

    Returns:
        ``R`` (``d_B × d_T``, orthonormal columns) minimising ``‖E_B R − E_T‖_F``, and the explained
        share ``1 − ‖E_B R − E_T‖² / ‖E_T‖²`` after scaling ``E_B R`` optimally.
    """
    b = e_b.to(torch.float64)
    t = e_t.to(torch.float64)
    u, _, vh = torch.linalg.svd(b.T @ t, full_matrices=False)
    r = u @ vh
    fit = b @ r
    scale = float((fit * t).sum() / (fit * fit).sum().clamp_min(1e-30))
    resid = float(((scale * fit - t) ** 2).sum() / (t * t).sum().clamp_min(1e-30))
    return r, 1.0 - resid


def procrustes_fit(e_b: torch.Tensor, e_t: torch.Tensor) -> float:
    """The explained share of :func:`procrustes` without forming ``R`` when the widths are equal.

    With ``Bᵀ T = U Σ Vᵀ`` and ``R = U Vᵀ`` square orthogonal, ``⟨B R, T⟩ = tr Σ`` and ``‖B R‖ = ‖B‖``, and
    the optimally scaled residual gives ``1 − resid = (tr Σ)² / (‖B‖² ‖T‖²)``: singular values only, no
    ``anchors × d × d`` product (most of the cost when the fit is only a gate, as for unrelated pairs).
    """
    b = e_b.to(torch.float64)
    t = e_t.to(torch.float64)
    if b.shape[1] != t.shape[1]:
        return procrustes(b, t)[1]
    nuc = float(torch.linalg.svdvals(b.T @ t).sum())
    return nuc * nuc / max(float((b * b).sum()) * float((t * t).sum()), 1e-300)



def match_layers(n_b: int, n_t: int, similarity: Callable[[int, int], float]) -> list[tuple[int, int]]:
    """Which layer of B each layer of T is compared with: the identity when the depths agree, else AWM's
    linear assignment maximising the summed ``similarity(i, j)`` (for depth-pruned or grown models)."""
    if n_b == n_t:
        return [(i, i) for i in range(n_b)]
    mat = np.array([[similarity(i, j) for j in range(n_t)] for i in range(n_b)])
    r, c = linear_sum_assignment(-mat)
    return sorted(zip(r.tolist(), c.tolist()))
