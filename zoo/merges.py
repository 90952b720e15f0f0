"""Merges with known recipes, on state dicts of one architecture (numpy), as mergekit defines them.

Used by the relation benchmark and tests to check that :mod:`fingerprint.merge` recovers weights and
method. Only 2-D matrices of the decoder layers are merged by the method; everything else (embeddings,
norms) is averaged linearly with the same weights, as mergekit does for tensors a method skips.
"""

from __future__ import annotations

import numpy as np

SD = dict[str, np.ndarray]


def _layer_matrix(name: str, w: np.ndarray) -> bool:
    return w.ndim == 2 and ".layers." in name


def linear(parents: list[SD], weights: list[float]) -> SD:
    """``Σ w_i p_i`` (weights as given: mergekit's ``normalize: false``)."""
    return {k: np.sum([w * p[k].astype(np.float64) for w, p in zip(weights, parents)], axis=0).astype(parents[0][k].dtype)
            for k in parents[0]}


def slerp(a: SD, b: SD, t: float) -> SD:
    """Spherical interpolation per tensor: ``sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b``, ``θ`` the angle
    between the normalized flattened tensors (linear when they are nearly parallel)."""
    out = {}
    for k in a:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        dot = float((x.ravel() / np.linalg.norm(x)) @ (y.ravel() / np.linalg.norm(y))) if np.linalg.norm(x) and np.linalg.norm(y) else 1.0
        if abs(dot) > 0.9995:
            r = (1 - t) * x + t * y
        else:
            th = np.arccos(np.clip(dot, -1.0, 1.0))
            r = np.sin((1 - t) * th) / np.sin(th) * x + np.sin(t * th) / np.sin(th) * y
        out[k] = r.astype(a[k].dtype)
    return out


def task_arithmetic(base: SD, parents: list[SD], weights: list[float]) -> SD:
    """``b + Σ λ_i (p_i − b)``."""
    return {k: (base[k] + sum(w * (p[k] - base[k]) for w, p in zip(weights, parents))).astype(base[k].dtype)
            for k in base}


def ties(base: SD, parents: list[SD], weights: list[float], density: float) -> SD:
    """TIES: trim each task vector to its top ``density`` by magnitude, elect a sign by weighted mass,
    average the agreeing weighted entries with normalized weights (mergekit ``normalize: true``)."""
    out = {}
    for k in base:
        taus = np.stack([p[k].astype(np.float64) - base[k] for p in parents])
        if not _layer_matrix(k, base[k]):
            out[k] = (base[k] + np.tensordot(np.asarray(weights), taus, 1) / sum(weights)).astype(base[k].dtype)
            continue
        flat = np.abs(taus.reshape(len(parents), -1))
        keep = max(1, int(flat.shape[1] * density))
        thr = -np.sort(-flat, axis=1)[:, keep - 1].reshape(-1, *([1] * base[k].ndim))
        taus = np.where(np.abs(taus) >= thr, taus, 0.0)
        w = np.asarray(weights, np.float64).reshape(-1, *([1] * base[k].ndim))
        sign = np.sign((w * taus).sum(0))
        agree = (np.sign(taus) == sign) & (taus != 0)
        merged = (w * taus * agree).sum(0) / np.maximum((w * agree).sum(0), 1e-30)
        out[k] = (base[k] + np.where(agree.any(0), merged, 0.0)).astype(base[k].dtype)
    return out


def dare(base: SD, parents: list[SD], weights: list[float], drop: float, seed: int) -> SD:
    """DARE (linear): drop each task-vector entry with probability ``drop``, rescale the kept by
    ``1/(1−drop)``, add ``Σ λ_i τ_i'`` to the base."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in base:
        acc = base[k].astype(np.float64).copy()
        for w, p in zip(weights, parents):
            tau = p[k].astype(np.float64) - base[k]
            if _layer_matrix(k, base[k]):
                tau = np.where(rng.random(tau.shape) >= drop, tau / (1 - drop), 0.0)
            acc += w * tau
        out[k] = acc.astype(base[k].dtype)
    return out
