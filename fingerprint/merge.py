"""A merge's recipe from the weights: each parent's mixture weight per layer, and the method where it shows.

Merges are made on the stored matrices, so these are read unfolded (a merged norm gain is not the
product of the parents'). All parents are first put in the child's residual basis (:func:`fingerprint.relation.residual_alignment`;
a merge is made in one basis, so this is the identity unless someone attacked the result). Then, per
sampled layer and matrix, with ``c`` the child's flattened matrix and ``p_i`` the parents':

* **no base**: least squares ``α = argmin ‖c − Σ α_i p_i‖``. A linear merge has ``Σ α_i = 1`` and no
  residual. SLERP (``c = sin((1−t)θ)/sin θ · p_1 + sin(tθ)/sin θ · p_2``, ``θ`` the angle between the
  normalized parents) fits as exactly, with ``Σ α_i > 1``; ``t`` solves ``α_2/α_1 = sin(tθ)/sin((1−t)θ)``.
  Its weights are then reported as ``(1 − t, t)``, the coefficients in ``details``.
  SLERP is named when the excess ``Σ α − 1`` stands above 5x the fit's residual and within 30% of the
  excess ``cos((t − ½)θ)/cos(θ/2) − 1`` SLERP itself predicts. When ``θ`` is so small that the
  predicted excess is below the residual, SLERP and linear are the same merge at that precision.
* **with a base** ``b`` (task vectors ``τ_i = p_i − b``, ``τ_c = c − b``): least squares
  ``λ = argmin ‖τ_c − Σ λ_i τ_i‖``; linear when ``Σ λ_i = 1``, else ``task_arithmetic``. When a share
  ``z ≥ 0.2`` of the entries that some parent moved is left exactly at the base, the task vectors were
  sparsified: by magnitude (``TIES``: the kept entries are the large ones, rank AUC ``≥ 0.75`` of ``max_i |τ_i| / rms(τ_i)``
  kept vs dropped) or at random (``DARE``: AUC near 0.5, drop rate ``p = z^{1/k}``). DARE's rescaling
  ``1/(1−p)`` makes ``E[τ_c | τ] = Σ λ_i τ_i``, so least squares over all entries estimates ``λ``
  without bias. TIES averages the agreeing entries with normalized weights, so its weights are
  estimated on the entries every parent kept with one sign (not equal to any one parent's entry, which
  is what TIES writes where the others were trimmed): ``λ_i / Σ λ``. A sparsified merge's least-squares
  residual is large by design (the dropped entries), so it is not read as a missing parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.relation import align_weight, residual_alignment, roles_of, weight

SPARSE_SHARE = 0.2
TIES_AUC = 0.75


@dataclass
class MergeRecipe:
    """Estimated mixture weights (median over the sampled matrices, and per layer) and the method."""

    method: str
    weights: list[float]
    per_layer: dict[int, list[float]]
    residual: float
    """Median relative residual of the fit: near the storage rounding when the recipe explains the child."""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "weights": [round(w, 4) for w in self.weights],
                "per_layer": {str(k): [round(w, 4) for w in v] for k, v in self.per_layer.items()},
                "residual": round(self.residual, 6), "notes": self.notes, "details": self.details}


def _lstsq(target: np.ndarray, cols: list[np.ndarray]) -> tuple[np.ndarray, float]:
    a = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(a, target, rcond=None)
    res = float(np.linalg.norm(target - a @ coef) / (np.linalg.norm(target) + 1e-30))
    return coef, res


def slerp_t(a1: float, a2: float, theta: float) -> float:
    """``t`` with ``sin(tθ)/sin((1−t)θ) = a2/a1`` (bisection; the ratio grows with ``t``)."""
    lo, hi = 0.0, 1.0
    target = a2 / a1 if a1 > 0 else np.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.sin(mid * theta) / max(np.sin((1 - mid) * theta), 1e-30) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _auc(kept: np.ndarray, dropped: np.ndarray) -> float:
    """P(a kept magnitude exceeds a dropped one), from ranks."""
    if not kept.size or not dropped.size:
        return 0.5
    both = np.concatenate([kept, dropped])
    ranks = np.argsort(np.argsort(both)).astype(np.float64) + 1.0
    return float((ranks[: kept.size].sum() - kept.size * (kept.size + 1) / 2) / (kept.size * dropped.size))


def _matrices(child: CanonicalModel, others: list[CanonicalModel], sample: int) -> list[tuple[int, np.ndarray, list[np.ndarray]]]:
    aligns = []
    for m in others:
        t, _, _ = residual_alignment(m, child)
        if t.shape[0] != t.shape[1] or m.spec.num_layers != child.spec.num_layers:
            raise ComparisonError(f"{m.repo.name} has another shape than the merge: not a parent this can weigh")
        aligns.append(t)
    n = child.spec.num_layers
    layers = sorted(set(np.linspace(0, n - 1, min(sample, n)).astype(int).tolist()))
    out = []
    for layer in layers:
        for role in roles_of(child, layer):
            c = weight(role, child, layer, fold=False).astype(np.float64).ravel()
            ps = [align_weight(role, weight(role, m, layer, fold=False).astype(np.float64), t).ravel() for m, t in zip(others, aligns)]
            out.append((layer, c, ps))
    return out


def estimate(child: CanonicalModel, parents: list[CanonicalModel], base: CanonicalModel | None = None,
             sample: int = 4) -> MergeRecipe:
    """The recipe of ``child`` as a merge of ``parents`` (module docstring)."""
    if len(parents) < 2:
        raise ComparisonError("a merge recipe needs two parents or more")
    mats = _matrices(child, parents + ([base] if base is not None else []), sample)
    k = len(parents)
    coefs: list[tuple[int, np.ndarray]] = []
    residuals, zs, aucs, thetas, ts, ties_w = [], [], [], [], [], []
    excess: list[tuple[float, float]] = []
    for layer, c, ps in mats:
        if base is None:
            coef, res = _lstsq(c, ps)
            if k == 2:
                u, v = ps[0] / np.linalg.norm(ps[0]), ps[1] / np.linalg.norm(ps[1])
                theta = float(np.arccos(np.clip(u @ v, -1.0, 1.0)))
                thetas.append(theta)
                t = slerp_t(float(coef[0]), float(coef[1]), theta) if theta > 1e-3 else float(coef[1])
                ts.append(t)
                # SLERP's coefficients sum to cos((t − ½)θ) / cos(θ/2): the excess over 1 it predicts
                excess.append((float(coef.sum()) - 1.0, float(np.cos((t - 0.5) * theta) / np.cos(theta / 2)) - 1.0))
        else:
            b = ps[-1]
            taus = [p - b for p in ps[:-1]]
            tc = c - b
            coef, res = _lstsq(tc, taus)
            moved = np.any(np.stack([np.abs(t) > 0 for t in taus]), axis=0)
            at_base = moved & (tc == 0)
            z = float(at_base.sum() / max(1, moved.sum()))
            zs.append(z)
            # An entry stays at the base when every parent's entry was dropped: compare the largest
            # parent magnitude (each in units of its own RMS) of kept and dropped entries.
            mag = np.max(np.stack([np.abs(t) / (np.sqrt(np.mean(t**2)) + 1e-30) for t in taus]), axis=0)
            aucs.append(_auc(mag[moved & ~at_base & (mag > 0)], mag[at_base & (mag > 0)]))
            sgn = np.sign(np.stack(taus))
            # Entries every parent kept: one sign, moved, and not exactly one parent's own value (where
            # the others were trimmed, TIES copies the survivor and the weights cancel).
            tol = 1e-3 * np.sum(np.abs(np.stack(taus)), axis=0)
            single = np.any(np.stack([np.abs(tc - t) <= tol for t in taus]), axis=0)
            agree = np.all(sgn == sgn[0], axis=0) & np.all(sgn != 0, axis=0) & (tc != 0) & ~single
            if agree.sum() > 2 * k:
                w, _ = _lstsq(tc[agree], [t[agree] for t in taus])
                ties_w.append(w)
        coefs.append((layer, coef))
        residuals.append(res)
    per_layer: dict[int, list[float]] = {}
    for layer in sorted({lay for lay, _ in coefs}):
        per_layer[layer] = np.median(np.stack([c for lay, c in coefs if lay == layer]), axis=0).tolist()
    weights = np.median(np.stack([c for _, c in coefs]), axis=0)
    residual = float(np.median(residuals))
    notes: list[str] = []
    details: dict[str, Any] = {}
    if base is not None:
        z = float(np.median(zs))
        details["left_at_base"] = round(z, 4)
        if z >= SPARSE_SHARE:
            auc = float(np.median(aucs))
            details["kept_magnitude_auc"] = round(auc, 4)
            if auc >= TIES_AUC:
                method = "ties"
                if ties_w:
                    weights = np.median(np.stack(ties_w), axis=0)
                notes.append("TIES weights are normalized (λ_i / Σλ), estimated where every parent kept one sign")
            else:
                method = "dare"
                details["drop_rate"] = round(z ** (1.0 / k), 4)
        else:
            method = "linear" if abs(float(weights.sum()) - 1.0) <= 0.02 else "task_arithmetic"
    else:
        method = "linear"
        if k == 2 and thetas:
            theta = float(np.median(thetas))
            details["angle"] = round(theta, 4)
            # SLERP is told from linear by the excess of Σα over 1, once it stands above the fit's noise and
            # agrees with the excess SLERP's own t and θ predict.
            seen, predicted = (float(np.median([e[i] for e in excess])) for i in (0, 1))
            details["excess"] = [round(seen, 6), round(predicted, 6)]
            if seen > 5 * residual + 1e-5 and abs(seen - predicted) <= 0.3 * predicted:
                method = "slerp"  # weights become (1 − t, t), as a merge configuration states them
                details["coefficients"] = [round(float(w), 4) for w in weights]
                t = float(np.median(ts))
                weights = np.array([1.0 - t, t])
                per_t = {lay: float(np.median([tt for (ll, _), tt in zip(coefs, ts) if ll == lay])) for lay in per_layer}
                per_layer = {lay: [1.0 - tt, tt] for lay, tt in per_t.items()}
            elif predicted <= 5 * residual + 1e-5:
                notes.append(f"parents at angle {theta:.3f} rad: SLERP and linear are the same merge at this precision")
    if residual > 0.05 and method not in ("ties", "dare"):  # sparsified merges leave a residual by design
        notes.append(f"the recipe leaves {residual:.1%} of the child unexplained: parents or method may be missing")
    return MergeRecipe(method, [float(w) for w in weights], per_layer, residual, notes, details)
