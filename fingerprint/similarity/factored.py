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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fingerprint import device
from fingerprint.errors import ComparisonError
from fingerprint.similarity.align import chance_lap_quality, match_layers, procrustes, procrustes_fit, signed_lap
from fingerprint.similarity.verdict import NULL_SEED, Gates
from fingerprint.sketch import Sketch, bottom_k

#: Below this width, and when factors are wide (r² ≥ n), a pair is scored on dense U-centred Grams:
#: O(n²) per CKA instead of O(n·r²), at n² memory per Gram (32 MB at 2048).
DENSE_MAX = 2048


def too_few_shared(n: int) -> ComparisonError:
    """The one error for a pair whose vocabularies barely overlap (weight methods cannot align them)."""
    return ComparisonError(
        f"the two tokenizers share only {n} tokens after normalization; residual streams "
        "cannot be aligned (a replaced tokenizer needs an activation-based test such as --method reef)")


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


def permuted(a: Factor, index: np.ndarray, sign: np.ndarray) -> Factor:
    """The factor of ``D P G Pᵀ D`` (rows of ``F`` reindexed and signed); dense Grams use :func:`_dense_null`."""
    if a.gram is not None:
        raise ValueError("a dense Gram is permuted inside _dense_null, not one factor at a time")
    return factor(_signed_rows(a.f, index, sign))


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


LayerRow = tuple[int, int, float, float]


#: The permuted target Grams of a dense null (draws × Grams × n(n−1)/2 float64) are kept for the next
#: base of a shortlist up to this size; above it they are streamed, a few draws at a time.
NULL_CACHE_BYTES = 256 * 1024**2
NullChunk = tuple[torch.Tensor, torch.Tensor]


def _target_null(ft: list[tuple[Factor, Factor]], draws: list[tuple[np.ndarray, np.ndarray]], per_chunk: int) -> Iterator[NullChunk]:
    """The target's side of :func:`_dense_null`, which no base changes, ``per_chunk`` draws at a time.

    Yields ``W`` (Grams × draws × n(n−1)/2): the upper triangle of ``D P T̃ Pᵀ D`` for each target Gram
    (``T̃``: zero diagonal), read as ``s_i s_j T̃[p_i, p_j]``; and ``‖u(D P T̃ Pᵀ D)‖²`` (Grams × draws), with
    ``B̃s`` read off the unpermuted Gram, ``(T̃v)[p]`` with ``v[p] = s``, so that needs no gather.
    """
    t = torch.stack([f.gram for pair in ft for f in pair if f.gram is not None])
    if len(t) != 2 * len(ft):
        raise ValueError("the dense null needs dense factors on both sides")
    t = t.clone()
    t.diagonal(dim1=1, dim2=2).zero_()
    n = t.shape[1]
    tr2 = (t * t).sum(dim=(1, 2))
    iu, ju = torch.triu_indices(n, n, 1, device=t.device)
    flat_t = t.reshape(len(t), n * n)
    for start in range(0, len(draws), per_chunk):
        chunk = draws[start:start + per_chunk]
        w = torch.empty(len(t), len(chunk), len(iu), dtype=t.dtype, device=t.device)
        self_b = torch.empty(len(t), len(chunk), dtype=t.dtype, device=t.device)
        for c, (perm, sign) in enumerate(chunk):
            idx = torch.from_numpy(perm).to(t.device)
            sg = torch.from_numpy(sign).to(t.device, t.dtype)
            v = torch.zeros(n, dtype=t.dtype, device=t.device)
            v[idx] = sg
            bs = (t @ v)[:, idx]
            torch.mul(flat_t[:, idx[iu] * n + idx[ju]], sg[iu] * sg[ju], out=w[:, c])
            self_b[:, c] = tr2 + (bs @ sg) ** 2 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (bs * bs).sum(dim=1)
        yield w, self_b


def _dense_null(aligned: list[tuple[Factor, Factor]], ft: list[tuple[Factor, Factor]], pairs: list[tuple[int, int]],
                draws: list[tuple[np.ndarray, np.ndarray]], work: TargetWork | None = None) -> list[float]:
    """:func:`score_layers` against ``D P T Pᵀ D`` for each draw, every layer at once, no re-centring.

    U-centring is an orthogonal projection (Székely & Rizzo 2014), so with ``A_c`` already U-centred
    ``⟨A_c, u(L)⟩ = ⟨A_c, L̃⟩`` (``L̃``: zero diagonal), and for ``L̃ = D B̃ D`` (``B̃`` the permuted
    target) ``‖u(L)‖² = tr(B̃²) + (sᵀB̃s)² / ((n−1)(n−2)) − 2‖B̃s‖² / (n−2)``, where ``tr(B̃²)`` does not
    depend on the draw. Both Grams are symmetric with a zero diagonal, so the cross term is twice the
    sum over ``i < j``. Same numbers as permuting and re-centring each Gram, a fraction of the work;
    the target's side (:func:`_target_null`) is computed once per suspect when ``work`` keeps it.
    """
    a = torch.stack([f.centred for i, _ in pairs for f in aligned[i] if f.centred is not None])
    if len(a) != 2 * len(pairs):
        raise ValueError("the dense null needs dense factors on both sides")
    n = a.shape[1]
    iu, ju = torch.triu_indices(n, n, 1, device=a.device)
    a_up = a[:, iu, ju].unsqueeze(2)
    self_a = torch.tensor([f.self_h for i, _ in pairs for f in aligned[i]], dtype=a.dtype, device=a.device)[:, None]
    slots = torch.tensor([2 * j + s for _, j in pairs for s in (0, 1)], device=a.device)
    chunks: Iterable[NullChunk] | None = work.null_chunks(ft, draws) if work is not None else None
    if chunks is None:
        per_chunk = max(1, NULL_CACHE_BYTES // 4 // (2 * len(ft) * len(iu) * 8))
        chunks = _target_null(ft, draws, per_chunk)
    null: list[float] = []
    for w, self_b in chunks:
        if len(slots) != len(w) or bool((slots != torch.arange(len(w), device=w.device)).any()):
            w, self_b = w[slots], self_b[slots]
        cross = 2.0 * torch.bmm(w, a_up).squeeze(2)  # (Grams, draws)
        den = (self_a * self_b).clamp_min(0.0).sqrt()
        ok = (self_a > 1e-30) & (self_b > 1e-30)
        c = torch.where(ok, cross / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(cross))
        null += ((c[0::2].mean(dim=0) + c[1::2].mean(dim=0)) / 2).tolist()
    return null


class TargetWork:
    """Work on one suspect that no base changes, kept across the bases of a shortlist.

    Matching scores one suspect against several bases; the suspect is the target of every comparison
    (bases are at least as wide), so its factors and its side of the dense null are computed once.
    """

    def __init__(self, sketch: Sketch) -> None:
        self.sketch = sketch
        self._factors: dict[bool, list[tuple[Factor, Factor]]] = {}
        self._null: dict[int, list[NullChunk]] = {}

    def factors(self, dense: bool) -> list[tuple[Factor, Factor]]:
        if dense not in self._factors:
            self._factors[dense] = [(factor(_on(q), dense), factor(_on(k), dense))
                                    for q, k in zip(self.sketch.q, self.sketch.k)]
        return self._factors[dense]

    def null_chunks(self, ft: list[tuple[Factor, Factor]], draws: list[tuple[np.ndarray, np.ndarray]]) -> list[NullChunk] | None:
        """The target's side of the dense null as one chunk, or None when it exceeds ``NULL_CACHE_BYTES``.

        ``ft`` must be :meth:`factors` (dense), and ``draws`` depend only on the width and their number.
        """
        n = self.sketch.width
        if len(draws) * 2 * len(ft) * (n * (n - 1) // 2) * 8 > NULL_CACHE_BYTES:
            return None
        if len(draws) not in self._null:
            self._null[len(draws)] = list(_target_null(ft, draws, len(draws)))
        return self._null[len(draws)]


def score_layers(fb: list[tuple[Factor, Factor]], ft: list[tuple[Factor, Factor]],
                 pairs: list[tuple[int, int]] | None) -> tuple[list[LayerRow], float]:
    """Mean CKA of Q and K over matched layers (identity when depths agree, else LAP on the CKA matrix)."""
    if pairs is None:
        pairs = match_layers(len(fb), len(ft), lambda i, j: (cka(fb[i][0], ft[j][0]) + cka(fb[i][1], ft[j][1])) / 2)
    rows = [(i, j, cka(fb[i][0], ft[j][0]), cka(fb[i][1], ft[j][1])) for i, j in pairs]
    return rows, (float(np.mean([r[2] for r in rows])) + float(np.mean([r[3] for r in rows]))) / 2


@dataclass
class SketchComparison:
    score: float
    null: list[float]
    rows: list[LayerRow]
    alignment: str
    quality: float
    chance: float
    fit: float | None
    shared: int
    width: int
    swap: bool
    notes: list[str]
    seconds: float
    aligned: bool = True
    """A credible correspondence of residual coordinates was found: the signed LAP is not poor, or a
    Procrustes rotation passed its gates. Without one a score is no evidence of derivation (see
    :func:`~fingerprint.similarity.verdict.verdict_of`)."""
    fit_chance: float | None = None  # the Procrustes fit on token-shuffled rows (when the LAP was poor)


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
    e_b, e_t = _on(mb.embed[rb]), _on(mt.embed[rt])
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
            view_b.append(_on(mb.lm_head[rb]))
            view_t.append(_on(mt.lm_head[rt]))
        xb, xt = torch.cat([v / v.norm() for v in view_b]), torch.cat([v / v.norm() for v in view_t])
        # Equal widths: the gate needs singular values only; otherwise the full solve gives R and the fit.
        r, fit = (None, procrustes_fit(xb, xt)) if xb.shape[1] == xt.shape[1] else procrustes(xb, xt)
        # The shuffled-row fit (chance level): it gates a credible rotation, and without one it says
        # whether there is any correspondence at all (the evidence for `independent`). A second
        # anchors × d × d product, only for pairs whose signed LAP is poor.
        g = torch.Generator().manual_seed(1)
        fit0 = procrustes_fit(xb, xt[torch.randperm(xt.shape[0], generator=g).to(xt.device)])
        if fit >= gates.min_fit and fit - fit0 >= gates.min_gain:
            credible = True
            if r is None:  # the rotation itself only when the fit passes the gates
                r, _ = procrustes(xb, xt)
            rot = [(factor(r.T @ q, dense), factor(r.T @ k, dense)) for q, k in tb]
            prow, pscore = score_layers(rot, ft, None)
            if pscore > score:
                rows, score, aligned, alignment = prow, pscore, rot, "procrustes"
                notes.append(f"signed LAP was poor ({sp.quality:.3f} vs chance {chance:.3f}); "
                             f"Procrustes explains {fit:.2f} of the embeddings (shuffled: {fit0:.2f})")
        else:
            why = f"fit {fit:.2f} (< {gates.min_fit:g}), shuffled rows {fit0:.2f}"
            notes.append(f"signed LAP poor ({sp.quality:.3f} vs chance {chance:.3f}) and Procrustes rejected ({why})")
    # Per-pair null: the same statistic after random signed permutations of T's coordinates.
    pairs = [(i, j) for i, j, _, _ in rows]
    d_t = mt.width
    rng = np.random.default_rng(NULL_SEED)
    draws = [(rng.permutation(d_t), rng.choice([-1.0, 1.0], d_t)) for _ in range(gates.null_draws)]
    if dense:
        null = _dense_null(aligned, ft, pairs, draws, work)
    else:
        null = [score_layers(aligned, [(permuted(q, perm, sg), permuted(k, perm, sg)) for q, k in ft], pairs)[1]
                for perm, sg in draws]
    return SketchComparison(score, null, rows, alignment, sp.quality, chance, fit, len(keys), d_t, swap, notes,
                            time.perf_counter() - t0, credible, fit0)
