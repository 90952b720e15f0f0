"""The ``lineage`` statistic on two checkpoints, streamed layer by layer in float32 (numpy; no torch).

The same statistic as :mod:`.factored` computes on sketches, arranged for one pair read straight from
the weights:

1. **Alignment** on ``max(4000, 2·d)`` anchor tokens (a bottom-k sample of the shared vocabulary, as
   fingerprint files keep; at least two rows per coordinate so a rotation stays recoverable): signed
   LAP, its chance level, and the Procrustes fallback when the LAP is poor. The rows are then dropped.
2. **Layers, one at a time**: folded Q and K, pair-normalized (:func:`fingerprint.grams.pair_scales`),
   the dense ``d × d`` input Gram (one float32 ``syrk``); the wider model's Gram is aligned
   (``D P G Pᵀ D`` or ``Rᵀ G R``) and U-centred, the other's diagonal zeroed. Only the strict upper
   triangle is kept: float32 while it fits :data:`FLOAT32_BUDGET`, else float16 scaled to its largest
   entry (relative precision 2⁻¹¹ per entry; an inner product over ``n(n−1)/2`` entries moves by ~1e-7),
   ``n²`` bytes per Gram.
3. **Scores and null from inner products** of the kept triangles, ``⟨X, Y⟩ = 2 Σ_{i<j} X_ij Y_ij``:
   ``CKA = ⟨A, T̃⟩ / √(‖A‖² ‖u(T)‖²)`` (U-centring is an orthogonal projection, so ``⟨A, u(T)⟩ = ⟨A, T̃⟩``
   for a U-centred ``A``), the layer matching when depths differ, and the closed-form null
   (:mod:`.null`).

Peak memory is the kept triangles (``2L`` Grams of ``n(n−1)/2`` entries: ``2·L·n²`` bytes per model in
float16, twice that in float32) plus a few ``n × n`` float32 Grams, not the checkpoints; the work is two
``syrk`` per layer and model.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fingerprint import device
from fingerprint.anchors import DEFAULT_ANCHORS, bottom_k
from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.grams import pair_scales, row_blocks
from fingerprint.similarity.align import (
    chance_lap_quality,
    match_layers,
    procrustes_gate,
    procrustes_views,
    signed_lap,
)
from fingerprint.similarity.null import null_sd
from fingerprint.similarity.verdict import MIN_SHARED_TOKENS, Gates, SketchComparison, too_few_shared

#: The largest entry of a kept triangle is stored as this (float16 keeps full relative precision from
#: 6e-5 up to 65504, so entries down to ~4e-9 of the largest are kept exactly to 2⁻¹¹).
_TRI_MAX = 2.0**14
#: Columns of the triangles converted to float32 at a time for their inner products.
_CHUNK = 1 << 18
#: One side's triangles are kept in float32 up to this many bytes (no conversions: 0.3 s at d=1024),
#: beyond it in float16 (half the memory: 1.07 GB per side for d=4096, L=32).
FLOAT32_BUDGET = 96 * 1024**2


def pair_anchors(width: int) -> int:
    """Anchor tokens for a pairwise comparison at residual width ``width``: ``max(4000, 2·d)``."""
    return max(DEFAULT_ANCHORS, 2 * width)


@functools.cache
def _upper(n: int) -> np.ndarray:
    """Flat indices of the strict upper triangle of an ``n × n`` matrix (int32 while ``n² < 2³¹``)."""
    dt = np.int32 if n * n < 2**31 else np.int64
    return np.concatenate([np.arange(i * n + i + 1, (i + 1) * n, dtype=dt) for i in range(n - 1)])


@dataclass
class Triangles:
    """One model's side of a comparison: the kept upper triangles of its Grams (module docstring).

    ``tri[g] · scale[g]`` is Gram ``g``'s strict upper triangle; ``norm2[g]`` is ``‖u(G)‖²`` (the base's
    aligned Grams are stored U-centred, the target's with a zeroed diagonal).
    """

    tri: np.ndarray
    scale: np.ndarray
    norm2: np.ndarray


def inner_products(base: Triangles, target: Triangles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``⟨X_g, Y_h⟩ = 2 Σ_{i<j} X_ij Y_ij`` for base × target, base × base and target × target Grams
    (float64); float16 triangles are converted a chunk at a time, once each."""
    gb, gt = len(base.tri), len(target.tri)
    cross, bb, tt = np.zeros((gb, gt)), np.zeros((gb, gb)), np.zeros((gt, gt))
    step = base.tri.shape[1] if base.tri.dtype == target.tri.dtype == np.float32 else _CHUNK
    for c in range(0, base.tri.shape[1], step):
        x = base.tri[:, c:c + step].astype(np.float32, copy=False)
        y = target.tri[:, c:c + step].astype(np.float32, copy=False)
        cross += x @ y.T
        bb += x @ x.T
        tt += y @ y.T
    return (2.0 * cross * np.outer(base.scale, target.scale), 2.0 * bb * np.outer(base.scale, base.scale),
            2.0 * tt * np.outer(target.scale, target.scale))


def _gram(f: np.ndarray) -> np.ndarray:
    """``fᵀ f`` in float32: a BLAS ``syrk`` on the CPU, torch on a GPU device (:mod:`fingerprint.device`)."""
    if device.is_cpu():
        return np.asarray(f.T @ f)
    import torch

    t = torch.from_numpy(f).to(device.current())
    return np.asarray((t.T @ t).cpu().numpy())


def _u_center_(k: np.ndarray) -> np.ndarray:
    """U-centre ``k`` in place (:func:`fingerprint.similarity.cka.u_center`, numpy, float32).

    Column sums in float32 (numpy adds rows one by one: relative error ≲ n·2⁻²⁴, 6e-5 at n=1024, far
    below the 1e-4 the score is checked to; a float64 accumulator costs a casting pass per Gram).
    """
    n = k.shape[0]
    np.fill_diagonal(k, 0.0)
    m = k.sum(axis=0).astype(np.float64) / (n - 2)
    m -= m.sum() / (2 * (n - 1))
    m32 = m.astype(np.float32)
    k -= m32[:, None]
    k -= m32[None, :]
    np.fill_diagonal(k, 0.0)
    return k


class _Keeper:
    """Collects one side's triangles, preallocated for ``count`` Grams of width ``n``: float32 while one
    side's triangles fit in :data:`FLOAT32_BUDGET`, else float16 (module docstring)."""

    def __init__(self, count: int, n: int) -> None:
        self.n = n
        size = n * (n - 1) // 2
        dtype = np.float32 if count * size * 4 <= FLOAT32_BUDGET else np.float16
        self.tri = np.empty((count, size), dtype=dtype)
        self.scale = np.ones(count)
        self.norm2 = np.zeros(count)
        self._next = 0

    def add(self, gram: np.ndarray, centred: bool) -> None:
        """Keep ``gram`` (float32, modified in place): U-centred if ``centred``, else its diagonal zeroed."""
        if centred:
            _u_center_(gram)
        else:
            np.fill_diagonal(gram, 0.0)
        g = self._next
        if self.tri.dtype == np.float16:
            up = np.take(gram.reshape(-1), _upper(self.n))
            top = float(np.abs(up).max()) if up.size else 0.0
            self.scale[g] = top / _TRI_MAX if top > 0 else 1.0
            self.tri[g] = up / np.float32(self.scale[g])
        else:
            up = np.take(gram.reshape(-1), _upper(self.n), out=self.tri[g])
        # Squares summed pairwise in float32 (numpy's contiguous reductions): relative error ~2⁻²⁴·log N.
        tr2 = 2.0 * float(np.square(up).sum())
        if centred:
            self.norm2[g] = tr2
        else:
            # ‖u(T)‖² from the zero-diagonal T̃ (the unbiased HSIC of T with itself, no second centring):
            # ‖T̃‖² + (1ᵀT̃1)² / ((n−1)(n−2)) − 2‖T̃1‖² / (n−2).
            n = self.n
            r = gram.sum(axis=1).astype(np.float64)
            self.norm2[g] = tr2 + float(r.sum()) ** 2 / ((n - 1) * (n - 2)) - 2.0 * float(r @ r) / (n - 2)
        self._next += 1

    def done(self) -> Triangles:
        return Triangles(self.tri, self.scale, self.norm2)


@dataclass(frozen=True)
class _Alignment:
    """How the reference's coordinates map onto the target's: a signed permutation and, when the
    Procrustes fallback passed its gates, a rotation too (both are scored; the higher wins)."""

    index: np.ndarray
    sign: np.ndarray
    rotation: np.ndarray | None


def _scaled(m: CanonicalModel, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Folded Q and K of ``layer`` with each row scaled by its pair-normalization ``s`` (float32)."""
    s = m.spec
    q, k = m.attention(layer, fold=True)
    qs = pair_scales(q, _blocks(s.num_heads, s.head_dim, s.rotary_dim, s.rope_style), s.head_dim)
    ks = pair_scales(k, _blocks(s.num_kv_heads, s.head_dim, s.rotary_dim, s.rope_style), s.head_dim)
    return q * qs.astype(np.float32)[:, None], k * ks.astype(np.float32)[:, None]


@functools.cache
def _blocks(heads: int, head_dim: int, rotary_dim: int, style: str) -> np.ndarray:
    return row_blocks(heads, head_dim, rotary_dim, style)


def _stream(m: CanonicalModel, n: int, align: _Alignment | None) -> tuple[Triangles, Triangles | None]:
    """Every layer's Q and K Grams of ``m`` kept as triangles: aligned and U-centred for the reference
    (``align`` given; a second set for the rotation), zero-diagonal for the target."""
    layers = m.spec.num_layers
    keep = _Keeper(2 * layers, n)
    rot = _Keeper(2 * layers, n) if align is not None and align.rotation is not None else None
    r32 = align.rotation.astype(np.float32) if align is not None and align.rotation is not None else None
    # A fine-tune keeps its parent's coordinates: the LAP is then the identity and needs no gather.
    identity = (align is not None and m.spec.hidden_size == n
                and bool(np.array_equal(align.index, np.arange(n)) and (align.sign > 0).all()))
    for layer in range(layers):
        for f in _scaled(m, layer):
            if align is None:
                keep.add(_gram(f), centred=False)
                continue
            keep.add(_gram(f if identity else f[:, align.index] * align.sign.astype(np.float32)[None, :]), centred=True)
            if rot is not None and r32 is not None:
                rot.add(_gram(f @ r32), centred=True)
    return keep.done(), (rot.done() if rot is not None else None)


def _score(base: Triangles, target: Triangles, n: int) -> tuple[list[tuple[int, int, float, float]], float, float]:
    """Layer rows, score and null ``σ₀`` of one aligned reference against the target."""
    lb, lt = len(base.tri) // 2, len(target.tri) // 2
    cross, bb, tt = inner_products(base, target)
    den = np.sqrt(np.outer(base.norm2, target.norm2))
    cka = np.where(den > 1e-30, cross / np.where(den > 1e-30, den, 1.0), 0.0)
    pairs = match_layers(lb, lt, lambda i, j: float(cka[2 * i, 2 * j] + cka[2 * i + 1, 2 * j + 1]) / 2)
    rows = [(i, j, float(cka[2 * i, 2 * j]), float(cka[2 * i + 1, 2 * j + 1])) for i, j in pairs]
    score = (float(np.mean([r[2] for r in rows])) + float(np.mean([r[3] for r in rows]))) / 2
    sb = [2 * i + s for i, _ in pairs for s in (0, 1)]
    st = [2 * j + s for _, j in pairs for s in (0, 1)]
    return rows, score, null_sd(bb[np.ix_(sb, sb)], tt[np.ix_(st, st)], n)


class _Clock:
    """Seconds per phase, for the report's ``timings`` (and ``bench.compare``'s breakdown)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        self.phases[what] = round(self.phases.get(what, 0.0) + now - self._t, 4)
        self._t = now


def compare_checkpoints(a: CanonicalModel, b: CanonicalModel, gates: Gates) -> tuple[SketchComparison, int]:
    """Align and score two checkpoints (the wider one is the reference; ``b`` on a tie is the target).

    Returns:
        The comparison and the views of the residual basis the anchors offered (2 when both models are
        untied: their lm_head rows are a second view).

    Raises:
        ComparisonError: too few shared tokens.
    """
    t0 = time.perf_counter()
    clock = _Clock()
    va, vb = a.vocab(), b.vocab()
    shared = sorted(set(va.keys) & set(vb.keys))
    if len(shared) < max(MIN_SHARED_TOKENS, gates.min_shared):
        raise too_few_shared(len(shared))
    swap = b.spec.hidden_size > a.spec.hidden_size
    mb, mt = (b, a) if swap else (a, b)
    keys = bottom_k(shared, min(gates.max_anchors, pair_anchors(mb.spec.hidden_size)))
    vocab_b, vocab_t = (vb, va) if swap else (va, vb)
    rows_b = [vocab_b.keys[k] for k in keys]
    rows_t = [vocab_t.keys[k] for k in keys]
    untied = all(not m.spec.tied and m.has("lm_head") for m in (mb, mt))
    clock.lap("vocabularies and anchors")
    with _two_streams() as pool:
        # The target's layers need no alignment, so they stream in a second thread while the anchors are
        # read, aligned and the reference streams (each side with half the cores for BLAS).
        n = mt.spec.hidden_size
        ahead = pool.submit(_timed, _stream, mt, n, None)
        comparison = _finish(mb, mt, keys, rows_b, rows_t, len(shared), swap, untied, gates, clock, ahead, t0)
    return comparison, 2 if untied else 1


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


@contextmanager
def _two_streams() -> Iterator[ThreadPoolExecutor]:
    """A second thread for the target's stream, with BLAS limited to half the cores per stream (so the
    two streams' single-threaded work, reads and centring, overlaps the other's products)."""
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=1) as pool, threadpool_limits(limits=max(1, cores // 2), user_api="blas"):
        yield pool


def _finish(mb: CanonicalModel, mt: CanonicalModel, keys: list[str], rows_b: list[int], rows_t: list[int],
            shared: int, swap: bool, untied: bool, gates: Gates, clock: _Clock, ahead: Future[tuple[tuple[Triangles, Triangles | None], float]],
            t0: float) -> SketchComparison:
    """Alignment, the reference's stream and the scores, while ``ahead`` streams the target."""
    e_b, e_t = mb.embed_rows(rows_b), mt.embed_rows(rows_t)
    clock.lap("anchor rows read")
    sp = signed_lap(e_b, e_t)
    chance = chance_lap_quality(e_b, e_t)
    credible = not (sp.quality < gates.poor_ratio * chance or sp.quality < gates.poor_abs)
    fit = fit0 = None
    rotation = None
    notes: list[str] = []
    if not credible:
        view_b, view_t = [e_b], [e_t]
        head_b, head_t = (mb.lm_head_rows(rows_b), mt.lm_head_rows(rows_t)) if untied else (None, None)
        if head_b is not None and head_t is not None:
            view_b.append(head_b)
            view_t.append(head_t)
        fit, fit0, rotation = procrustes_gate(procrustes_views(view_b), procrustes_views(view_t), gates)
        credible = rotation is not None
        if rotation is None:
            notes.append(f"signed LAP poor ({sp.quality:.3f} vs chance {chance:.3f}) and Procrustes rejected "
                         f"(fit {fit:.2f} (< {gates.min_fit:g}), shuffled rows {fit0:.2f})")
    del e_b, e_t
    clock.lap("alignment (LAP, chance, Procrustes)")
    n = mt.spec.hidden_size
    base, rot = _stream(mb, n, _Alignment(sp.index, sp.sign, rotation))
    clock.lap("reference layers (read, Grams, centring)")
    (target, _), target_s = ahead.result()
    clock.lap("waiting for the target's layers")
    clock.phases["target layers (read, Grams; second thread, overlapped)"] = round(target_s, 4)
    rows, score, sd = _score(base, target, n)
    alignment = "signed-lap"
    if rot is not None:
        prow, pscore, psd = _score(rot, target, n)
        if pscore > score:
            rows, score, sd, alignment = prow, pscore, psd, "procrustes"
            notes.append(f"signed LAP was poor ({sp.quality:.3f} vs chance {chance:.3f}); "
                         f"Procrustes explains {fit:.2f} of the embeddings (shuffled: {fit0:.2f})")
    if not (np.isfinite(score) and np.isfinite(sd)):
        raise ComparisonError(f"the statistic is not finite (score {score}, null spread {sd}): non-finite weights?")
    if len(keys) < shared:
        notes.append(f"aligned on {len(keys)} anchor tokens (a bottom-k sample of the {shared} shared)")
    clock.lap("scores, layer matching and null")
    return SketchComparison(score, sd, rows, alignment, sp.quality, chance, fit, len(keys), n, swap, notes,
                            time.perf_counter() - t0, credible, fit0, clock.phases)
