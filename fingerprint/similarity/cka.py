"""Centered kernel alignment on input Grams, with the unbiased (U-statistic) HSIC estimator.

For a weight ``W`` (out × in) the residual coordinates are the samples and the output rows the
features, so everything depends on ``W`` only through its input Gram ``K = Wᵀ W``; any orthogonal
map on the output side leaves ``K`` unchanged.

Reference: Song et al. (2012), "Feature Selection via Dependence Maximization", JMLR 13 — the
unbiased HSIC estimator; Kornblith et al. (2019) for CKA.
"""

from __future__ import annotations

import torch


def input_gram(w: torch.Tensor) -> torch.Tensor:
    """``K = Wᵀ W`` for a weight in (out, in) orientation, in float64."""
    w = w.to(torch.float64)
    return w.T @ w


def u_center(k: torch.Tensor) -> torch.Tensor:
    """U-centre a Gram matrix (Song et al. 2012).

    With ``K̃`` the Gram with its diagonal zeroed and ``n`` its size:
    ``m = K̃ 1 / (n − 2)``, ``m ← m − Σm / (2(n − 1))``, ``K_c = K̃ − m 1ᵀ − 1 mᵀ`` with the diagonal
    zeroed again. Then ``⟨K_c, L_c⟩_F`` is proportional to the unbiased HSIC estimator.
    """
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 samples, got {n}")
    k = k.clone()
    k.fill_diagonal_(0.0)
    m = k.sum(dim=0) / (n - 2)
    m = m - m.sum() / (2 * (n - 1))
    k = k - m[:, None] - m[None, :]
    k.fill_diagonal_(0.0)
    return k


def cka_centered(kc: torch.Tensor, lc: torch.Tensor) -> float:
    """CKA of two already U-centred Grams: ``⟨K_c, L_c⟩ / √(⟨K_c, K_c⟩ ⟨L_c, L_c⟩)`` (0 if degenerate)."""
    kk = float((kc * kc).sum())
    ll = float((lc * lc).sum())
    if kk < 1e-30 or ll < 1e-30:
        return 0.0
    return float(float((kc * lc).sum()) / (kk * ll) ** 0.5)


def unbiased_cka(k: torch.Tensor, l: torch.Tensor) -> float:
    """Unbiased linear CKA between two Grams over the same samples.

    ``CKA_u(K, L) = HSIC_u(K, L) / √(HSIC_u(K, K) HSIC_u(L, L))``. Near 0 for independent features
    even when the number of samples is close to the number of features, where biased CKA is ≈ 0.5.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(50, 20, generator=g, dtype=torch.float64)
    >>> round(unbiased_cka(x @ x.T, x @ x.T), 6)
    1.0
    """
    return cka_centered(u_center(k), u_center(l))


def biased_cka(k: torch.Tensor, l: torch.Tensor) -> float:
    """Biased linear CKA: ``⟨HKH, HLH⟩ / √(⟨HKH, HKH⟩⟨HLH, HLH⟩)`` with ``H = I − 11ᵀ/n``."""
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
    return cka_centered(h @ k @ h, h @ l @ h)


def feature_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True) -> float:
    """Linear CKA between two feature matrices with the same rows (samples)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    k, l = x @ x.T, y @ y.T
    return unbiased_cka(k, l) if unbiased else biased_cka(k, l)
