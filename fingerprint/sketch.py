"""Compact per-model fingerprints ("sketches") and their versioned file format.

A sketch holds exactly what the ``lineage`` method needs, so two sketches compare like two checkpoints:

* **anchors**: normalized token strings and their embedding rows (and folded lm_head rows for untied
  models: a second view of the residual basis for the Procrustes fallback). Compact sketches keep the
  ``n_anchors`` tokens with the smallest SHA-1 of their string (a bottom-k sketch), so two models with the
  same vocabulary keep the same tokens and overlapping vocabularies keep overlapping anchors. Rows are
  stored int8 with one fp16 scale per token (row).
* **per layer, Q and K**: the pair-normalized input Gram ``G = Fᵀ F``-factor ``F`` (``d × r``): exact when
  ``r`` is the number of rows, else the top-``r`` eigenpairs ``F = V_r Λ_r^{1/2}`` with the dropped
  (tail) share of ``tr G²`` recorded, stored int8 with one fp16 scale per column (eigen-component):
  half the bytes of fp16, and each component keeps its own relative precision.
* **prefilter**: the top-16 eigenvalues of every Q and K Gram, normalized to unit sum of squares
  (invariant to permutation, rotation and scale of the residual; the index's screen rows were made of
  them before :func:`fingerprint.screen.sketch_vector`).

File: a safetensors container (so it is read with the same bounded parser as checkpoints) whose
``__metadata__["lineage.fingerprint"]`` is a JSON document with the format version, the model's shapes,
tokenizer digest, source, revision and the exact bytes read to make it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fingerprint import device
from fingerprint.anchors import DEFAULT_ANCHORS, bottom_k
from fingerprint.canonical import CanonicalModel, open_model
from fingerprint.errors import FingerprintFileError
from fingerprint.grams import pair_scales, row_blocks
from fingerprint.io.safetensors import container_bytes, read_container, write_atomic
from fingerprint.io.source import ByteSource, LocalFileSource

FORMAT = "lineage-fingerprint"
VERSION = 2  # 2: int8 layer factors with per-column scales (1: fp16)
PREFILTER_K = 16
MIN_RANK = 64
FACTOR_BUDGET = 2**24
"""Bytes of int8 Q and K factors per model the default rank aims at (16 MiB): rank 64 at LLaMA-2-7B's shape."""
MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class Sketch:
    """What the lineage method needs of one model (see module docstring)."""

    meta: dict[str, Any]
    keys: list[str]
    embed: np.ndarray
    lm_head: np.ndarray | None
    q: list[np.ndarray]
    k: list[np.ndarray]
    tails: list[tuple[float, float]]
    prefilter: np.ndarray
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}

    @property
    def width(self) -> int:
        return int(self.embed.shape[1])

    @property
    def num_layers(self) -> int:
        return len(self.q)


def pair_factor(w: np.ndarray, blocks: np.ndarray) -> torch.Tensor:
    """``F`` with ``F Fᵀ`` = the pair-normalized Gram of ``w`` (``d × rows``, float64): ``(diag(s) W)ᵀ``."""
    dev = device.current()  # LINEAGE_DEVICE: a GPU worker sketches on its GPU
    t = torch.from_numpy(np.ascontiguousarray(w)).to(device=dev, dtype=torch.float64)
    idx = torch.from_numpy(blocks).to(dev)
    rows = t @ t.T
    same = idx[:, None] == idx[None, :]
    contrib = torch.where(same, rows**2, torch.zeros((), dtype=torch.float64, device=dev)).sum(dim=1)
    norms2 = torch.zeros(int(blocks.max()) + 1, dtype=torch.float64, device=dev).index_add_(0, idx, contrib)
    s = norms2.clamp_min(1e-300).pow(-0.25)[idx]
    return (t * s[:, None]).T.contiguous()


def truncate(f: torch.Tensor, rank: int | None) -> tuple[torch.Tensor, float, np.ndarray]:
    """Top-``rank`` eigen-factor of ``F Fᵀ`` (exact if ``rank`` is None or ≥ the columns), the tail share of
    ``‖F Fᵀ‖_F²`` it drops, and the top eigenvalues normalized for the prefilter."""
    # Eigenvalues of F Fᵀ are the squared singular values of F; the small side is cheaper.
    gram_small = f.T @ f
    evals, evecs = torch.linalg.eigh(gram_small)
    evals = evals.flip(0).clamp_min(0.0)
    evecs = evecs.flip(1)
    e2 = evals**2
    total = float(e2.sum()) or 1.0
    top = evals[:PREFILTER_K].cpu().numpy()
    top = np.pad(top, (0, PREFILTER_K - len(top)))
    # Rounded so the last bits of an eigensolver (which differ across BLAS builds) never reach the file.
    pre = np.round(top / (np.linalg.norm(top) or 1.0), 4)
    if rank is None or rank >= f.shape[1]:
        return f, 0.0, pre
    u = f @ evecs[:, :rank]  # = V_r Λ_r^{1/2} up to signs
    return u, float(e2[rank:].sum()) / total, pre


RANDOMIZED_OVERSAMPLE = 32
"""Extra columns of the randomized range finder beyond the kept rank (Halko, Martinsson & Tropp 2011, §4)."""
POWER_ITERATIONS = 4
"""Subspace iterations: the error in the top-``r`` components falls as ``(λ_{r+p}/λ_r)^{2q+1}``."""


def use_randomized(rows: int, rank: int | None) -> bool:
    """A factor is truncated by randomized subspace iteration when far fewer components are kept than the
    projection has rows (``r + p ≤ rows/2``: a 7B's Q at rank 64 of 4096); else exactly, in float64."""
    return rank is not None and rank + RANDOMIZED_OVERSAMPLE <= rows // 2


def randomized_factor(w: np.ndarray, blocks: np.ndarray, head_dim: int, rank: int,
                      seed: int = 0) -> tuple[torch.Tensor, float, np.ndarray]:
    """Top-``rank`` factor of the pair-normalized Gram ``G = W̃ᵀ W̃`` (``W̃ = diag(s) W``) without forming it.

    Randomized subspace iteration in float32 on the thin side: ``Y₀ = W̃ Ω`` with ``Ω`` a seeded Gaussian
    ``d × (r + p)``, then ``q`` times ``Y ← W̃ W̃ᵀ Y`` (re-orthonormalized), and Rayleigh–Ritz on the
    ``(r+p) × (r+p)`` matrix ``Bᵀ B`` with ``B = W̃ᵀ Q``: ``Bᵀ B = V Σ² Vᵀ`` gives ``F = B V_r`` with
    ``F Fᵀ`` ≈ the best rank-``r`` part of ``G`` (eigenvalues ``λ_i = Σ_ii²``). Cost ``≈ 2(2q+1)·rows·d·(r+p)``
    flops instead of ``rows²·d`` for the row Gram plus an eigendecomposition of it (a 7B's Q: ~6 GFLOP for
    ~600). The dropped tail share of ``‖G‖_F²`` is bounded without the full spectrum:
    ``Σ_{i>r} λ_i² ≤ λ_{r+1} · (tr G − Σ_{i≤r} λ_i)`` with ``tr G = ‖W̃‖_F²`` exact, and that bound is recorded.
    """
    s = pair_scales(w, blocks, head_dim)
    dev = device.current()
    ws = torch.from_numpy(np.ascontiguousarray((w * s[:, None]).astype(np.float32))).to(dev)  # rows × d
    k = min(rank + RANDOMIZED_OVERSAMPLE, ws.shape[0])
    g = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same Ω on every device
    y = ws @ torch.randn(ws.shape[1], k, generator=g, dtype=torch.float32).to(dev)
    for _ in range(POWER_ITERATIONS):
        q, _ = torch.linalg.qr(y)
        y = ws @ (ws.T @ q)
    q, _ = torch.linalg.qr(y)
    b = (ws.T @ q).to(torch.float64)  # d × k, B Bᵀ = projected G
    evals, evecs = torch.linalg.eigh(b.T @ b)
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
    u = b @ evecs[:, :rank]
    trace = float((ws.to(torch.float64) ** 2).sum())
    kept = float(evals[:rank].sum())
    e2 = evals**2
    nxt = float(evals[rank]) if k > rank else 0.0
    tail_bound = nxt * max(0.0, trace - kept)
    total = float(e2[:rank].sum()) + tail_bound
    top = evals[:PREFILTER_K].cpu().numpy()
    top = np.pad(top, (0, PREFILTER_K - len(top)))
    pre = np.round(top / (np.linalg.norm(top) or 1.0), 4)
    return u.cpu(), tail_bound / (total or 1.0), pre


def layer_factor(w: np.ndarray, blocks: np.ndarray, head_dim: int,
                 rank: int | None) -> tuple[torch.Tensor, float, np.ndarray]:
    """One projection's stored factor: :func:`randomized_factor` when :func:`use_randomized`, else the exact
    float64 eigen-factor (the zoos and every model whose rank keeps most of the rows: unchanged files)."""
    if use_randomized(w.shape[0], rank):
        assert rank is not None
        return randomized_factor(w, blocks, head_dim, rank)
    return truncate(pair_factor(w, blocks), rank)


def auto_rank(hidden_size: int, num_layers: int) -> int:
    """The default factor rank: ``r = max(64, ⌊B / (2·L·d)⌋)`` with ``B`` = :data:`FACTOR_BUDGET` bytes.

    Truncation error is what costs agreement with the full checkpoints (measured on the small zoo at d=256:
    rank 64 keeps a quarter of the Q/K rows and moves scores by up to 0.026), and int8 factors cost
    ``L·2·d·r`` bytes, so every model gets as many components as the budget allows: factors are exact
    (``r ≥ d``) while ``L·d² ≤ 2²³`` (the zoos; d=512 with 32 layers), SmolLM2-135M keeps 485 of 576,
    Llama-3.2-1B 256 of 2048, LLaMA-2-7B 64, and 64 is the floor for wider models.
    """
    return max(MIN_RANK, FACTOR_BUDGET // max(1, 2 * num_layers * hidden_size))


def sketch_model(m: CanonicalModel, rank: int | Literal["auto"] | None = "auto", n_anchors: int | None = DEFAULT_ANCHORS,
                 source: str | None = None, revision: str | None = None, keys: list[str] | None = None,
                 stored_precision: bool = True) -> Sketch:
    """Read a model once and keep what the lineage method needs.

    ``rank="auto"`` applies :func:`auto_rank`; ``rank=None`` keeps exact factors; ``keys`` fixes the anchor
    tokens, else the bottom-``n_anchors`` sketch of the vocabulary (all if None). ``stored_precision=False``
    keeps float64 rows and factors (a reference for the float32 pairwise path; not for files).
    """
    s = m.spec
    if rank == "auto":
        rank = auto_rank(s.hidden_size, s.num_layers)
    vocab = m.vocab()
    if keys is None:
        keys = bottom_k(list(vocab.keys), n_anchors) if n_anchors else sorted(vocab.keys)
    ids = [vocab.keys[k] for k in keys]
    embed = m.embed_rows(ids).astype(np.float64)
    head = m.lm_head_rows(ids)
    qb = row_blocks(s.num_heads, s.head_dim, s.rotary_dim, s.rope_style)
    kb = row_blocks(s.num_kv_heads, s.head_dim, s.rotary_dim, s.rope_style)
    qs, ks, tails, pre = [], [], [], []
    for layer in range(s.num_layers):
        wq, wk = m.attention(layer, fold=True)
        fq, tq, pq = layer_factor(wq, qb, s.head_dim, rank)
        fk, tk, pk = layer_factor(wk, kb, s.head_dim, rank)
        qs.append(fq.cpu().numpy())
        ks.append(fk.cpu().numpy())
        tails.append((tq, tk))
        pre.append(np.stack([pq, pk]))
    # Stored precision is applied here, not only in the file, so a sketch in memory and the same sketch
    # read back from disk score identically.
    if stored_precision:
        embed = _dq8(embed)
        head = None if head is None else _dq8(head.astype(np.float64))
        qs = [_dq8(q.T).T for q in qs]
        ks = [_dq8(k.T).T for k in ks]
    elif head is not None:
        head = head.astype(np.float64)
    meta = {"format": FORMAT, "version": VERSION, "architecture": s.architecture, "num_layers": s.num_layers,
            "hidden_size": s.hidden_size, "num_heads": s.num_heads, "num_kv_heads": s.num_kv_heads,
            "head_dim": s.head_dim, "vocab_size": vocab.size, "vocab_digest": vocab.digest(), "anchors": len(keys),
            "rank": max(f.shape[1] for f in qs + ks), "tied": head is None, "source": source or m.repo.name, "revision": revision,
            "bytes_read": m.bytes_read, "total_bytes": m.total_bytes}
    return Sketch(meta, keys, embed, head, qs, ks, tails, np.stack(pre).astype(np.float32))


# -- file format --------------------------------------------------------------------------------

def _q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 with one fp16 scale per row (token): a token's stored row does not depend on which other
    tokens are anchors, so a compact sketch and the pairwise path quantize shared tokens identically."""
    scale = np.abs(x).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float16)
    q = np.clip(np.rint(x / scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _dq8(x: np.ndarray) -> np.ndarray:
    q, scale = _q8(x)
    return q.astype(np.float64) * scale.astype(np.float64)[:, None]


def to_bytes(sk: Sketch) -> bytes:
    """Serialize deterministically (sorted keys, fixed dtypes, no timestamps): same model → same bytes."""
    tensors: dict[str, np.ndarray] = {}
    tensors["embed.q8"], tensors["embed.scale"] = _q8(sk.embed)
    if sk.lm_head is not None:
        tensors["lm_head.q8"], tensors["lm_head.scale"] = _q8(sk.lm_head)
    for i, (fq, fk) in enumerate(zip(sk.q, sk.k)):
        tensors[f"layers.{i}.q.q8"], tensors[f"layers.{i}.q.scale"] = _q8(fq.T)
        tensors[f"layers.{i}.k.q8"], tensors[f"layers.{i}.k.scale"] = _q8(fk.T)
    tensors["prefilter"] = sk.prefilter.astype(np.float32)
    doc = {**sk.meta, "keys": sk.keys, "tails": [[round(a, 8), round(b, 8)] for a, b in sk.tails]}
    return container_bytes(tensors, {"lineage.fingerprint": json.dumps(doc, sort_keys=True, ensure_ascii=True)})


def save(sk: Sketch, path: str | Path) -> Path:
    return write_atomic(path, to_bytes(sk))


def load(path: str | Path) -> Sketch:
    """Read and validate a fingerprint file (bounded parser; shapes checked against the metadata).

    Raises:
        FingerprintFileError: wrong format or version, truncated, or inconsistent shapes.
    """
    p = Path(path)
    where = str(p)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise FingerprintFileError(where, str(e)) from e
    if size > MAX_FILE_BYTES:
        raise FingerprintFileError(where, f"{size} bytes is larger than the {MAX_FILE_BYTES}-byte limit")
    return read_sketch(LocalFileSource(p), where)


def read_sketch(src: ByteSource, where: str) -> Sketch:
    """Parse and validate a fingerprint from any byte source (:func:`load` for a file).

    Raises:
        FingerprintFileError: as :func:`load`.
    """
    if src.size > MAX_FILE_BYTES:
        raise FingerprintFileError(where, f"{src.size} bytes is larger than the {MAX_FILE_BYTES}-byte limit")
    doc, arr, infos = read_container(src, where, "lineage.fingerprint", FORMAT, VERSION, "lineage fingerprint",
                                     "format", "is this a checkpoint?")

    def factor(name: str) -> np.ndarray:
        q8, scale = arr(f"{name}.q8"), arr(f"{name}.scale")
        if q8.ndim != 2 or scale.shape != (q8.shape[0],) or q8.shape[1] != d:
            raise FingerprintFileError(where, f"{name}: factor {q8.shape} and scales {scale.shape} do not match width {d}")
        return np.asarray((q8 * scale[:, None]).T)

    try:
        d, n_layers, keys = int(doc["hidden_size"]), int(doc["num_layers"]), doc["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise FingerprintFileError(where, "anchor keys must be distinct strings")
        embed = arr("embed.q8") * arr("embed.scale")[:, None]
        head = arr("lm_head.q8") * arr("lm_head.scale")[:, None] if "lm_head.q8" in infos else None
        q = [factor(f"layers.{i}.q") for i in range(n_layers)]
        k = [factor(f"layers.{i}.k") for i in range(n_layers)]
        pre = arr("prefilter").astype(np.float32)
        tails = [(float(a), float(b)) for a, b in doc["tails"]]
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, FingerprintFileError):
            raise
        raise FingerprintFileError(where, f"inconsistent metadata: {e}") from e
    if embed.shape != (len(keys), d) or (head is not None and head.shape != embed.shape):
        raise FingerprintFileError(where, f"anchor rows {embed.shape} do not match {len(keys)} keys × width {d}")
    if any(f.ndim != 2 or f.shape[0] != d for f in q + k) or len(tails) != n_layers:
        raise FingerprintFileError(where, "layer factors do not match the width / layer count in the metadata")
    if pre.shape != (n_layers, 2, PREFILTER_K) or not np.isfinite(pre).all():
        raise FingerprintFileError(where, f"prefilter shape {pre.shape} does not match {n_layers} layers")
    if not all(np.isfinite(x).all() for x in [embed, *q, *k]):
        raise FingerprintFileError(where, "non-finite values")
    meta = {k2: v for k2, v in doc.items() if k2 not in ("keys", "tails")}
    return Sketch(meta, keys, embed, head, q, k, tails, pre)


def sketch_of(path: str | Path, rank: int | None = None, anchors: int | None = None) -> Sketch:
    """A fingerprint file (``.lfp``) is loaded; a model directory or ``.gguf`` is fingerprinted now
    (``rank`` and ``anchors`` as :func:`sketch_model`'s defaults when None)."""
    p = Path(path)
    if p.suffix == ".lfp":
        return load(p)
    return sketch_model(open_model(str(p)), rank=rank or "auto", n_anchors=anchors or DEFAULT_ANCHORS, source=p.name)


def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
