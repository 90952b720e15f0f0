"""The closed-form null (fingerprint.similarity.null) against explicitly drawn signed permutations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fingerprint.similarity.factored import TargetWork, _signed_rows, analytic_null, factor, score_layers
from fingerprint.sketch import Sketch


def _target(n: int, depth: int, g: torch.Generator) -> Sketch:
    def rnd(r: int) -> np.ndarray:
        # A shared mean direction makes the Grams' entries correlated, as real Q/K Grams are.
        x = torch.randn(n, r, generator=g, dtype=torch.float64)
        return (x + 0.7 * torch.randn(1, r, generator=g, dtype=torch.float64)).numpy()

    return Sketch({}, ["a"], np.zeros((1, n)), None, [rnd(9) for _ in range(depth)], [rnd(5) for _ in range(depth)],
                  [(0.0, 0.0)] * depth, np.zeros((depth, 2, 16), np.float32))


@pytest.mark.parametrize("dense", [True, False])
def test_closed_form_spread_matches_drawn_permutations(dense: bool) -> None:
    """σ₀ from the formula is the standard deviation of the score over 2,500 explicitly signed and permuted
    targets (within 6%: a 2,500-draw estimate is good to ~1.5%, the rest is the normalizer's expectation
    at n=20), the mean is 0, in both the dense and the factored form, also when depths differ."""
    g = torch.Generator().manual_seed(3)
    n = 20
    target = _target(n, 3, g)
    work = TargetWork(target)
    ft = work.factors(dense)
    rng = np.random.default_rng(0)
    draws = [(rng.permutation(n), rng.choice([-1.0, 1.0], n)) for _ in range(2500)]
    for depth, pairs in ((3, [(0, 0), (1, 1), (2, 2)]), (2, [(0, 2), (1, 0)])):
        base = _target(n, depth, g)
        aligned = [(factor(torch.from_numpy(q), dense), factor(torch.from_numpy(k), dense)) for q, k in zip(base.q, base.k)]
        drawn = np.array([score_layers(aligned, [(factor(_signed_rows(q.f, p, s), dense), factor(_signed_rows(k.f, p, s), dense))
                                                 for q, k in ft], pairs)[1] for p, s in draws])
        sd = analytic_null(aligned, work, dense, pairs)
        assert abs(drawn.mean()) < 4 * drawn.std() / np.sqrt(len(drawn))
        assert sd == pytest.approx(drawn.std(ddof=1), rel=0.06)


def test_dense_and_factored_forms_give_the_same_null() -> None:
    g = torch.Generator().manual_seed(5)
    n = 16
    target = _target(n, 2, g)
    base = _target(n, 2, g)
    out = []
    for dense in (True, False):
        aligned = [(factor(torch.from_numpy(q), dense), factor(torch.from_numpy(k), dense)) for q, k in zip(base.q, base.k)]
        out.append(analytic_null(aligned, TargetWork(target), dense, [(0, 0), (1, 1)]))
    assert out[0] == pytest.approx(out[1], rel=1e-10)
