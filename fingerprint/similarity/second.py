"""The second opinion: representation similarity (REEF-style) for the pairs the weights leave uncertain,
against a background of its own.

The weights decide almost every pair. Two outcomes leave a question they cannot settle alone:
``inconclusive`` (a correspondence too weak for derived, too strong for independent) and ``shared_init``
(one random start: is one also the other's trained parent, as after heavy continued pretraining?).
Whether one model *computes like* the other speaks to both, if it is measured against the right null.

REEF's own null, random pairings of the probe texts, asks whether two models' representations are
related at all, and any two language models trained on text are (biased CKA of independent zoo pairs
reaches 0.88; same-data pairs 0.82): it calibrates nothing. The null here is what each model of the pair
shares with models **the weights call independent of it** (other families' bases): with ``R_M`` the
z-scored middle-layer last-token states of model ``M`` on the shipped probe texts
(:mod:`.reef`), the background values are ``b_i = CKA(R_A, R_{X_i})`` for each background ``X_i``
independent of A, and likewise for B; with their mean ``μ`` and standard deviation ``σ`` (at least
:data:`MIN_BACKGROUND` values),

    z = (CKA(R_A, R_B) − μ) / σ.

The finding is one-sided, because representations miss many derivatives (quantization, pruning, heavy
training and unrelated merges move them as far as independent models: biased CKA 0.37–0.47 on such zoo
pairs), so being no closer than the background proves nothing about independence:

* ``supports``: ``z ≥ Z_SUPPORT`` and above every background value: more shared computation than any
  unrelated model shows;
* ``against``: ``z < Z_AGAINST``: no closer than unrelated models;
* ``neutral``: in between; ``unavailable``: a model cannot be run (GGUF, no tokenizer.json) or too few
  background models.

:func:`combine` turns the weights' outcome and the finding into the final one and says which evidence
decided it: ``inconclusive`` + supports → ``derived``; ``shared_init`` + supports → ``derived`` (a
trained parent, not only a shared start); ``shared_init`` + against → ``shared_init``, confirmed; every
other case keeps the weights' outcome (representations alone never make a pair independent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from fingerprint.canonical import CanonicalModel

Z_SUPPORT = 3.0
Z_AGAINST = 1.0
MIN_BACKGROUND = 3
#: the outcomes a second opinion is asked for
UNCERTAIN = ("inconclusive", "shared_init")

Finding = Literal["supports", "against", "neutral", "unavailable"]


@dataclass(frozen=True)
class SecondOpinion:
    """The representation evidence on one pair (``score``: CKA of the pair; ``background``: each side
    against models the weights call independent of it)."""

    finding: Finding
    score: float | None
    z: float | None
    background: tuple[float, ...]
    note: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["background"] = list(self.background)
        return d


def judge(score: float, background: Sequence[float]) -> SecondOpinion:
    """The finding for a pair whose representations have CKA ``score``, against ``background``."""
    bg = tuple(float(x) for x in background if math.isfinite(x))
    if len(bg) < MIN_BACKGROUND:
        return SecondOpinion("unavailable", score, None, bg, f"only {len(bg)} background models the weights call "
                             f"independent (needs {MIN_BACKGROUND}): no calibrated null")
    mu, sd = float(np.mean(bg)), float(np.std(bg, ddof=1))
    z = (score - mu) / max(sd, 1e-6)
    where = f"CKA {score:.3f} against {len(bg)} independent models' {mu:.3f} ± {sd:.3f} (max {max(bg):.3f}), z {z:.1f}"
    if z >= Z_SUPPORT and score > max(bg):
        return SecondOpinion("supports", score, z, bg, f"representations: {where}: the function is inherited")
    if z < Z_AGAINST:
        return SecondOpinion("against", score, z, bg, f"representations: {where}: no closer than unrelated models")
    return SecondOpinion("neutral", score, z, bg, f"representations: {where}: not decisive")


def combine(outcome: str, opinion: SecondOpinion | None) -> tuple[str, str]:
    """(final outcome, the evidence that decided it: ``weights`` or ``weights + representations``)."""
    if opinion is None or outcome not in UNCERTAIN:
        return outcome, "weights"
    if opinion.finding == "supports":
        return "derived", "weights + representations"
    if outcome == "shared_init" and opinion.finding == "against":
        return "shared_init", "weights + representations"
    return outcome, "weights"


def representation_cka(xa: np.ndarray, xb: np.ndarray) -> float:
    """Biased linear CKA of two z-scored representation matrices (rows: the same probe texts)."""
    import torch

    from fingerprint.similarity.cka import feature_cka

    return float(feature_cka(torch.from_numpy(xa), torch.from_numpy(xb), unbiased=False))


class Representations:
    """REEF representations per model, computed once (a model runs only if it is a safetensors checkpoint
    with ``tokenizer.json``; never remote code)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._reps: dict[str, np.ndarray | None] = {}
        self.errors: dict[str, str] = {}

    def of(self, m: CanonicalModel) -> np.ndarray | None:
        key = str(m.repo.name)
        if key not in self._reps:
            from fingerprint.errors import FingerprintError
            from fingerprint.similarity.reef import probe_texts, representations, zscore

            try:
                self._reps[key] = zscore(representations(m, probe_texts(), self.device))
            except FingerprintError as e:
                self._reps[key], self.errors[key] = None, str(e)
            except Exception as e:
                self._reps[key], self.errors[key] = None, f"{key}: cannot run the model ({type(e).__name__}: {e})"
        return self._reps[key]


def second_opinion(a: CanonicalModel, b: CanonicalModel, backgrounds: Sequence[CanonicalModel],
                   reps: Representations | None = None,
                   independent: Callable[[CanonicalModel, CanonicalModel], bool] | None = None) -> SecondOpinion:
    """The representation evidence on ``a`` and ``b``: their CKA against each side's CKA with the
    ``backgrounds`` the weights call independent of that side (``independent(x, y)``: default, the
    ``lineage`` verdict on the two checkpoints)."""
    reps = reps or Representations()
    if independent is None:
        from fingerprint.similarity.lineage import compare_lineage

        def independent(x: CanonicalModel, y: CanonicalModel) -> bool:
            return compare_lineage(x, y).verdict == "independent"

    xa, xb = reps.of(a), reps.of(b)
    if xa is None or xb is None:
        why = reps.errors.get(str((a if xa is None else b).repo.name), "the model cannot be run")
        return SecondOpinion("unavailable", None, None, (), f"representations: {why}")
    bg = []
    for x in backgrounds:
        for side, rep in ((a, xa), (b, xb)):
            rx = reps.of(x) if x.repo.name not in (a.repo.name, b.repo.name) else None
            if rx is not None and _safe(independent, side, x):
                bg.append(representation_cka(rep, rx))
    return judge(representation_cka(xa, xb), bg)


def _safe(independent: Callable[[CanonicalModel, CanonicalModel], bool], x: CanonicalModel, y: CanonicalModel) -> bool:
    """Whether the weights call the pair independent (a pair they cannot compare is not a background)."""
    from fingerprint.errors import FingerprintError

    try:
        return independent(x, y)
    except FingerprintError:
        return False
