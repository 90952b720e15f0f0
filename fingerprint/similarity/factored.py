"""The ``lineage`` method on sketches: unbiased CKA computed from Gram factors, never from Grams.

For ``K = F Fᵀ`` and ``L = G Gᵀ`` over the same ``n`` residual coordinates, with ``k = diag K``,
``K̃ = K − diag(k)`` (Song et al. 2012):

    HSIC_u ∝ tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · (K̃1)ᵀ(L̃1)
    tr(K̃ L̃) = ‖Fᵀ G‖²_F − kᵀl,   1ᵀK̃1 = ‖Fᵀ1‖² − Σk,   K̃1 = F(Fᵀ1) − k

so a layer costs O(n·r_F·r_G) instead of O(n²·rows). With exact factors this equals U-centred CKA on
the Grams; with rank-``r`` factors the error is bounded by the dropped tail share of ``‖K‖_F²``. When the
factors are wide (r² ≥ n) and n is moderate, dense U-centred Grams are cheaper and are used instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fingerprint import device
from fingerprint.anchors import bottom_k
from fingerprint.similarity.align import chance_lap_quality, match_layers, procrustes_gate, procrustes_views, signed_lap
from fingerprint.similarity.null import null_sd
from fingerprint.similarity.verdict import Gates, LayerRow, SketchComparison, too_few_shared
from fingerprint.sketch import Sketch

#: Below this width, and when factors are wide (r² ≥ n), a pair is scored on dense U-centred Grams:
#: O(n²) per CKA instead of O(n·r²), at n² memory per Gram (32 MB at 2048).
DENSE_MAX = 2048


@dataclass
class Factor:
    """A Gram factor with the statistics its HSIC terms need, precomputed once; or, in dense mode, the
    U-centred Gram itself (``centred``)."""

    f: torch.Tensor
    diag: torch.Tensor
    k1: torch.Tensor
    one: float
    self_h: float
    centred: torch.Tensor | None = None
    gram: torch.Tensor | None = None


def _on(x: np.ndarray) -> torch.Tensor:
    """A sketch array as a tensor on the compute device (:mod:`fingerprint.device`; no copy on the CPU)."""
    return torch.from_numpy(x).to(device.current())


def use_dense(n: int, ranks: list[int]) -> bool:
    return n <= DENSE_MAX and max(ranks) ** 2 >= n


def factor(f: torch.Tensor, dense: bool = False) -> Factor:
    if dense:

        return _dense(f, f @ f.T)
    diag = (f * f).sum(dim=1)
    s = f.sum(dim=0)
    k1 = f @ s - diag
    one = float(s @ s - diag.sum())
    fac = Factor(f, diag, k1, one, 0.0)
    fac.self_h = _hsic(fac, fac)
    return fac


def _dense(f: torch.Tensor, gram: torch.Tensor) -> Factor:
    from fingerprint.similarity.cka import u_center

    c = u_center(gram)
    empty = torch.empty(0, dtype=gram.dtype, device=gram.device)
    return Factor(f, empty, empty, 0.0, float((c * c).sum()), c, gram)


def _hsic(a: Factor, b: Factor) -> float:
    if a.centred is not None and b.centred is not None:
        # ⟨K_c, L_c⟩ is n(n−3)·HSIC_u: the same constant for every term of a CKA, so it cancels.
        return float((a.centred * b.centred).sum())
    if a.centred is not None or b.centred is not None:
        raise ValueError("a CKA needs both Grams in the same (dense or factored) form")
    n = a.f.shape[0]
    cross = a.f.T @ b.f
    tr = float((cross * cross).sum() - a.diag @ b.diag)
    return tr + a.one * b.one / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.k1 @ b.k1)


def cka(a: Factor, b: Factor) -> float:
    """Unbiased linear CKA from factors (0 when either side is degenerate)."""
    if a.self_h <= 1e-30 or b.self_h <= 1e-30:
        return 0.0
    return float(_hsic(a, b) / (a.self_h * b.self_h) ** 0.5)


def _signed_rows(f: torch.Tensor, index: np.ndarray, sign: np.ndarray) -> torch.Tensor:
    return f[torch.from_numpy(index).to(f.device)] * torch.from_numpy(sign).to(f.device, f.dtype)[:, None]


def zero_diag_inner(a: Factor, b: Factor) -> float:
    """``⟨Ã, B̃⟩`` of the two uncentred Grams with their diagonals zeroed: ``‖FᵀG‖² − diag·diag``."""
    if a.gram is not None and b.gram is not None:
        return float(torch.dot(a.gram.reshape(-1), b.gram.reshape(-1)) - torch.diagonal(a.gram) @ torch.diagonal(b.gram))
    cross = a.f.T @ b.f
    return float((cross * cross).sum() - a.diag @ b.diag)


def inner_matrix(items: list[Factor], fn: Callable[[Factor, Factor], float]) -> np.ndarray:
    """The symmetric matrix ``fn(items[g], items[h])``."""
    g = len(items)
    out = np.empty((g, g))
    for i in range(g):
        for j in range(i, g):
            out[i, j] = out[j, i] = fn(items[i], items[j])
    return out


class TargetWork:
    """Work on one suspect that no base changes, kept across the bases of a shortlist.

    Matching scores one suspect against several bases; the suspect is the target of every comparison
    (bases are at least as wide), so its factors and the inner products of its Grams (the target's side
    of the null, :mod:`.null`) are computed once.
    """

    def __init__(self, sketch: Sketch) -> None:
        self.sketch = sketch
        self._factors: dict[bool, list[tuple[Factor, Factor]]] = {}
        self._tt: dict[bool, np.ndarray] = {}

    def factors(self, dense: bool) -> list[tuple[Factor, Factor]]:
        if dense not in self._factors:
            self._factors[dense] = [(factor(_on(q), dense), factor(_on(k), dense))
                                    for q, k in zip(self.sketch.q, self.sketch.k)]
        return self._factors[dense]

    def target_inner(self, dense: bool) -> np.ndarray:
        """``⟨T̃_g, T̃_h⟩`` over all of the target's Grams, ordered Q₀, K₀, Q₁, K₁, …"""
        if dense not in self._tt:
            self._tt[dense] = inner_matrix([f for pair in self.factors(dense) for f in pair], zero_diag_inner)
        return self._tt[dense]


def analytic_null(aligned: list[tuple[Factor, Factor]], work: TargetWork, dense: bool,
                  pairs: list[tuple[int, int]]) -> float:
    """``σ₀`` of the score over ``pairs`` (base layer, target layer) under random signed permutations
    (:func:`fingerprint.similarity.null.null_sd`)."""
    grams = [f for i, _ in pairs for f in aligned[i]]
    slots = [2 * j + s for _, j in pairs for s in (0, 1)]
    tt = work.target_inner(dense)[np.ix_(slots, slots)]
    # ⟨A_g, A_h⟩ of the U-centred aligned Grams is _hsic's unnormalized HSIC, in either form; dense
    # Grams take one product of the stacked matrices (read once, not once per pair: 2L(2L+1)/2 of them)
    # instead of a pass per pair.
    if all(g.centred is not None for g in grams):
        c = torch.stack([g.centred.reshape(-1) for g in grams if g.centred is not None])
        aa = (c @ c.T).cpu().numpy().astype(np.float64)
    else:
        aa = inner_matrix(grams, _hsic)
    return null_sd(aa, tt, work.sketch.width)


def score_layers(fb: list[tuple[Factor, Factor]], ft: list[tuple[Factor, Factor]],
                 pairs: list[tuple[int, int]] | None) -> tuple[list[LayerRow], float]:
    """Mean CKA of Q and K over matched layers (identity when depths agree, else LAP on the CKA matrix)."""
    if pairs is None:
        pairs = match_layers(len(fb), len(ft), lambda i, j: (cka(fb[i][0], ft[j][0]) + cka(fb[i][1], ft[j][1])) / 2)
    rows = [(i, j, cka(fb[i][0], ft[j][0]), cka(fb[i][1], ft[j][1])) for i, j in pairs]
    return rows, (float(np.mean([r[2] for r in rows])) + float(np.mean([r[3] for r in rows]))) / 2


def compare_sketches(a: Sketch, b: Sketch, gates: Gates, work: TargetWork | None = None) -> SketchComparison:
    """Align ``b`` onto ``a`` (the wider one is the reference) and score; see :mod:`.lineage` for the rules.

    ``work`` keeps the target's share of the work for the next comparison; it is used only when its
    sketch is the target here (the narrower one, ``b`` on a tie).
    """
    t0 = time.perf_counter()
    keys = bottom_k(sorted(set(a.index) & set(b.index)), gates.max_anchors)
    if len(keys) < gates.min_shared:
        raise too_few_shared(len(keys))
    swap = b.width > a.width
    mb, mt = (b, a) if swap else (a, b)
    rb = [mb.index[k] for k in keys]
    rt = [mt.index[k] for k in keys]
    e_b, e_t = mb.embed[rb], mt.embed[rt]
    sp = signed_lap(e_b, e_t)
    chance = chance_lap_quality(e_b, e_t)
    tb = [(_on(q), _on(k)) for q, k in zip(mb.q, mb.k)]
    dense = use_dense(mt.width, [f.shape[1] for f in [*mb.q, *mb.k, *mt.q, *mt.k]])
    if work is None or work.sketch is not mt:
        work = TargetWork(mt)
    ft = work.factors(dense)
    aligned = [(factor(_signed_rows(q, sp.index, sp.sign), dense), factor(_signed_rows(k, sp.index, sp.sign), dense))
               for q, k in tb]
    rows, score = score_layers(aligned, ft, None)
    alignment, fit, fit0, notes = "signed-lap", None, None, []
    credible = not (sp.quality < gates.poor_ratio * chance or sp.quality < gates.poor_abs)
    if not credible:
        view_b, view_t = [e_b], [e_t]
        if mb.lm_head is not None and mt.lm_head is not None:
            view_b.append(mb.lm_head[rb])
            view_t.append(mt.lm_head[rt])
        xb, xt = procrustes_views(view_b), procrustes_views(view_t)
        fit, fit0, r = procrustes_gate(xb, xt, gates)
        if r is not None:
            credible = True
            rmat = _on(r)
            rot = [(factor(rmat.T @ q, dense), factor(rmat.T @ k, dense)) for q, k in tb]
            prow, pscore = score_layers(rot, ft, None)
            if pscore > score:
                rows, score, aligned, alignment = prow, pscore, rot, "procrustes"
                notes.append(f"signed LAP was poor ({sp.quality:.3f} vs chance {chance:.3f}); "
                             f"Procrustes explains {fit:.2f} of the embeddings (shuffled: {fit0:.2f})")
        else:
            why = f"fit {fit:.2f} (< {gates.min_fit:g}), shuffled rows {fit0:.2f}"
            notes.append(f"signed LAP poor ({sp.quality:.3f} vs chance {chance:.3f}) and Procrustes rejected ({why})")
    # Per-pair null: the exact spread of the same statistic under random signed permutations of T's
    # coordinates (:mod:`.null`).
    pairs = [(i, j) for i, j, _, _ in rows]
    d_t = mt.width
    sd = analytic_null(aligned, work, dense, pairs)
    return SketchComparison(score, sd, rows, alignment, sp.quality, chance, fit, len(keys), d_t, swap, notes,
                            time.perf_counter() - t0, credible, fit0)
