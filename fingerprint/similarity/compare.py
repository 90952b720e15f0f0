"""Weight-based lineage comparison: faithful AWM and our ``lineage`` method.

Both align the residual streams on shared-token embeddings, then average per-layer unbiased CKA
of the Q and K input Grams (``s = (mean_l CKA_Q + mean_l CKA_K) / 2``). ``awm`` reproduces the
reference: raw (unfolded) weights, plain Grams, signed LAP only. ``lineage`` adds:

* norm gains folded into Q/K (immune to gain reshuffling and AWQ/SmoothQuant channel scaling);
* RoPE-pair normalized Grams (immune to per-head and per-pair Q↔K rescaling);
* an alignment-quality check (matched ``|cos|`` against its chance level on token-shuffled rows)
  and, when the signed LAP is poor, an orthogonal Procrustes alignment fitted on embeddings (plus
  the folded lm_head of untied models) and validated on the Q/K Grams it was not fitted on;
* a per-pair null: the same score under random signed permutations of the aligned coordinates,
  which depends on this pair's widths, spectra and depth. ``z = (s − μ₀) / σ₀``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.similarity.align import chance_lap_quality, signed_lap
from fingerprint.similarity.cka import cka_centered, u_center
from fingerprint.similarity.factored import TargetWork, too_few_shared
from fingerprint.similarity.grams import plain_gram
from fingerprint.tokenizer import shared_tokens

METHOD_VERSION = "3"  # 3: no `derived` without a credible residual alignment
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
Z_DERIVED = 6.0
Z_INDEPENDENT = 3.0
MIN_DERIVED_SCORE = 0.02
MAX_INDEPENDENT_SCORE = 0.01
SHARED_DIRECTIONS = 6.0


def score_thresholds(width: int) -> tuple[float, float]:
    """(least score called derived, greatest score called independent) at residual width ``width``:
    ``max(0.02, 3·k/d)`` and ``max(0.01, 2·k/d)`` with ``k = SHARED_DIRECTIONS``."""
    bg = SHARED_DIRECTIONS / max(1, width)
    return max(MIN_DERIVED_SCORE, 3 * bg), max(MAX_INDEPENDENT_SCORE, 2 * bg)


#: LAP alignment is "poor" below this multiple of its chance level, or below this absolute mean
#: matched |cos| (a signed permutation of a fine-tune matches columns at |cos| ≈ 0.9 or more; a dense
#: rotation spreads every column over many); Procrustes is then tried.
POOR_ALIGNMENT_RATIO = 2.0
POOR_ALIGNMENT_ABS = 0.5
#: Procrustes is accepted when the rotation explains this share of the target embeddings and
#: clearly more than it does on token-shuffled rows. A derivative keeps its embeddings (fine-tunes
#: move them little), so a rotated derivative is explained almost fully; independent models' embedding
#: spaces share semantics that an orthogonal map also captures in part (besides the Gaussian spurious
#: level 0.85·√(d/n)), so a half-explained embedding is no evidence: the bar is three quarters.
MIN_PROCRUSTES_FIT = 0.75
MIN_PROCRUSTES_GAIN = 0.25
NULL_DRAWS = 24
#: `independent` needs at least this many shared tokens (the LAP's chance level falls as 1/√n).
MIN_TRUSTED_TOKENS = 256
MAX_ANCHORS = 65536
MIN_SHARED_TOKENS = 8


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
    verdict: str
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [{**asdict(x), "score": x.score} for x in self.layers]
        d["method_version"] = METHOD_VERSION
        return d


def _device() -> torch.device:
    return torch.device("cpu")


def verdict_of(score: float, z: float, trustworthy: bool, width: int | None = None, aligned: bool = True) -> str:
    """``derived`` / ``independent`` / ``inconclusive`` from the score, its z against the null and, for
    weight methods, the residual width (see :func:`score_thresholds`) and whether the residual streams
    were credibly aligned (``derived`` needs it; see the note above :data:`Z_DERIVED`)."""
    hi, lo = score_thresholds(width) if width else (MIN_DERIVED_SCORE, MAX_INDEPENDENT_SCORE)
    if z >= Z_DERIVED and score >= hi and aligned:
        return "derived"
    if (z < Z_INDEPENDENT or score < lo) and trustworthy:
        return "independent"
    return "inconclusive"


def _awm_grams(m: CanonicalModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """AWM's plain input Grams of raw (unfolded) Q and K, per layer."""
    out = []
    for layer in range(m.spec.num_layers):
        q, k = m.attention(layer, fold=False)
        out.append((plain_gram(torch.tensor(q)), plain_gram(torch.tensor(k))))
    return out


def _anchor_ids(ids_a: list[int], ids_b: list[int]) -> tuple[list[int], list[int]]:
    if len(ids_a) <= MAX_ANCHORS:
        return ids_a, ids_b
    sel = np.random.default_rng(0).choice(len(ids_a), MAX_ANCHORS, replace=False)
    sel.sort()
    return [ids_a[i] for i in sel], [ids_b[i] for i in sel]


def _align_gram(k: torch.Tensor, index: np.ndarray, sign: np.ndarray) -> torch.Tensor:
    idx = torch.from_numpy(index)
    sg = torch.from_numpy(sign).to(k.dtype)
    return k[idx][:, idx] * sg[:, None] * sg[None, :]


def _layer_pairs(cka: np.ndarray) -> list[tuple[int, int]]:
    la, lb = cka.shape
    if la == lb:
        return [(i, i) for i in range(la)]
    r, c = linear_sum_assignment(-cka)
    return sorted(zip(r.tolist(), c.tolist()))


def _score_layers(
    gb: list[tuple[torch.Tensor, torch.Tensor]], gt: list[tuple[torch.Tensor, torch.Tensor]],
    pairs: list[tuple[int, int]] | None,
) -> tuple[list[tuple[int, int, float, float]], float]:
    """CKA per matched layer pair; ``pairs`` indexes (B layer, T layer). Computes matching if None."""
    cb = [(u_center(q), u_center(k)) for q, k in gb]
    ct = [(u_center(q), u_center(k)) for q, k in gt]
    if pairs is None:
        if len(cb) == len(ct):
            pairs = [(i, i) for i in range(len(cb))]
        else:
            mat = np.array([[(cka_centered(b[0], t[0]) + cka_centered(b[1], t[1])) / 2 for t in ct] for b in cb])
            pairs = _layer_pairs(mat)
    rows = [(i, j, cka_centered(cb[i][0], ct[j][0]), cka_centered(cb[i][1], ct[j][1])) for i, j in pairs]
    qm = float(np.mean([r[2] for r in rows]))
    km = float(np.mean([r[3] for r in rows]))
    return rows, (qm + km) / 2


def compare_models(a: CanonicalModel, b: CanonicalModel, method: str = "lineage") -> CompareResult:
    """Compare two checkpoints by weights (``method`` is ``awm`` or ``lineage``).

    ``lineage`` builds exact sketches of both models over the tokens they share and scores them with
    :func:`compare_fingerprints` (the same code that compares fingerprint files); ``awm`` is the faithful
    dense reference.

    Raises:
        ComparisonError: no shared tokens, or shapes that cannot be aligned.
    """
    if method not in ("awm", "lineage"):
        raise ComparisonError(f"unknown weight method {method!r}")
    if method == "lineage":
        from fingerprint.sketch import bottom_k, sketch_model

        keys = bottom_k(sorted(set(a.vocab().keys) & set(b.vocab().keys)), MAX_ANCHORS)
        if len(keys) < MIN_SHARED_TOKENS:
            raise too_few_shared(len(keys))
        res = compare_fingerprints(sketch_model(a, rank=None, keys=keys), sketch_model(b, rank=None, keys=keys))
        res.bytes_read = {"a": a.bytes_read, "b": b.bytes_read}
        return res
    t0 = time.perf_counter()
    notes: list[str] = []
    ids_a, ids_b, _ = shared_tokens(a.vocab(), b.vocab())
    if len(ids_a) < MIN_SHARED_TOKENS:
        raise too_few_shared(len(ids_a))
    ids_a, ids_b = _anchor_ids(ids_a, ids_b)
    # Reference = the wider model (AWM's rule); T's coordinates are matched into it.
    swap = b.spec.hidden_size > a.spec.hidden_size
    mb, mt = (b, a) if swap else (a, b)
    idb, idt = (ids_b, ids_a) if swap else (ids_a, ids_b)
    e_b = torch.from_numpy(mb.embed_rows(idb))
    e_t = torch.from_numpy(mt.embed_rows(idt))
    sp = signed_lap(e_b, e_t)
    chance = chance_lap_quality(e_b, e_t)
    gb, gt = _awm_grams(mb), _awm_grams(mt)
    d_t = mt.spec.hidden_size
    aligned = [(_align_gram(q, sp.index, sp.sign), _align_gram(k, sp.index, sp.sign)) for q, k in gb]
    rows, score = _score_layers(aligned, gt, None)
    alignment, fit = "signed-lap", None
    # Per-pair null: the same statistic after random signed permutations of T's coordinates.
    pairs = [(i, j) for i, j, _, _ in rows]
    rng = np.random.default_rng(12345)
    null = []
    for _ in range(NULL_DRAWS):
        perm = rng.permutation(d_t)
        sg = rng.choice([-1.0, 1.0], d_t)
        shuffled = [(_align_gram(q, perm, sg), _align_gram(k, perm, sg)) for q, k in gt]
        null.append(_score_layers(aligned, shuffled, pairs)[1])
    mu, sd = float(np.mean(null)), float(np.std(null, ddof=1))
    z = (score - mu) / max(sd, 1e-6)
    trustworthy = len(ids_a) >= max(MIN_TRUSTED_TOKENS, d_t)
    if not trustworthy:
        notes.append(f"only {len(ids_a)} shared tokens for width {d_t}: too few to call a pair independent")
    verdict = verdict_of(score, z, trustworthy, d_t)
    hi, lo = score_thresholds(d_t)
    layers = [LayerScore(j, i, q, k) if swap else LayerScore(i, j, q, k) for i, j, q, k in rows]
    return CompareResult(
        method=method, verdict=verdict, score=score, z=z, alignment=alignment,
        alignment_quality=sp.quality, alignment_chance=chance, procrustes_fit=fit,
        shared_tokens=len(ids_a), layers=layers, null_mean=mu, null_std=sd,
        thresholds={"z_derived": Z_DERIVED, "z_independent": Z_INDEPENDENT,
                    "min_derived_score": round(hi, 5), "max_independent_score": round(lo, 5)},
        background=(f"per-pair null: {NULL_DRAWS} random signed permutations of the aligned coordinates (seed 12345); "
                    f"shared-direction background {SHARED_DIRECTIONS:g}/d at d={d_t}"),
        bytes_read={"a": a.bytes_read, "b": b.bytes_read}, seconds=time.perf_counter() - t0,
        reference="b" if swap else "a", notes=notes,
    )


def compare_fingerprints(a: Any, b: Any, work: TargetWork | None = None) -> CompareResult:
    """The ``lineage`` method on two sketches (:mod:`fingerprint.sketch`), e.g. two fingerprint files.

    ``work`` (a :class:`TargetWork` of ``b``) carries the suspect's share of the work from one base to
    the next when one suspect is scored against several.
    """
    from fingerprint.similarity.factored import compare_sketches

    c = compare_sketches(a, b, max_anchors=MAX_ANCHORS, null_draws=NULL_DRAWS, poor_ratio=POOR_ALIGNMENT_RATIO,
                         poor_abs=POOR_ALIGNMENT_ABS, min_fit=MIN_PROCRUSTES_FIT, min_gain=MIN_PROCRUSTES_GAIN,
                         min_shared=MIN_SHARED_TOKENS, work=work)
    mu, sd = float(np.mean(c.null)), float(np.std(c.null, ddof=1))
    z = (c.score - mu) / max(sd, 1e-6)
    notes = list(c.notes)
    # `independent` must rule out a rotated derivative, which only Procrustes finds, and Procrustes
    # recovers a d-wide rotation from no fewer than d anchor rows: shared tokens, counted twice when
    # both models are untied (their lm_head rows are a second view of the same basis).
    views = 2 if a.lm_head is not None and b.lm_head is not None else 1
    trustworthy = c.shared >= MIN_TRUSTED_TOKENS and c.shared * views >= c.width
    if not trustworthy:
        rows = f" ({c.shared * views} rows with both lm_heads)" if views == 2 else ""
        notes.append(f"only {c.shared} shared tokens{rows} for width {c.width}: too few to rule out a rotated "
                     "derivative, so the pair is not called independent")
    tails = [max(t) for sk in (a, b) for t in sk.tails]
    if tails and max(tails) > 0:
        notes.append(f"compact factors: largest dropped tail share {max(tails):.2e} of a Gram's energy")
    hi, lo = score_thresholds(c.width)
    if not c.aligned and z >= Z_DERIVED and c.score >= hi:
        notes.append("no credible residual alignment: independently trained models with similar embeddings "
                     "score this high too, so the pair is not called derived")
    layers = [LayerScore(j, i, q, k) if c.swap else LayerScore(i, j, q, k) for i, j, q, k in c.rows]
    return CompareResult(
        method="lineage", verdict=verdict_of(c.score, z, trustworthy, c.width, c.aligned), score=c.score, z=z,
        alignment=c.alignment, alignment_quality=c.quality, alignment_chance=c.chance, procrustes_fit=c.fit,
        shared_tokens=c.shared, layers=layers, null_mean=mu, null_std=sd,
        thresholds={"z_derived": Z_DERIVED, "z_independent": Z_INDEPENDENT,
                    "min_derived_score": round(hi, 5), "max_independent_score": round(lo, 5)},
        background=(f"per-pair null: {NULL_DRAWS} random signed permutations of the aligned coordinates (seed 12345); "
                    f"shared-direction background {SHARED_DIRECTIONS:g}/d at d={c.width}"),
        bytes_read={"a": int(a.meta.get("bytes_read", 0)), "b": int(b.meta.get("bytes_read", 0))},
        seconds=c.seconds, reference="b" if c.swap else "a", notes=notes, aligned=c.aligned,
    )


def _result(method: str, score: float, null: list[float], a: CanonicalModel, b: CanonicalModel, t0: float,
            n_shared: int, alignment: str, background: str, notes: list[str]) -> CompareResult:
    mu, sd = float(np.mean(null)), float(np.std(null, ddof=1))
    z = (score - mu) / max(sd, 1e-6)
    return CompareResult(
        method=method, verdict=verdict_of(score, z, True), score=score, z=z, alignment=alignment,
        alignment_quality=float("nan"), alignment_chance=float("nan"), procrustes_fit=None, shared_tokens=n_shared,
        layers=[], null_mean=mu, null_std=sd,
        thresholds={"z_derived": Z_DERIVED, "z_independent": Z_INDEPENDENT,
                    "min_derived_score": MIN_DERIVED_SCORE, "max_independent_score": MAX_INDEPENDENT_SCORE},
        background=background, bytes_read={"a": a.bytes_read, "b": b.bytes_read},
        seconds=time.perf_counter() - t0, reference="a", notes=notes)


def compare_huref(a: CanonicalModel, b: CanonicalModel, n_tokens: int = 4096) -> CompareResult:
    """HuRef's invariant-terms cosine (ICS) on rare shared tokens (see :mod:`.huref`)."""
    from fingerprint.similarity.huref import ics, invariant_terms, select_rare

    t0 = time.perf_counter()
    ids_a, ids_b, keys = shared_tokens(a.vocab(), b.vocab())
    if len(ids_a) < MIN_SHARED_TOKENS:
        raise ComparisonError(f"the two tokenizers share only {len(ids_a)} tokens; HuRef needs shared tokens")
    sa, sb = select_rare(a, ids_a, ids_b, keys, min(n_tokens, len(ids_a)))
    ta, tb = invariant_terms(a, sa), invariant_terms(b, sb)
    if len(ta) != len(tb):
        raise ComparisonError("HuRef terms differ in number (one model lacks an MLP term)")
    score = ics(ta, tb)
    rng = np.random.default_rng(12345)
    null = []
    for _ in range(NULL_DRAWS):
        p = torch.from_numpy(rng.permutation(len(sb)))
        null.append(ics(ta, [t[p][:, p] for t in tb]))
    return _result("huref", score, null, a, b, t0, len(ids_a), "token-space (none needed)",
                   f"per-pair null: {NULL_DRAWS} random permutations of the selected tokens (seed 12345)",
                   [f"{len(sa)} rare shared tokens, last 2 layers"])


def compare_reef(a: CanonicalModel, b: CanonicalModel, device: str = "cpu", texts: list[str] | None = None) -> CompareResult:
    """REEF's CKA of z-scored middle-layer last-token representations (see :mod:`.reef`).

    ``texts`` defaults to the shipped probe statements.
    """
    from fingerprint.similarity.cka import feature_cka
    from fingerprint.similarity.reef import probe_texts, representations, zscore

    t0 = time.perf_counter()
    texts = texts or probe_texts()
    xa = torch.from_numpy(zscore(representations(a, texts, device)))
    xb = torch.from_numpy(zscore(representations(b, texts, device)))
    score = feature_cka(xa, xb, unbiased=False)
    rng = np.random.default_rng(12345)
    null = [feature_cka(xa, xb[torch.from_numpy(rng.permutation(len(texts)))], unbiased=False) for _ in range(NULL_DRAWS)]
    return _result("reef", score, null, a, b, t0, 0, "representations (none needed)",
                   f"per-pair null: {NULL_DRAWS} random pairings of the {len(texts)} probe texts (seed 12345)",
                   [f"{len(texts)} probe texts"])


METHODS = ("lineage", "awm", "huref", "reef")


def compare(a: CanonicalModel, b: CanonicalModel, method: str = "lineage") -> CompareResult:
    """Compare two opened models with one of :data:`METHODS`."""
    if method in ("lineage", "awm"):
        return compare_models(a, b, method)
    if method == "huref":
        return compare_huref(a, b)
    if method == "reef":
        return compare_reef(a, b)
    raise ComparisonError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
