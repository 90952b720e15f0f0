"""fingerprint.merge: merges made here with known recipes give back their method and weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fingerprint.canonical import open_model
from fingerprint.errors import ComparisonError
from fingerprint.merge import estimate, slerp_t
from tests.tinymodels import llama_base, perturb, save_state_dict
from zoo import merges


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("merge")
    base, cfg, sd = llama_base(root / "base")
    # Two "fine-tunes" that move the base by different amounts, like two task vectors would.
    return base, cfg, {"base": sd, "a": perturb(sd, 0.05, 1), "b": perturb(sd, 0.2, 2)}


CASES = {
    "linear": (lambda s: merges.linear([s["a"], s["b"]], [0.3, 0.7]), False, "linear", [0.3, 0.7]),
    "slerp": (lambda s: merges.slerp(s["a"], s["b"], 0.35), False, "slerp", [0.65, 0.35]),
    "task_arithmetic": (lambda s: merges.task_arithmetic(s["base"], [s["a"], s["b"]], [0.6, 0.3]), True,
                        "task_arithmetic", [0.6, 0.3]),
    "ties": (lambda s: merges.ties(s["base"], [s["a"], s["b"]], [0.7, 0.3], 0.3), True, "ties", [0.7, 0.3]),
    "dare": (lambda s: merges.dare(s["base"], [s["a"], s["b"]], [0.5, 0.4], 0.5, seed=3), True, "dare", [0.5, 0.4]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recipe_is_recovered(trio: tuple[Path, dict, dict], tmp_path: Path, name: str) -> None:
    base, cfg, sds = trio
    make, with_base, method, truth = CASES[name]
    parents = [save_state_dict(sds[k], cfg, tmp_path / k, base) for k in ("a", "b")]
    child = save_state_dict(make(sds), cfg, tmp_path / "merged", base)
    r = estimate(open_model(child), [open_model(p) for p in parents], open_model(base) if with_base else None)
    assert r.method == method
    assert np.abs(np.array(r.weights) - truth).max() <= 0.02, r.weights
    assert set(r.per_layer) == {0, 1, 2, 3}


def test_a_merge_needs_two_parents(trio: tuple[Path, dict, dict]) -> None:
    base = trio[0]
    with pytest.raises(ComparisonError, match="two parents"):
        estimate(open_model(base), [open_model(base)])


def test_slerp_t_inverts_the_coefficients() -> None:
    theta, t = 0.8, 0.3
    a1, a2 = np.sin((1 - t) * theta) / np.sin(theta), np.sin(t * theta) / np.sin(theta)
    assert slerp_t(a1, a2, theta) == pytest.approx(t, abs=1e-9)
