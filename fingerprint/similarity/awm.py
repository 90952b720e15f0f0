"""Faithful AWM (Alignment-robust Weight Matching), kept as an honest baseline with its weaknesses.

Raw (unfolded) weights, plain input Grams of Q and K, AWM's signed LAP on shared-token embedding
columns, LAP layer matching when depths differ, and the mean of unbiased CKA over matched layers:
``s = (mean_l CKA_Q + mean_l CKA_K) / 2``. The reference is the wider model (AWM's rule). Dense d×d
Grams throughout, as the reference computes them.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fingerprint.canonical import CanonicalModel
from fingerprint.grams import plain_gram
from fingerprint.similarity.align import chance_lap_quality, match_layers, signed_lap
from fingerprint.similarity.cka import cka_centered, u_center
from fingerprint.similarity.verdict import (
    MAX_ANCHORS,
    MIN_SHARED_TOKENS,
    MIN_TRUSTED_TOKENS,
    NULL_DRAWS,
    NULL_SEED,
    CompareResult,
    LayerScore,
    build_result,
    too_few_shared,
    weight_background,
)
from fingerprint.tokenizer import shared_tokens

Grams = list[tuple[torch.Tensor, torch.Tensor]]


def _awm_grams(m: CanonicalModel) -> Grams:
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


def _score_layers(gb: Grams, gt: Grams, pairs: list[tuple[int, int]] | None) -> tuple[list[tuple[int, int, float, float]], float]:
    """CKA per matched layer pair; ``pairs`` indexes (B layer, T layer). Matches layers by LAP if None
    and the depths differ."""
    cb = [(u_center(q), u_center(k)) for q, k in gb]
    ct = [(u_center(q), u_center(k)) for q, k in gt]
    if pairs is None:
        pairs = match_layers(len(cb), len(ct), lambda i, j: (cka_centered(cb[i][0], ct[j][0])
                                                             + cka_centered(cb[i][1], ct[j][1])) / 2)
    rows = [(i, j, cka_centered(cb[i][0], ct[j][0]), cka_centered(cb[i][1], ct[j][1])) for i, j in pairs]
    qm = float(np.mean([r[2] for r in rows]))
    km = float(np.mean([r[3] for r in rows]))
    return rows, (qm + km) / 2


def compare_awm(a: CanonicalModel, b: CanonicalModel) -> CompareResult:
    """AWM's score, its per-pair null (random signed permutations of T's coordinates) and a verdict.

    Raises:
        ComparisonError: too few shared tokens.
    """
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
    pairs = [(i, j) for i, j, _, _ in rows]
    rng = np.random.default_rng(NULL_SEED)
    null = []
    for _ in range(NULL_DRAWS):
        perm = rng.permutation(d_t)
        sg = rng.choice([-1.0, 1.0], d_t)
        shuffled = [(_align_gram(q, perm, sg), _align_gram(k, perm, sg)) for q, k in gt]
        null.append(_score_layers(aligned, shuffled, pairs)[1])
    trustworthy = len(ids_a) >= max(MIN_TRUSTED_TOKENS, d_t)
    if not trustworthy:
        notes.append(f"only {len(ids_a)} shared tokens for width {d_t}: too few to call a pair independent")
    layers = [LayerScore(j, i, q, k) if swap else LayerScore(i, j, q, k) for i, j, q, k in rows]
    return build_result(
        "awm", score, null, background=weight_background(d_t), bytes_read={"a": a.bytes_read, "b": b.bytes_read},
        seconds=time.perf_counter() - t0, shared=len(ids_a), alignment="signed-lap", width=d_t,
        trustworthy=trustworthy, quality=sp.quality, chance=chance, layers=layers, reference="b" if swap else "a",
        notes=notes)
