"""The verdict policy every comparison method shares, the result type, and its one builder.

A method computes a score and a per-pair null (the same statistic under random signed permutations of
the aligned coordinates, token permutations for HuRef, text pairings for REEF); this module turns them
into ``z = (s − μ₀) / σ₀`` and a verdict:

* ``derived``: ``z ≥ Z_DERIVED``, ``s ≥ max(0.02, 3k/d)`` and a credible residual alignment;
* ``independent``: enough anchor rows that a derivative would have shown an alignment (``trustworthy``),
  and ``z < Z_INDEPENDENT``, or ``s < max(0.01, 2k/d)``, or no credible alignment and no more than
  chance-level correspondence: the best rotation explains less than ``G_INDEPENDENT`` of what chance
  (token-shuffled rows) leaves unexplained;
* ``inconclusive``: everything else.

Why each threshold (``k = SHARED_DIRECTIONS``) is argued in ``docs/method/verdict.md`` and in
the comments below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from fingerprint.errors import ComparisonError

#: 3: no `derived` without a credible residual alignment; 4: no correspondence → independent;
#: 5: the null's spread in closed form instead of 24 draws, numpy alignment, pairwise anchors bottom-k;
#: 6: ``derived`` pairs that share only a random start are flagged ``shared_init``; layers matched at a score
#: no chance matching reaches count as an alignment (:data:`INHERITED_SCORE`).
METHOD_VERSION = "6"
#: Verdicts, as :mod:`graph.records` spells them too (a test keeps the two equal).
Verdict = Literal["derived", "inconclusive", "independent"]

#: Verdict thresholds. The per-pair null (random signed permutations) says whether there is *any*
#: residual-basis correspondence; independently trained models have a little, because they share a
#: few universal residual directions (token frequency, position, outlier dimensions) that the LAP
#: matches. If about ``SHARED_DIRECTIONS`` of ``d`` coordinates line up, their share of the score is
#: ``SHARED_DIRECTIONS / d``: ≤ 0.15% at d = 4096, inside AWM's published independent pairs on real
#: 7B models (mean 0.375%, max ≈ 0.7%), and ≈ 7% at d = 64, where the zoo's independent bases sit.
#: Derived needs 3× that background (and never less than 0.02, 5σ above AWM's negatives); independent
#: needs less than 2× (and is always allowed below 0.01); in between is inconclusive.
#:
#: Those directions are not the only background. Independently trained models learn similar embedding
#: *geometry* in unrelated bases (roughly ``E_T ≈ E_B R`` for some rotation ``R``); the signed LAP then
#: matches each column to the one with the largest ``|R_ij|``, about ``√(2 ln d / d)`` for a random ``R``
#: (0.15–0.2 at d = 256, against ≈ 0.9 for a derivative), and the Q/K Grams under that partial match
#: score ~``ln d / d`` with a huge z, since the signed-permutation null destroys the match too. So a
#: pair whose alignment is not credible (LAP poor and no Procrustes rotation accepted) is never
#: called derived, whatever its score: an embedding-level correspondence is the evidence a derivative
#: leaves and an independent model does not.
#:
#:
#: The mirror image gives ``independent``. With at least ``d`` anchor rows a rotation of the residual
#: basis is recoverable (Procrustes is overdetermined), so a derivative, rotated or not, shows one: its
#: embeddings are its parent's up to a drift ``δ`` (relative Frobenius norm), and the best rotation
#: explains ``f ≈ 1 − δ²`` of them. Token-shuffled rows give the fit ``c`` a rotation reaches by chance
#: at this width and row count; ``g = (f − c) / (1 − c)`` is the share of what chance leaves unexplained
#: that the rotation explains. A derivative has ``g ≈ 1 − δ²/(1 − c)``: below ``G_INDEPENDENT`` = ½ only
#: if it moved its embeddings by ``δ² > (1 − c)/2``, about 70% of their norm, i.e. retrained them. No
#: fine-tune, merge, pruning, quantization or basis attack does (derivatives: LAP quality ≥ 0.89, or
#: ``f`` ≥ 0.88 after a rotation, on both zoos); independently trained models share only what similar
#: text teaches (``g`` = 0.14–0.27 at d = 256, 0.39–0.50 at d = 64). So with enough rows and no credible
#: alignment, ``g < ½`` is evidence of independence. Above it without a credible alignment is the band a
#: heavily changed derivative (embeddings moved by 50–70%) or a shared random initialization can occupy:
#: ``inconclusive``.
G_INDEPENDENT = 0.5
#: ``derived`` says the weights share an origin; whether that origin is a *trained* parent is a second
#: question. A derivative starts from its parent's trained embeddings and moves them by a drift ``δ``, so
#: the aligned parent explains ``e ≈ 1 − δ²`` of them: the Procrustes fit ``f``, or ``q²`` for a signed
#: LAP whose matched columns have mean ``|cos| = q``. Two models trained apart from one random start
#: (same seed and shapes, other data) share only that start: each training run moves the embeddings as
#: far as pretraining does, and a 50/50 merge with an unrelated model shares half its parent's (both:
#: ``q ≈ 0.7``, ``e ≈ ½``). A pair the weights call derived whose embedding share is under the bar that
#: accepts a rotation (:attr:`Gates.min_fit`, three quarters: "most of the embeddings inherited") is
#: flagged ``shared_init`` when its layer score is under the same bar: a shared random start, not a trained
#: parent (a merge's two such parents together explain it; a card naming the other model settles it).
#: Derivatives on both zoos: ``e`` ≥ 0.84.
SHARED_INIT_SHARE = 0.75
#: The layers can carry the evidence the embeddings lost. Under a coordinate matching that chance made
#: (independent models: each column's best match has ``|cos| ≈ √(2 ln d / d)``), the Q/K Grams agree at
#: ~``ln d / d`` (≤ 0.11 on both zoos, every negative); agreeing on half their structure or more needs the
#: matched coordinates to be the other model's own. So a score of at least ``INHERITED_SCORE`` under the
#: signed LAP's matching counts as a credible alignment even when the embeddings no longer show one
#: (re-initialized or retrained embeddings over inherited layers), and never as independence; nor is a
#: pair whose layers are inherited that far flagged ``shared_init`` (a random start trained apart keeps
#: no more of its layers than of its embeddings: both under :data:`SHARED_INIT_SHARE`).
INHERITED_SCORE = 0.5
Z_DERIVED = 6.0
Z_INDEPENDENT = 3.0
MIN_DERIVED_SCORE = 0.02
MAX_INDEPENDENT_SCORE = 0.01
SHARED_DIRECTIONS = 6.0
NULL_DRAWS = 24
NULL_SEED = 12345
#: `independent` needs at least this many shared tokens (the LAP's chance level falls as 1/√n).
MIN_TRUSTED_TOKENS = 256
MAX_ANCHORS = 65536
MIN_SHARED_TOKENS = 8


@dataclass(frozen=True)
class Gates:
    """When an alignment is credible (see :mod:`fingerprint.similarity.lineage`).

    The signed LAP is *poor* below ``poor_ratio`` × its chance level, or below ``poor_abs`` mean matched
    |cos| (a signed permutation of a fine-tune matches columns at |cos| ≈ 0.9 or more; a dense rotation
    spreads every column over many); Procrustes is then tried. It is accepted when the rotation
    explains ``min_fit`` of the target embeddings and ``min_gain`` more than on token-shuffled rows: a
    derivative keeps its embeddings (fine-tunes move them little), so a rotated derivative is explained
    almost fully, while independent models' embedding spaces share semantics an orthogonal map also
    captures in part (besides the Gaussian spurious level 0.85·√(d/n)), so the bar is three quarters.
    """

    poor_ratio: float = 2.0
    poor_abs: float = 0.5
    min_fit: float = 0.75
    min_gain: float = 0.25
    max_anchors: int = MAX_ANCHORS
    min_shared: int = MIN_SHARED_TOKENS


GATES = Gates()


def too_few_shared(n: int) -> ComparisonError:
    """The one error for a pair whose vocabularies barely overlap (weight methods cannot align them)."""
    return ComparisonError(
        f"the two tokenizers share only {n} tokens after normalization; residual streams "
        "cannot be aligned (a replaced tokenizer needs an activation-based test such as --method reef)")


def score_thresholds(width: int) -> tuple[float, float]:
    """(least score called derived, greatest score called independent) at residual width ``width``:
    ``max(0.02, 3·k/d)`` and ``max(0.01, 2·k/d)`` with ``k = SHARED_DIRECTIONS``."""
    bg = SHARED_DIRECTIONS / max(1, width)
    return max(MIN_DERIVED_SCORE, 3 * bg), max(MAX_INDEPENDENT_SCORE, 2 * bg)


def fit_gain(fit: float, chance: float) -> float:
    """``g = (f − c) / (1 − c)``: the share of the embeddings a rotation explains beyond its chance level."""
    return (fit - chance) / max(1e-9, 1.0 - chance)


def no_correspondence(fit: float | None, chance: float | None) -> bool:
    """Whether a Procrustes fit and its chance level show no more than chance (``g < G_INDEPENDENT``);
    False when they were not measured (a credible signed LAP)."""
    return fit is not None and chance is not None and fit_gain(fit, chance) < G_INDEPENDENT


def embedding_share(alignment: str, quality: float, fit: float | None) -> float:
    """The share of one model's embeddings the other, aligned, explains: the Procrustes fit ``f`` when a
    rotation aligned them, else ``q²`` (``q``: the signed LAP's mean matched ``|cos|``)."""
    if alignment.startswith("procrustes") and fit is not None:
        return float(fit)
    return float(quality) ** 2


def verdict_of(score: float, z: float, trustworthy: bool, width: int | None = None, aligned: bool = True,
               unrelated: bool = False) -> Verdict:
    """``derived`` / ``independent`` / ``inconclusive`` from the score, its z against the null and, for
    weight methods, the residual width (see :func:`score_thresholds`), whether the residual streams were
    credibly aligned (``derived`` needs it) and whether they show no correspondence beyond chance
    (``unrelated``: enough for ``independent``; see the notes above :data:`Z_DERIVED`)."""
    hi, lo = score_thresholds(width) if width else (MIN_DERIVED_SCORE, MAX_INDEPENDENT_SCORE)
    inherited = width is not None and score >= INHERITED_SCORE  # layers matched beyond any chance matching
    if z >= Z_DERIVED and score >= hi and (aligned or inherited):
        return "derived"
    if (z < Z_INDEPENDENT or score < lo or (unrelated and not aligned and not inherited)) and trustworthy:
        return "independent"
    return "inconclusive"


def weight_background(width: int) -> str:
    """How a weight method's null was drawn, for the report."""
    return (f"per-pair null: {NULL_DRAWS} random signed permutations of the aligned coordinates (seed {NULL_SEED}); "
            f"shared-direction background {SHARED_DIRECTIONS:g}/d at d={width}")


def exact_background(width: int) -> str:
    """The ``lineage`` method's null, for the report (:mod:`fingerprint.similarity.null`)."""
    return ("per-pair null: the exact variance of the score over random signed permutations of the aligned "
            f"coordinates (closed form, no draws); shared-direction background {SHARED_DIRECTIONS:g}/d at d={width}")


LayerRow = tuple[int, int, float, float]
"""(reference layer, target layer, CKA of Q, CKA of K)."""


@dataclass
class SketchComparison:
    """What the ``lineage`` statistic found on one pair, before the verdict (from sketches or checkpoints)."""

    score: float
    null_sd: float
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
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, where the path records them


@dataclass
class LayerScore:
    """CKA of one matched layer pair."""

    layer_a: int
    layer_b: int
    q: float
    k: float

    @property
    def score(self) -> float:
        return (self.q + self.k) / 2


@dataclass
class CompareResult:
    """Everything ``lineage compare`` reports (``to_dict`` is the ``--json`` document)."""

    method: str
    verdict: Verdict
    score: float
    z: float
    alignment: str
    alignment_quality: float
    alignment_chance: float
    procrustes_fit: float | None
    shared_tokens: int
    layers: list[LayerScore]
    null_mean: float
    null_std: float
    thresholds: dict[str, float]
    background: str
    bytes_read: dict[str, int]
    seconds: float
    reference: str
    notes: list[str] = field(default_factory=list)
    aligned: bool | None = None  # lineage only: a credible residual alignment was found (None: not assessed)
    procrustes_chance: float | None = None  # the rotation's fit on token-shuffled rows (its chance level)
    #: lineage only, with ``derived``: the shared origin is a random start, not a trained parent
    #: (:data:`SHARED_INIT_SHARE`); ``embedding_share`` is what that rests on
    shared_init: bool = False
    embedding_share: float | None = None
    #: with a second opinion (:mod:`.second`): the final outcome, what decided it, the evidence
    final: str | None = None
    decided_by: str = "weights"
    second_opinion: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (the pairwise path records them)

    @property
    def outcome(self) -> str:
        """What to tell a user: the verdict, or ``shared_init`` for a derived pair flagged so; after a
        second opinion, the combined outcome."""
        return self.final or ("shared_init" if self.shared_init else self.verdict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [{**asdict(x), "score": x.score} for x in self.layers]
        d["method_version"] = METHOD_VERSION
        d["outcome"] = self.outcome
        return d


def build_result(method: str, score: float, null: list[float] | None, *, background: str, bytes_read: dict[str, int],
                 seconds: float, shared: int, alignment: str, width: int | None = None, trustworthy: bool = True,
                 aligned: bool | None = None, quality: float = math.nan, chance: float = math.nan,
                 fit: float | None = None, fit_chance: float | None = None, layers: list[LayerScore] | None = None,
                 reference: str = "a", notes: list[str] | None = None,
                 null_moments: tuple[float, float] | None = None) -> CompareResult:
    """The one place a score and its null become a :class:`CompareResult`: ``z``, thresholds, verdict.

    ``width`` (weight methods) makes the score thresholds width-aware; ``aligned`` is None for methods
    that do not assess alignment (then it does not gate ``derived``); ``fit`` and ``fit_chance`` (the
    Procrustes fit and its token-shuffled chance level) decide whether an unaligned pair shows no
    correspondence at all. The null is either drawn (``null``: its mean and sample standard deviation)
    or known in closed form (``null_moments``: mean and standard deviation).
    """
    unrelated = no_correspondence(fit, fit_chance)
    if null_moments is not None:
        mu, sd = null_moments
    elif null:
        mu, sd = float(np.mean(null)), float(np.std(null, ddof=1))
    else:
        raise ValueError("build_result needs a drawn null or its moments")
    z = (score - mu) / max(sd, 1e-6)
    hi, lo = score_thresholds(width) if width else (MIN_DERIVED_SCORE, MAX_INDEPENDENT_SCORE)
    return CompareResult(
        method=method, verdict=verdict_of(score, z, trustworthy, width, aligned is not False, unrelated),
        score=score, z=z,
        alignment=alignment, alignment_quality=quality, alignment_chance=chance, procrustes_fit=fit,
        shared_tokens=shared, layers=layers or [], null_mean=mu, null_std=sd,
        thresholds={"z_derived": Z_DERIVED, "z_independent": Z_INDEPENDENT,
                    "min_derived_score": round(hi, 5), "max_independent_score": round(lo, 5)},
        background=background, bytes_read=bytes_read, seconds=seconds, reference=reference, notes=notes or [],
        aligned=aligned, procrustes_chance=fit_chance)
