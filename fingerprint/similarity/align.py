"""Aligning the residual streams of two models on shared-token embeddings (numpy; no torch).

* :func:`signed_lap`: AWM's alignment. Columns of the two embedding matrices (over shared tokens)
  are compared by cosine; a (rectangular) linear assignment on ``1 − |cos|`` maps every coordinate
  of the narrower model to one of the wider model, with the sign of the matched cosine.
* :func:`procrustes`: orthogonal Procrustes, ``R = argmin ‖E_B R − E_T‖_F`` over matrices with
  orthonormal columns, ``R = U Vᵀ`` from ``E_Bᵀ E_T = U Σ Vᵀ``. Undoes a dense residual rotation,
  which a signed permutation cannot.

Cosines are float32 products (a matched ``|cos|`` moves by ~1e-6, far below any gate); the
decompositions are float64.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fingerprint.similarity.verdict import Gates

ArrayLike = Any  # a numpy array, or a torch tensor (converted on the way in)


@functools.cache
def _lsa() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """scipy's ``linear_sum_assignment``, loaded from its extension module when possible.

    ``import scipy.optimize`` spends 0.7 s importing linprog, sparse and linalg that the LAP never uses
    (a third of a d=1024 comparison); the compiled ``_lsap`` module alone loads in 0.1 s. Any layout
    that does not have it falls back to the public import.
    """
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    import scipy

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = Path(scipy.__file__).parent / "optimize" / f"_lsap{suffix}"
        if not path.exists():
            continue
        spec = importlib.util.spec_from_file_location("scipy.optimize._lsap", path)
        if spec is None or spec.loader is None:
            break
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except ImportError:
            break
        # Registered under its own name, so a later `import scipy.optimize` reuses it (one copy loaded).
        sys.modules.setdefault(spec.name, mod)
        return mod.linear_sum_assignment  # type: ignore[no-any-return]
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment  # type: ignore[no-any-return]


def linear_sum_assignment(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.optimize.linear_sum_assignment`` (see :func:`_lsa`)."""
    return _lsa()(cost, maximize)


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A torch tensor (any device) or array as a numpy array, without a copy when it already is one."""
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(x.detach().cpu().numpy())


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


def _unit_columns(x: ArrayLike) -> np.ndarray:
    a = np.asarray(as_numpy(x), dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->j", a, a, dtype=np.float64)).astype(np.float32)
    unit: np.ndarray = a / np.maximum(norms, 1e-12)
    return unit


def column_cosines(e_b: ArrayLike, e_t: ArrayLike) -> np.ndarray:
    """``S_ij = cos(E_B[:, i], E_T[:, j])`` over the shared tokens (rows)."""
    out: np.ndarray = _unit_columns(e_b).T @ _unit_columns(e_t)
    return out


def _lap_of_cosines(s: np.ndarray) -> SignedPermutation:
    rows, cols = linear_sum_assignment(1.0 - np.abs(s.astype(np.float64)))
    index = np.empty(s.shape[1], dtype=np.int64)
    index[cols] = rows
    matched = s[index, np.arange(s.shape[1])].astype(np.float64)
    sign = np.where(matched >= 0, 1.0, -1.0)
    return SignedPermutation(index, sign, float(np.abs(matched).mean()))


def signed_lap(e_b: ArrayLike, e_t: ArrayLike) -> SignedPermutation:
    """AWM's signed linear assignment of ``T``'s coordinates onto ``B``'s (``d_T ≤ d_B``).

    Cost ``C_ij = 1 − |S_ij|``; scipy's ``linear_sum_assignment`` (rectangular when the widths differ,
    as for width-pruned models); signs from the matched cosines.
    """
    return _lap_of_cosines(column_cosines(e_b, e_t))


def shuffled_rows(n: int, seed: int) -> np.ndarray:
    """The token-row shuffle every chance level uses: ``numpy.random.default_rng(seed).permutation(n)``."""
    return np.random.default_rng(seed).permutation(n)


def chance_lap_quality(e_b: ArrayLike, e_t: ArrayLike, seed: int = 0) -> float:
    """Matched ``|cos|`` of the same LAP after shuffling ``T``'s token rows: the chance level.

    It depends on the number of shared tokens and the widths, as the independent-pair baseline
    (about ``1.4/√n`` for isotropic columns) does, but is measured on these very matrices.
    """
    t = as_numpy(e_t)
    return signed_lap(e_b, t[shuffled_rows(t.shape[0], seed)]).quality


def procrustes(e_b: ArrayLike, e_t: ArrayLike) -> tuple[np.ndarray, float]:
    """Orthogonal Procrustes from ``B``'s residual basis to ``T``'s.

    Returns:
        ``R`` (``d_B × d_T``, orthonormal columns, float64) minimising ``‖E_B R − E_T‖_F``, and the
        explained share ``1 − ‖E_B R − E_T‖² / ‖E_T‖²`` after scaling ``E_B R`` optimally.
    """
    b = np.asarray(as_numpy(e_b), dtype=np.float64)
    t = np.asarray(as_numpy(e_t), dtype=np.float64)
    u, _, vh = np.linalg.svd(b.T @ t, full_matrices=False)
    r = u @ vh
    fit = b @ r
    scale = float((fit * t).sum() / max(float((fit * fit).sum()), 1e-30))
    resid = float(((scale * fit - t) ** 2).sum() / max(float((t * t).sum()), 1e-30))
    return r, 1.0 - resid


def procrustes_fit(e_b: ArrayLike, e_t: ArrayLike) -> float:
    """The explained share of :func:`procrustes` without forming ``R`` when the widths are equal.

    With ``Bᵀ T = U Σ Vᵀ`` and ``R = U Vᵀ`` square orthogonal, ``⟨B R, T⟩ = tr Σ`` and ``‖B R‖ = ‖B‖``, and
    the optimally scaled residual gives ``1 − resid = (tr Σ)² / (‖B‖² ‖T‖²)``: singular values only, no
    ``anchors × d × d`` product (most of the cost when the fit is only a gate, as for unrelated pairs).
    """
    b = np.asarray(as_numpy(e_b), dtype=np.float64)
    t = np.asarray(as_numpy(e_t), dtype=np.float64)
    if b.shape[1] != t.shape[1]:
        return procrustes(b, t)[1]
    nuc = float(np.linalg.svd(b.T @ t, compute_uv=False).sum())
    return nuc * nuc / max(float((b * b).sum()) * float((t * t).sum()), 1e-300)


def procrustes_views(views: list[np.ndarray]) -> np.ndarray:
    """The rows Procrustes is fitted on: every view of the residual basis (embeddings, and the folded
    lm_head rows of untied models) scaled to unit Frobenius norm, stacked (float64)."""
    out = [np.asarray(v, dtype=np.float64) for v in views]
    return np.concatenate([v / max(float(np.linalg.norm(v)), 1e-300) for v in out])


def procrustes_gate(xb: np.ndarray, xt: np.ndarray, gates: Gates) -> tuple[float, float, np.ndarray | None]:
    """The Procrustes fallback's fit, its chance level and, when it passes the gates, the rotation.

    The fit on token-shuffled rows (seed 1) is the chance level: it gates a credible rotation, and
    without one it says whether there is any correspondence at all (the evidence for ``independent``).
    Equal widths need singular values only for the gate; ``R`` is formed only when the gate passes.

    Returns:
        ``(fit, fit_chance, R or None)``.
    """
    fit = procrustes_fit(xb, xt)
    fit0 = procrustes_fit(xb, xt[shuffled_rows(xt.shape[0], 1)])
    if fit >= gates.min_fit and fit - fit0 >= gates.min_gain:
        return fit, fit0, procrustes(xb, xt)[0]
    return fit, fit0, None


def match_layers(n_b: int, n_t: int, similarity: Callable[[int, int], float]) -> list[tuple[int, int]]:
    """Which layer of B each layer of T is compared with: the identity when the depths agree, else AWM's
    linear assignment maximising the summed ``similarity(i, j)`` (for depth-pruned or grown models)."""
    if n_b == n_t:
        return [(i, i) for i in range(n_b)]
    mat = np.array([[similarity(i, j) for j in range(n_t)] for i in range(n_b)])
    r, c = linear_sum_assignment(-mat)
    return sorted(zip(r.tolist(), c.tolist()))
