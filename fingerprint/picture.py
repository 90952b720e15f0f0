"""A picture of a model that a person can read: the same creature for a base and its derivatives.

**The vector** (from what a fingerprint file already holds: the anchor tokens' embedding rows).

1. Tokens: the ``T`` = :data:`TOKENS` anchors with the smallest SHA-1 of their normalized string, the
   same bottom-k rule the sketch uses, so models with one vocabulary use the same tokens and a vocabulary
   extension only adds a few.
2. ``Ê``: their embedding rows scaled to unit length, and the Gram ``G = Ê Êᵀ`` (``T × T``).
   ``G`` is unchanged by every map of the residual stream that preserves the function: permutations,
   signed permutations, any rotation ``E → E R`` (``R Rᵀ = I``), and whatever is folded into or out of
   the norm gains or the Q/K/V/MLP weights (those never touch ``E``). Per-token length is removed by step 2,
   so a global scale of ``E`` does not matter either.
3. **Common modes shrunk to the noise edge.** Models trained on similar text share a few strong directions
   (frequency, digits vs words); a random initialization is the isotropic bulk. With ``T`` rows in ``d``
   dimensions, a Marchenko–Pastur bulk of per-entry variance ``σ²`` ends at ``λ₊ = σ² (√T + √d)²``;
   ``σ²`` is estimated from the eigenvalues below the edge (iterated), and every eigenvalue of ``G``
   above ``λ₊`` is lowered to ``λ₊``: ``G' = U min(Λ, λ₊) Uᵀ``. What is left is mostly what the model's
   own random start and training put there, which fine-tuning keeps and independent training does not.
4. The off-diagonal entries ``g'_ij`` (``i < j``), z-scored, are count-sketched into :data:`DIM` buckets keyed
   by the two tokens' hashes: ``v_b = Σ_{h(i,j) = b} s(i,j) z_ij``, then ``v / ‖v‖``. Two models' ``cos(v, v')``
   estimates the correlation of their Grams over shared token pairs (error ``~ 1/√DIM``), and pairs of
   tokens one model lacks only dilute it.

**The picture.** ``z = R v`` with ``R`` a fixed ±1 matrix (``LATENT × DIM``, from a counter hash, not a
library RNG whose stream may change), so ``z`` is close to ``N(0, I)`` and ``corr(z, z') ≈ cos(v, v')``.
``z`` is rounded to 1/64 (so last-bit float differences between machines never reach a pixel), then
drives a mirror-symmetric creature: body outline (a cosine series in the angle), a banded interior
(a fixed sum of sinusoids whose phases come from ``z``), eyes, and a palette around a hue from ``z``.
Every feature is a smooth function of ``z``: a derivative (``cos ≥ 0.9``: each coordinate moves by
about ``√(2(1 − cos)) ≤ 0.45σ`` RMS) keeps hue, outline and pattern; an independent model (``cos ≈ 0``) draws a fresh ``z``.
Nothing a Hub user can set without changing weights (name, card, token ids) enters.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from fingerprint.anchors import token_hash
from fingerprint.errors import PictureError
from fingerprint.sketch import Sketch

TOKENS = 1024
DIM = 4096
LATENT = 32
MIN_TOKENS = 32
MAX_SIZE = 2048
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (wrapping arithmetic): a fixed, portable hash."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def shrink_spikes(g: np.ndarray, d: int) -> tuple[np.ndarray, int]:
    """``G' = U min(Λ, λ₊) Uᵀ`` for a ``T × T`` Gram of ``T`` rows in ``d`` dims (see module docstring);
    returns ``G'`` and how many eigenvalues were above the edge."""
    t = g.shape[0]
    lam, u = np.linalg.eigh(g)
    lam = np.clip(lam[::-1], 0.0, None)
    u = u[:, ::-1]
    m = min(t, d)
    k, edge = 0, float("inf")
    for _ in range(64):
        sigma2 = float(lam[k:m].sum()) / max(1, (m - k) * max(t, d))
        edge = sigma2 * (math.sqrt(t) + math.sqrt(d)) ** 2
        k2 = int((lam[:m] > edge).sum())
        if k2 == k or k2 >= m - 1:
            break
        k = k2
    return (u * np.minimum(lam, edge)) @ u.T, k


def picture_vector(sk: Sketch) -> np.ndarray:
    """The unit vector ``v`` (``DIM`` float64) behind a model's picture.

    Raises:
        PictureError: fewer than :data:`MIN_TOKENS` usable anchor rows.
    """
    hashes = [token_hash(k) for k in sk.keys]
    order = sorted(range(len(sk.keys)), key=hashes.__getitem__)
    rows = np.asarray(sk.embed, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1)
    order = [i for i in order if norms[i] > 0 and np.isfinite(norms[i])][:TOKENS]
    if len(order) < MIN_TOKENS:
        raise PictureError(f"a picture needs at least {MIN_TOKENS} anchor tokens with non-zero rows; this fingerprint has {len(order)}")
    e = rows[order] / norms[order][:, None]
    g, _ = shrink_spikes(e @ e.T, sk.width)
    iu, ju = np.triu_indices(len(order), 1)
    vals = g[iu, ju]
    vals = (vals - vals.mean()) / (vals.std() or 1.0)
    h = np.array([int.from_bytes(hashes[i][:8], "little") for i in order], dtype=np.uint64)
    m = _mix(h[iu] ^ h[ju])
    bucket = ((m >> np.uint64(32)) % np.uint64(DIM)).astype(np.int64)
    sign = np.where((m & np.uint64(1)) == 1, 1.0, -1.0)
    v = np.bincount(bucket, weights=sign * vals, minlength=DIM)
    return np.asarray(v / (np.linalg.norm(v) or 1.0))


def latent(v: np.ndarray) -> np.ndarray:
    """``z = R v`` (``LATENT`` values, each ≈ N(0, 1)), rounded to 1/64; ``R`` is ±1 from a counter hash."""
    idx = np.arange(LATENT * DIM, dtype=np.uint64).reshape(LATENT, DIM)
    r = np.where((_mix(idx ^ np.uint64(0x6C696E65616765)) >> np.uint64(63)) == 1, 1.0, -1.0)
    return np.asarray(np.round((r @ v) * 64.0) / 64.0)


# -- the creature ---------------------------------------------------------------------------------

_FREQS = (2.2, 3.1, 1.7, 2.6, 3.6, 1.3)  # cycles across the picture, one per sinusoid of the body pattern

def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return round(255 * r), round(255 * g), round(255 * b)


def _palette(z: np.ndarray) -> list[tuple[int, int, int]]:
    """0 background, 1 outline, 2–6 body bands, 7 eye white, 8 pupil."""
    # Φ(z): uniform on the colour wheel and continuous across its ends (0 and 1 are both red), with a
    # bounded slope (≤ 0.4 turn per σ); an angle atan2(z_a, z_b) would spin when (z_a, z_b) is near 0.
    hue = 0.5 * (1.0 + math.erf(z[20] / math.sqrt(2.0)))
    spread = 0.11 * math.tanh(z[22])  # which way round the hue wheel the bands step, and how far
    sat = 0.6 + 0.3 * math.tanh(z[23])
    accent = 0.5 + 0.25 * math.tanh(z[24])  # the contrasting band's hue offset
    # bands from light to dark or (z₃₁ < 0) dark to light, blended smoothly through flat
    light = [0.805 - 0.11 * (i - 1.5) * math.tanh(2.0 * z[31]) for i in range(4)]
    bands = [_hsv(hue + spread * i, sat, light[i]) for i in range(4)] + [_hsv(hue + accent, sat, 0.85)]
    return [_hsv(hue, 0.08, 0.98), _hsv(hue, 0.7, 0.22), *bands, (250, 250, 250), (25, 25, 35)]


def render(z: np.ndarray, size: int = 256) -> np.ndarray:
    """Palette indices (``size × size`` uint8) of the creature drawn from latent ``z``."""
    if not 16 <= size <= MAX_SIZE:
        raise PictureError(f"size {size} is outside 16..{MAX_SIZE}")
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(-c, c, indexing="ij")
    u = np.abs(x)  # mirror symmetry: a face-like, memorable shape
    cy = 0.04 * math.tanh(z[0])
    theta = np.arctan2(u, y - cy)
    rho = np.hypot(u, y - cy)
    outline = np.full_like(x, 0.64)
    for m in range(1, 7):
        outline = outline + 0.09 / m**0.6 * math.tanh(z[m]) * np.cos(m * theta)
    # ears or horns: a bump on each side of the crown, where and how big set by z
    crown = 0.45 + 0.35 * math.tanh(z[5])
    outline = outline + 0.14 * max(0.0, math.tanh(z[4])) * np.exp(-(((theta - crown) / 0.22) ** 2))
    outline = np.clip(outline, 0.3, 0.95)
    body = rho < outline
    edge = body & (rho > outline - 0.035)
    # interior: a fixed sum of oriented sinusoids; z sets their phases, the mix and the band count.
    field = np.zeros_like(x)
    for j in range(6):
        ang = math.pi * j / 6 + 0.35 * math.tanh(z[7 + j])
        freq = _FREQS[j]
        field += np.sin(freq * (u * math.cos(ang) + y * math.sin(ang)) * math.pi + math.pi * math.tanh(z[13 + j]))
    field += 1.5 * math.tanh(z[19]) * (rho / np.maximum(outline, 1e-9))
    field = np.tanh(field / 2.5)
    img = np.zeros((size, size), dtype=np.uint8)
    band = np.clip(((field + 1.0) / 2.0 * 5).astype(np.int64), 0, 4) + 2
    img[body] = band[body].astype(np.uint8)
    img[edge] = 1
    ex, ey = 0.2 + 0.07 * math.tanh(z[25]), 0.12 + 0.12 * math.tanh(z[26]) + cy
    er = 0.1 + 0.035 * math.tanh(z[27])
    eye = np.hypot(u - ex, y - ey)
    look = 0.35 * er * math.tanh(z[28]), 0.35 * er * math.tanh(z[29])
    pupil = np.hypot(u - ex - look[0] * np.sign(x + 1e-12), y - ey - look[1])
    inside = body & (eye < er)
    img[inside & (eye >= er - 0.02)] = 1
    img[inside & (eye < er - 0.02)] = 7
    img[inside & (pupil < er * (0.35 + 0.12 * math.tanh(z[30])))] = 8
    return img


def png(indices: np.ndarray, palette: list[tuple[int, int, int]]) -> bytes:
    """An 8-bit indexed PNG (no timestamps or text chunks, so the bytes depend only on the pixels)."""
    h, w = indices.shape
    raw = b"".join(b"\x00" + indices[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    plte = b"".join(bytes(c) for c in palette)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", plte) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def draw(z: np.ndarray, size: int = 256) -> bytes:
    """The PNG of latent ``z`` (from :func:`latent`)."""
    return png(render(z, size), _palette(z))


def picture_png(sk: Sketch, size: int = 256) -> bytes:
    """The model's picture as PNG bytes (deterministic: same weights, same bytes)."""
    return draw(latent(picture_vector(sk)), size)
