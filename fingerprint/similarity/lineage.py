"""Our ``lineage`` method: AWM's statistic on canonical weights, with a checked alignment.

Residual streams are aligned on shared-token embeddings, then per-layer unbiased CKA of the Q and K
input Grams is averaged, ``s = (mean_l CKA_Q + mean_l CKA_K) / 2``. Beyond AWM:

* norm gains folded into Q/K (immune to gain reshuffling and AWQ/SmoothQuant channel scaling);
* RoPE-pair normalized Grams (immune to per-head and per-pair Q↔K rescaling);
* an alignment-quality check (matched ``|cos|`` against its chance level on token-shuffled rows)
  and, when the signed LAP is poor, an orthogonal Procrustes alignment fitted on embeddings (plus
  the folded lm_head of untied models) and validated on the Q/K Grams it was not fitted on;
* a per-pair null: the exact spread of the same score under random signed permutations of the aligned
  coordinates (:mod:`.null`), which depends on this pair's widths, spectra and depth. ``z = s / σ₀``.

Two checkpoints are compared by :mod:`.pairwise` (streamed from the weights, numpy); two sketches
(fingerprint files, the index) by :mod:`.factored`. Both end in :func:`lineage_result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fingerprint.canonical import CanonicalModel
from fingerprint.similarity.verdict import (
    G_INDEPENDENT,
    GATES,
    INHERITED_SCORE,
    MIN_TRUSTED_TOKENS,
    SHARED_INIT_SHARE,
    Z_DERIVED,
    CompareResult,
    Gates,
    LayerScore,
    SketchComparison,
    build_result,
    embedding_share,
    exact_background,
    fit_gain,
    no_correspondence,
    score_thresholds,
)

if TYPE_CHECKING:  # the sketch path (torch) is imported only when sketches are compared
    from fingerprint.similarity.factored import TargetWork
    from fingerprint.sketch import Sketch


def lineage_result(c: SketchComparison, views: int, bytes_read: dict[str, int], tails: list[float] | None = None) -> CompareResult:
    """The verdict and report of one ``lineage`` comparison.

    ``views`` is 2 when both models are untied (their lm_head rows are a second view of the residual
    basis), ``tails`` the dropped tail shares of compact factors.
    """
    notes = list(c.notes)
    # `independent` must rule out a rotated derivative, which only Procrustes finds, and Procrustes
    # recovers a d-wide rotation from no fewer than d anchor rows: shared tokens, counted twice when
    # both models are untied (their lm_head rows are a second view of the same basis).
    trustworthy = c.shared >= MIN_TRUSTED_TOKENS and c.shared * views >= c.width
    if not trustworthy:
        rows = f" ({c.shared * views} rows with both lm_heads)" if views == 2 else ""
        notes.append(f"only {c.shared} shared tokens{rows} for width {c.width}: too few to rule out a rotated "
                     "derivative, so the pair is not called independent")
    if tails and max(tails) > 0:
        notes.append(f"compact factors: largest dropped tail share {max(tails):.2e} of a Gram's energy")
    layers = [LayerScore(j, i, q, k) if c.swap else LayerScore(i, j, q, k) for i, j, q, k in c.rows]
    res = build_result(
        "lineage", c.score, None, null_moments=(0.0, c.null_sd), background=exact_background(c.width),
        bytes_read=bytes_read, seconds=c.seconds, shared=c.shared, alignment=c.alignment, width=c.width,
        trustworthy=trustworthy, aligned=c.aligned, quality=c.quality, chance=c.chance, fit=c.fit,
        fit_chance=c.fit_chance, layers=layers, reference="b" if c.swap else "a", notes=notes)
    res.timings = dict(c.timings)
    if c.aligned:
        res.embedding_share = embedding_share(c.alignment, c.quality, c.fit)
    if (res.verdict == "derived" and res.embedding_share is not None and res.embedding_share < SHARED_INIT_SHARE
            and c.score < SHARED_INIT_SHARE):
        res.shared_init = True
        res.notes.append(f"shared initialization: the weights share an origin, but the aligned embeddings explain only "
                         f"{res.embedding_share:.2f} of each other (< {SHARED_INIT_SHARE:g}; a derivative keeps most of "
                         "its parent's): a shared random start trained apart, or half of a merge with an unrelated model")
    if res.verdict == "independent" and not c.aligned and no_correspondence(c.fit, c.fit_chance):
        assert c.fit is not None and c.fit_chance is not None
        res.notes.append(f"no correspondence beyond what similar training gives: a rotation explains {c.fit:.2f} of the "
                         f"embeddings ({c.fit_chance:.2f} on token-shuffled rows, {fit_gain(c.fit, c.fit_chance):.2f} of "
                         f"the rest < {G_INDEPENDENT:g}); a derivative keeps its parent's embeddings up to a rotation")
    elif not c.aligned and res.verdict == "derived":
        res.notes.append(f"the embeddings show no credible alignment, but under the signed LAP's matching the layers "
                         f"agree at {c.score:.2f} ≥ {INHERITED_SCORE:g}, which no chance matching reaches (~ln d/d): "
                         "inherited layers under re-initialized or retrained embeddings")
    elif not c.aligned and res.z >= Z_DERIVED and c.score >= score_thresholds(c.width)[0]:
        res.notes.append("no credible residual alignment: independently trained models with similar embeddings "
                         "score this high too, so the pair is not called derived")
    return res


def compare_fingerprints(a: Sketch, b: Sketch, work: TargetWork | None = None, gates: Gates = GATES) -> CompareResult:
    """The ``lineage`` method on two sketches (:mod:`fingerprint.sketch`), e.g. two fingerprint files.

    ``work`` (a :class:`TargetWork` of ``b``) carries the suspect's share of the work from one base to
    the next when one suspect is scored against several.
    """
    from fingerprint.similarity.factored import compare_sketches

    c = compare_sketches(a, b, gates, work=work)
    views = 2 if a.lm_head is not None and b.lm_head is not None else 1
    return lineage_result(c, views, {"a": int(a.meta.get("bytes_read", 0)), "b": int(b.meta.get("bytes_read", 0))},
                          [max(t) for sk in (a, b) for t in sk.tails])


def compare_lineage(a: CanonicalModel, b: CanonicalModel, gates: Gates = GATES) -> CompareResult:
    """The ``lineage`` method on two checkpoints, streamed from the weights (:mod:`.pairwise`).

    Raises:
        ComparisonError: too few shared tokens, or shapes that cannot be aligned.
    """
    from fingerprint.similarity.pairwise import compare_checkpoints

    c, views = compare_checkpoints(a, b, gates)
    return lineage_result(c, views, {"a": a.bytes_read, "b": b.bytes_read})
