"""Screening fingerprints: a small, alignment-free view of a model that ranks candidate bases cheaply.

A screen keeps, for ``n`` anchor tokens (the bottom-``n`` of the vocabulary by SHA-1, as the verification
fingerprint's anchors, so both tiers share tokens) and ``S`` layers at evenly spaced relative depths (as
many as a byte budget allows), the token-by-token Grams

    G^E = Ê Êᵀ,   G_ℓ^Q = Ê K_ℓ^Q Êᵀ,   G_ℓ^K = Ê K_ℓ^K Êᵀ,

with ``Ê`` the anchors' embedding rows scaled to unit norm (the input norm divides by the row's RMS
anyway) and ``K_ℓ = Σ_b W̃_bᵀ W̃_b / ‖W̃_b W̃_bᵀ‖_F`` the layer's pair-normalized input Gram of the projection
folded by its input norm's gain: the very matrix the verification tier compares, seen from the token side.
Invariances, each exact:

* residual rotation or permutation ``R`` (with norm folding): ``Ê → Ê R``, ``K_ℓ → Rᵀ K_ℓ R``, so
  ``Ê K_ℓ Êᵀ`` is unchanged, and no alignment is needed to compare two screens;
* per-head and per-RoPE-pair Q↔K scaling (and rotations inside a pair): ``K_ℓ`` is unchanged
  (:mod:`fingerprint.grams`); head permutations only reorder the sum.

Two screens compare by unbiased linear CKA of their U-centred Grams on the anchors they share
(:func:`compare`): per suspect layer the best base layer within a quarter of the depth, averaged over
layers and over Q and K. A derivative keeps its parent's Grams up to its drift (fine-tunes score ≈ 1);
independent models share only what similar text teaches the token geometry, so the screen *ranks*
candidates and never decides alone (``docs/method/verdict.md``, "Two tiers").

Cost at a 7B shape (d = 4096, 32 layers, GQA 8), 256 anchors: the anchor rows (2 MB) and Q/K of six
layers (240 MB, 1.7% of the checkpoint) read; one ``rows × d × n`` product per projection; stored as
strict upper triangles in float16, ``(2S + 1) · n(n−1)/2 · 2`` bytes (0.85 MB).

File: a safetensors container like the verification fingerprint (``lineage-screen``, its own version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fingerprint import device
from fingerprint.anchors import bottom_k, token_hash
from fingerprint.canonical import CanonicalModel
from fingerprint.errors import FingerprintFileError
from fingerprint.grams import pair_scales, row_blocks
from fingerprint.io.safetensors import container_bytes, read_container, write_atomic
from fingerprint.io.source import ByteSource, LocalFileSource
from fingerprint.sketch import Sketch

FORMAT = "lineage-screen"
VERSION = 1
SCREEN_ANCHORS = 256
BYTE_SHARE = 0.018
"""Share of a checkpoint's weight bytes a screen may read (the target is ≤ 2%; the rest is headroom)."""
MIN_BUDGET = 8 * 1024**2
"""A floor so a small model's screen still sees several layers (a 135M model's 2% is a few megabytes)."""
MIN_LAYERS = 2
DEPTH_WINDOW = 0.25
MAX_FILE_BYTES = 64 * 1024**2


@dataclass
class Screen:
    """A model's screening fingerprint (module docstring): anchor keys, relative depths of the sampled
    layers and the Grams ``(1 + 2S, n, n)``: embedding, then Q and K of each sampled layer."""

    meta: dict[str, Any]
    keys: list[str]
    depths: np.ndarray
    grams: np.ndarray
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}


def _elements(info: Any) -> int:
    return int(np.prod(info.shape, dtype=np.int64))


def layer_plan(m: CanonicalModel, budget: int | None = None) -> list[int]:
    """Which layers a screen reads: ``S`` evenly spaced over the depth (first and last included), the
    largest ``S`` whose Q/K fit ``max(BYTE_SHARE · total, MIN_BUDGET)`` (never fewer than ``MIN_LAYERS``),
    so the bytes read stay a fixed share of the checkpoint at every size. Sizes are counted at 16 bits per
    parameter whatever the file's dtype: a quantized or float32 copy plans the same layers as its bf16
    original, so their screens compare layer for layer."""
    s = m.spec
    if budget is None:
        total = 2 * sum(_elements(i) for i in m.reader.tensors.values())
        budget = max(int(BYTE_SHARE * total), MIN_BUDGET)
    per_layer = 2 * sum(_elements(t) for t in m.qk_tensors(0))
    n = int(np.clip(budget // max(per_layer, 1), MIN_LAYERS, s.num_layers))
    if n >= s.num_layers:
        return list(range(s.num_layers))
    return sorted({round(i * (s.num_layers - 1) / (n - 1)) for i in range(n)})


def _projected_gram(w: np.ndarray, blocks: np.ndarray, head_dim: int, e_hat: np.ndarray) -> np.ndarray:
    """``Ê K Êᵀ`` with ``K`` the pair-normalized input Gram of ``w``: ``P = diag(s) W Êᵀ``, then ``Pᵀ P``."""
    s = pair_scales(w, blocks, head_dim)
    if not device.is_cpu():  # LINEAGE_DEVICE: a GPU worker projects on its GPU
        import torch

        dev = device.current()
        pt = (torch.from_numpy(np.ascontiguousarray(w)).to(dev) @ torch.from_numpy(e_hat.T.copy()).to(dev)) \
            * torch.from_numpy(s.astype(np.float32)).to(dev)[:, None]
        gt: np.ndarray = (pt.T.double() @ pt.double()).cpu().numpy()
        return gt
    p = (w @ e_hat.T) * s[:, None].astype(np.float32)  # rows × n, float32 (one BLAS product)
    g: np.ndarray = p.T.astype(np.float64) @ p.astype(np.float64)
    return g


def screen_model(m: CanonicalModel, n_anchors: int = SCREEN_ANCHORS, budget: int | None = None,
                 source: str | None = None, revision: str | None = None) -> Screen:
    """Read the anchors' embedding rows and the planned layers' Q/K of ``m``; compute the screen Grams."""
    s = m.spec
    vocab = m.vocab()
    keys = bottom_k(list(vocab.keys), n_anchors)
    e = m.embed_rows([vocab.keys[k] for k in keys]).astype(np.float32)
    norms = np.linalg.norm(e, axis=1)
    e_hat = e / np.where(norms > 0, norms, 1.0)[:, None]
    qb = row_blocks(s.num_heads, s.head_dim, s.rotary_dim, s.rope_style)
    kb = row_blocks(s.num_kv_heads, s.head_dim, s.rotary_dim, s.rope_style)
    layers = layer_plan(m, budget)
    grams = [e_hat.astype(np.float64) @ e_hat.T.astype(np.float64)]
    for layer in layers:
        wq, wk = m.attention(layer, fold=True)
        grams.append(_projected_gram(wq, qb, s.head_dim, e_hat))
        grams.append(_projected_gram(wk, kb, s.head_dim, e_hat))
    depths = np.array([layer / max(1, s.num_layers - 1) for layer in layers], dtype=np.float32)
    meta = {"format": FORMAT, "version": VERSION, "architecture": s.architecture, "num_layers": s.num_layers,
            "hidden_size": s.hidden_size, "layers": layers, "vocab_size": vocab.size, "vocab_digest": vocab.digest(),
            "source": source or m.repo.name, "revision": revision, "bytes_read": m.bytes_read,
            "total_bytes": m.total_bytes}
    return Screen(meta, keys, depths, _stored(np.stack(grams)))


# -- comparison ---------------------------------------------------------------------------------

def u_center(g: np.ndarray) -> np.ndarray:
    """U-centring (Song et al. 2012) of a stack of Grams ``(..., n, n)``: diagonal zeroed,
    ``m = K̃ 1 / (n − 2)``, ``m ← m − Σm / (2(n − 1))``, ``K_c = K̃ − m 1ᵀ − 1 mᵀ``, diagonal zeroed again;
    ``⟨K_c, L_c⟩`` is then proportional to the unbiased HSIC."""
    n = g.shape[-1]
    k: np.ndarray = np.array(g, dtype=np.float64)
    idx = np.arange(n)
    k[..., idx, idx] = 0.0
    m = k.sum(axis=-1) / (n - 2)
    m = m - m.sum(axis=-1, keepdims=True) / (2 * (n - 1))
    k = k - m[..., :, None] - m[..., None, :]
    k[..., idx, idx] = 0.0
    return k


def _cka(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unbiased CKA of every pair of U-centred Grams in two stacks: ``(len a, len b)``."""
    fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
    na, nb = np.sqrt((fa * fa).sum(axis=1)), np.sqrt((fb * fb).sum(axis=1))
    den = np.outer(na, nb)
    out: np.ndarray = np.where(den > 1e-30, (fa @ fb.T) / np.where(den > 1e-30, den, 1.0), 0.0)
    return out


@dataclass(frozen=True)
class ScreenScore:
    """How two screens agree: ``score`` (the mean layer CKA, what ranks), the embedding Grams' CKA, the
    per-layer values and the number of shared anchors (``< 16`` shared: no comparison, score 0)."""

    score: float
    embed: float
    layers: tuple[float, ...]
    shared: int


def compare(base: Screen, suspect: Screen) -> ScreenScore:
    """Agreement of a suspect's screen with a candidate base's (module docstring): for each suspect layer
    the base layer within :data:`DEPTH_WINDOW` of its relative depth with the highest ``(CKA_Q + CKA_K)/2``
    (depth pruning and layer duplication move layers), averaged over the suspect's layers."""
    shared = sorted(set(base.keys) & set(suspect.keys))
    if len(shared) < 16:
        return ScreenScore(0.0, 0.0, (), len(shared))
    ia = np.array([base.index[k] for k in shared])
    ib = np.array([suspect.index[k] for k in shared])
    ga = u_center(base.grams[:, ia][:, :, ia].astype(np.float64))
    gb = u_center(suspect.grams[:, ib][:, :, ib].astype(np.float64))
    embed = float(_cka(ga[:1], gb[:1])[0, 0])
    cq = _cka(ga[1::2], gb[1::2])  # base layers × suspect layers
    ck = _cka(ga[2::2], gb[2::2])
    both = (cq + ck) / 2
    near = np.abs(base.depths[:, None] - suspect.depths[None, :]) <= DEPTH_WINDOW + 1e-6
    per = np.where(near, both, -np.inf).max(axis=0)
    per = np.where(np.isfinite(per), per, 0.0)
    return ScreenScore(float(per.mean()), embed, tuple(round(float(x), 4) for x in per), len(shared))


# -- file format --------------------------------------------------------------------------------

def _tri(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def _quantize(grams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored form of a stack of Grams: each strict upper triangle (U-centring zeroes the diagonal, so
    it is never kept) scaled to its largest magnitude and rounded to float16, with that scale as float32."""
    iu, ju = _tri(grams.shape[-1])
    tri = grams[:, iu, ju]
    scales = (np.abs(tri).max(axis=1) if tri.shape[1] else np.ones(len(tri))).astype(np.float32)
    scales = np.where(scales > 0, scales, np.float32(1.0))
    return (tri / scales[:, None].astype(np.float64)).astype(np.float16), scales


def _dequantize(tri: np.ndarray, scales: np.ndarray, n: int) -> np.ndarray:
    """Symmetric ``(len, n, n)`` Grams (zero diagonal) from their stored triangles and scales."""
    out = np.zeros((len(tri), n, n))
    iu, ju = _tri(n)
    vals = tri.astype(np.float64) * scales.astype(np.float64)[:, None]
    out[:, iu, ju] = vals
    out[:, ju, iu] = vals
    return out


def _stored(grams: np.ndarray) -> np.ndarray:
    """Grams at stored precision (:func:`_quantize`), so a screen in memory and read back agree."""
    return _dequantize(*_quantize(grams), grams.shape[-1])


def to_bytes(sc: Screen) -> bytes:
    """Deterministic bytes (sorted keys, float16 triangles with one float32 scale per Gram)."""
    tri, scales = _quantize(sc.grams)
    tensors: dict[str, np.ndarray] = {"grams": tri, "scales": scales, "depths": sc.depths.astype(np.float32)}
    doc = {**sc.meta, "keys": sc.keys}
    return container_bytes(tensors, {"lineage.screen": json.dumps(doc, sort_keys=True, ensure_ascii=True)})


def save(sc: Screen, path: str | Path) -> Path:
    return write_atomic(path, to_bytes(sc))


def load(path: str | Path) -> Screen:
    """Read and validate a screen file.

    Raises:
        FingerprintFileError: not a screen, wrong version, truncated or inconsistent shapes.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise FingerprintFileError(str(p), str(e)) from e
    if size > MAX_FILE_BYTES:
        raise FingerprintFileError(str(p), f"{size} bytes is larger than the {MAX_FILE_BYTES}-byte limit")
    return read_screen(LocalFileSource(p), str(p))


def read_screen(src: ByteSource, where: str) -> Screen:
    """Parse a screen from any byte source (bounded parser, every shape checked against the metadata)."""
    doc, arr, _ = read_container(src, where, "lineage.screen", FORMAT, VERSION, "lineage screen", "screen",
                                 "is this a screen file?")

    keys = doc.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise FingerprintFileError(where, "anchor keys must be distinct strings")
    tri, scales, depths = arr("grams"), arr("scales"), arr("depths")
    n = len(keys)
    if tri.ndim != 2 or tri.shape != (1 + 2 * len(depths), n * (n - 1) // 2) or scales.shape != (len(tri),):
        raise FingerprintFileError(where, f"Grams {tri.shape} do not match {n} anchors and {len(depths)} layers")
    if not (np.isfinite(tri).all() and np.isfinite(scales).all()) or ((depths < 0) | (depths > 1)).any():
        raise FingerprintFileError(where, "non-finite Grams or depths outside [0, 1]")
    grams = _dequantize(tri, scales, n)
    meta = {k: v for k, v in doc.items() if k != "keys"}
    return Screen(meta, keys, depths.astype(np.float32), grams)


# -- the index's screen row ------------------------------------------------------------------------

VECTOR_VERSION = 2
"""What an index screen row holds: 2 = feature-hashed anchor Grams (:func:`sketch_vector`); 1 was the Q/K
spectra in depth bins, which a magnitude-pruned derivative no longer matched (its parent ranked 142nd and
1002nd of 1,006 on the tiny zoo)."""
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (wrapping arithmetic): a fixed, well-spread 64-bit hash."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def hashed_grams(keys: list[str], grams: list[np.ndarray], dim: int) -> np.ndarray:
    """Feature hashing of token-pair Grams: ``v[h_c(a,b)] += σ_c(a,b) · Ĝ_c[a,b]`` over components ``c`` and
    token pairs ``a < b``, with ``Ĝ_c`` the U-centred Gram scaled to unit Frobenius norm on its strict upper
    triangle and ``(h, σ)`` a bucket and sign hashed from the two tokens' strings and ``c``; ``v / ‖v‖``.

    Two models' vectors then have ``⟨v_A, v_B⟩ ≈ Σ_c Σ_{shared pairs} Ĝ_c^A Ĝ_c^B / ‖·‖``, the mean of their
    components' CKAs on the tokens they share, plus hashing noise of standard deviation ≈ ``1/√dim`` (Weinberger
    et al. 2009): a few hundred dimensions rank a parent (CKA ≥ 0.7) above a million unrelated rows (≤ 0.3 + 5σ).
    """
    n = len(keys)
    v = np.zeros(dim, dtype=np.float64)
    if n < 4:
        return v.astype(np.float32)
    h = np.array([int.from_bytes(token_hash(k)[:8], "little") for k in keys], dtype=np.uint64)
    iu, ju = _tri(n)
    lo, hi = np.minimum(h[iu], h[ju]), np.maximum(h[iu], h[ju])  # the pair, whatever the anchors' order
    with np.errstate(over="ignore"):
        pair = _mix(lo * np.uint64(0x9E3779B97F4A7C15) ^ _mix(hi))
    for c, g in enumerate(grams):
        x = u_center(g[None])[0][iu, ju]
        norm = float(np.linalg.norm(x))
        if norm < 1e-30:
            continue
        with np.errstate(over="ignore"):
            hc = _mix(pair + np.uint64(c + 1) * np.uint64(0xD6E8FEB86659FD93))
        sign = np.where((hc >> np.uint64(63)) == 1, -1.0, 1.0)
        v += np.bincount((hc % np.uint64(dim)).astype(np.int64), weights=sign * x / norm, minlength=dim)
    nv = float(np.linalg.norm(v))
    return (v / nv if nv > 0 else v).astype(np.float32)


def sketch_vector(sk: Sketch, dim: int, n_anchors: int = SCREEN_ANCHORS) -> np.ndarray:
    """The index's screen row of a verification fingerprint: :func:`hashed_grams` of three Grams on its
    bottom-``n_anchors`` anchors (the screen's tokens): the embedding's ``Ê Êᵀ`` and the means over layers of
    the U-centred, unit-norm ``Ê F Fᵀ Êᵀ`` for Q and for K (``F`` the stored factors). Means over layers keep a
    depth-pruned or depth-grown derivative on its parent's row."""
    keys = bottom_k(list(sk.keys), n_anchors)
    rows = np.array([sk.index[k] for k in keys], dtype=np.int64)
    e = sk.embed[rows]
    norms = np.linalg.norm(e, axis=1)
    e_hat = e / np.where(norms > 0, norms, 1.0)[:, None]

    def mean_gram(factors: list[np.ndarray]) -> np.ndarray:
        acc = np.zeros((len(keys), len(keys)))
        for f in factors:
            a = e_hat @ f
            g = u_center((a @ a.T)[None])[0]
            acc += g / (float(np.linalg.norm(g)) or 1.0)
        return acc

    return hashed_grams(keys, [e_hat @ e_hat.T, mean_gram(sk.q), mean_gram(sk.k)], dim)
