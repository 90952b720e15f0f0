"""What kind of derivative a child is of its parent, decided from the two models' weights alone.

Declared metadata (the card's ``base_model_relation``) is never an input here: it is shown beside the
result by the callers. The statistics, in order:

1. **Residual alignment** ``T`` (``d_p × d_c``): orthogonal Procrustes of the shared tokens' embedding
   rows, ``T = U Vᵀ`` where ``U Σ Vᵀ = E_pᵀ E_c``. Under the function-preserving residual transforms
   (``x_c = x_p T``) a reader (Q, K, V, up, gate) becomes ``W_c = W_p T`` and a writer (O, down)
   ``W_c = Tᵀ W_p``. ``T`` is reported as the identity, a signed permutation (``permuted``) or a dense
   rotation (``rotated``); for a width-pruned child it is the partial permutation of the kept dims.
2. **Per sampled layer and role**, the aligned difference ``Δ = W_c − A(W_p)`` and its relative size
   ``δ = ‖Δ‖_F / ‖A(W_p)‖_F``. Where the output side was transformed as well (heads permuted or
   Q↔K rescaled, MLP neurons permuted), the raw ``Δ`` is large while the role's *form* agrees; the forms
   are ``Σ_h W_{Q,h}ᵀ W_{K,g(h)}`` (logits), ``Σ_h W_{O,h} W_{V,g(h)}`` (value-output circuit),
   ``W_upᵀ W_up``, ``W_gateᵀ W_gate`` and ``W_down W_downᵀ``: each is invariant to every per-head and
   per-neuron transform the attacks use and maps to ``Tᵀ F T`` under ``T``. A role whose raw ``δ`` exceeds
   twice its form's is measured on its form (``δ_form / √2`` is its raw-equivalent size, the form being
   bilinear in two perturbed factors) and the transform is flagged.
3. **Storage noise** per element: rounding of each side's dtype (``σ² = u²·w²/3``, ``u`` the unit
   roundoff: 2⁻²⁴ float32, 2⁻¹¹ float16, 2⁻⁸ bfloat16) and, for a quantized child, the scheme's own
   rounding ``step²/12`` with ``step`` read from the child's block grid (see :func:`quant_steps`).
4. **Effective rank** of ``Δ``: the number of singular values of ``Δ Ω`` (``Ω`` an orthonormal random
   ``n × k`` projection, ``k = min(n, 512)``: rank is kept below ``k``) above the noise edge
   ``1.5 · σ_n · (√m + √k)`` (Marchenko–Pastur for i.i.d. noise of scale ``σ_n``).

The rules (first that holds), stated in ``docs/method/relations.md``: ``upcycled`` (dense → MoE);
``pruned`` (fewer layers, a narrower width, or ≥ 20 points more exact zeros); ``copy`` (≤ 1% of the
elements moved beyond two roundings of the coarser dtype, however stored; a form-measured matrix within 4×
the rounding noise); ``quantized`` (stored in a quantized scheme, or on a grid the
parent does not have, and ``rms(Δ / step) ≤ 0.6``: round-to-nearest gives ``1/√12 ≈ 0.29``, GPTQ's
error feedback a little more); ``vocab_changed`` (embedding rows differ, drift below the
continued-pretraining line); ``adapter_merged`` (every changed role's effective rank ≤ ¼ of its smaller
side, holding ≥ 90% of the above-noise energy); ``continued_pretraining`` (median ``δ ≥ 0.25``); else
``finetune``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np

from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.inspect import kind_of
from fingerprint.tokenizer import shared_tokens

RELATIONS = ("copy", "quantized", "finetune", "adapter_merged", "continued_pretraining", "pruned", "upcycled",
             "vocab_changed", "merge")
CPT_DRIFT = 0.25
"""Median raw-equivalent ``δ`` from which a full-rank update is ``continued_pretraining`` (a convention:
supervised and preference fine-tunes move weights by 10⁻³–10⁻¹ of their norm; see the method page)."""
QUANT_RMS = 0.6
"""``rms(Δ / step)`` up to which a quantized child is its parent's quantization (RTN: 0.29)."""
MAX_EMBED_ROWS = 4096
UNIT_ROUNDOFF = {"F64": 2.0**-53, "F32": 2.0**-24, "F16": 2.0**-11, "BF16": 2.0**-8, "gguf:F32": 2.0**-24,
                 "gguf:F16": 2.0**-11, "gguf:BF16": 2.0**-8}
# (elements per block along a row, levels) of block schemes; the step is read from each block's range.
BLOCK_SCHEMES: dict[str, tuple[int, int]] = {
    "gguf:Q8_0": (32, 255), "gguf:Q4_0": (32, 16), "gguf:Q4_1": (32, 16), "gguf:Q5_0": (32, 32),
    "gguf:Q5_1": (32, 32), "gguf:Q2_K": (16, 4), "gguf:Q3_K": (16, 8), "gguf:Q4_K": (32, 16),
    "gguf:Q5_K": (32, 32), "gguf:Q6_K": (16, 64), "gguf:Q8_K": (256, 255), "gptq:int4": (128, 16),
    "awq:int4": (128, 16),
}
FP8_MANTISSA = {"F8_E4M3": 3, "F8_E5M2": 2}
READERS = ("q", "k", "v", "up", "gate")
FORM_OF = {"q": "qk", "k": "qk", "v": "ov", "o": "ov", "up": "up", "gate": "gate", "down": "down"}


@dataclass
class RoleStats:
    """One role of one sampled layer: sizes of the aligned difference and its effective rank."""

    layer: int
    role: str
    delta: float
    """Raw-equivalent relative difference ``‖Δ‖/‖W_p‖`` (form-measured roles: ``δ_form/√2``)."""
    via: str
    """``raw``, ``form`` (the output side was transformed) or ``shape`` (the child's matrix is smaller)."""
    rank: int | None
    """Effective rank of ``Δ`` above the noise edge (raw roles only), of ``min(m, n)``."""
    size: int
    noise: float
    """Per-element rounding noise of the two dtypes, relative to ``rms(W_p)`` (quantization excluded)."""
    quant_rms: float | None = None
    """``rms(Δ / step)`` for a child stored in a quantized scheme."""
    zeros: float = 0.0
    """Share of exact zeros in the child's matrix minus the parent's."""
    dtype: str = "F32"
    """The child's storage dtype of this role."""
    rank_share: float | None = None
    """Share of the above-noise energy of ``Δ`` its ``rank`` top directions hold."""
    spectrum: list[float] | None = None
    """Top singular values of ``Δ`` in units of the noise edge (above 1: above the noise)."""
    beyond_rounding: float | None = None
    """Share of elements that moved more than two roundings of the coarser dtype (the weight and its folded norm
    gain), ``|Δ_i| > 2u·|w_i|``, plus a floor: ``2^-16·rms(W)`` of float32 arithmetic, or ``4u·rms(W)`` after
    an estimated dense rotation (raw roles): 0 for
    a copy (converted or not), most of the matrix for any trained change, whose steps are whole ulps."""


@dataclass
class Relation:
    """The typed relation of a child to a parent, with the statistics behind it."""

    relation: str
    detail: dict[str, Any]
    flags: list[str]
    rule: str
    drift: float
    """Median raw-equivalent ``δ`` over the sampled roles."""
    alignment: str
    roles: list[RoleStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "detail": self.detail, "flags": self.flags, "rule": self.rule,
                "drift": round(self.drift, 6), "alignment": self.alignment,
                "roles": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(r).items()}
                          for r in self.roles]}


def residual_alignment(parent: CanonicalModel, child: CanonicalModel) -> tuple[np.ndarray, str, int]:
    """``(T, kind, shared)``: Procrustes ``T`` from the shared tokens' embeddings (see module docstring).

    ``kind`` is ``identity``, ``permuted`` (a signed permutation) or ``rotated``.
    """
    ids_p, ids_c, _ = shared_tokens(parent.vocab(), child.vocab())
    if len(ids_p) < 2 * max(parent.spec.hidden_size, child.spec.hidden_size) // 4 or len(ids_p) < 16:
        raise ComparisonError(f"only {len(ids_p)} shared tokens: too few to align the residual bases")
    if len(ids_p) > MAX_EMBED_ROWS:  # an even sample: enough rows to fix a d × d rotation many times over
        pick = np.linspace(0, len(ids_p) - 1, MAX_EMBED_ROWS).astype(int)
        ids_p, ids_c = [ids_p[i] for i in pick], [ids_c[i] for i in pick]
    ep = parent.embed_rows(sorted(ids_p)).astype(np.float64)
    order_p = np.argsort(np.argsort(ids_p))
    ep = ep[order_p]
    ec = child.embed_rows(sorted(ids_c)).astype(np.float64)[np.argsort(np.argsort(ids_c))]
    u, _, vt = np.linalg.svd(ep.T @ ec, full_matrices=False)
    t = u @ vt
    dp, dc = t.shape
    if dp == dc and np.abs(t - np.eye(dp)).max() < 0.05:
        return np.eye(dp), "identity", len(ids_p)
    big = np.abs(t) > 0.9
    if big.sum() == dc and (big.sum(axis=0) == 1).all():
        signed = np.where(big, np.sign(t), 0.0)
        same = dp == dc and bool((signed == np.eye(dp)).all())  # a noisy identity (a long fine-tune)
        return signed, "identity" if same else "permuted", len(ids_p)
    return t, "rotated", len(ids_p)


_READS: WeakKeyDictionary[CanonicalModel, dict[tuple[Any, ...], Any]] = WeakKeyDictionary()
MAX_MEMO_BYTES = 512 * 1024**2
"""What one model's memo may hold: a 7B layer's seven matrices in float32 are ~1.6 GB, so past this the
oldest reads are dropped (read again if asked: correct, slower)."""


def _nbytes(v: Any) -> int:
    return sum(_nbytes(x) for x in v) if isinstance(v, tuple) else int(getattr(v, "nbytes", 0))


def _memo(m: CanonicalModel, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()`` once per model and key: typing reads each matrix for its difference, its form and the
    layer matching; over ranged HTTP reads every repeat is a round trip. Bounded by :data:`MAX_MEMO_BYTES`."""
    got = _READS.setdefault(m, {})
    if key not in got:
        value = make()
        size = _nbytes(value)
        while got and sum(_nbytes(v) for v in got.values()) + size > MAX_MEMO_BYTES:
            got.pop(next(iter(got)))
        if size <= MAX_MEMO_BYTES:
            got[key] = value
        return value
    return got[key]


def _form(role: str, m: CanonicalModel, layer: int) -> np.ndarray:
    out: np.ndarray = _memo(m, ("form", role, layer), lambda: _make_form(role, m, layer))
    return out


def _make_form(role: str, m: CanonicalModel, layer: int) -> np.ndarray:
    s = m.spec
    if role == "qk":
        q, k = _memo(m, ("attention", layer, True), lambda: m.attention(layer))
        group = s.num_heads // s.num_kv_heads
        kk = np.repeat(k.reshape(s.num_kv_heads, s.head_dim, -1), group, axis=0).reshape(q.shape)
        qk: np.ndarray = q.astype(np.float64).T @ kk.astype(np.float64)
        return qk
    if role == "ov":
        v, o = weight("v", m, layer), weight("o", m, layer)
        group = s.num_heads // s.num_kv_heads
        vv = np.repeat(v.reshape(s.num_kv_heads, -1, v.shape[1]), group, axis=0).reshape(o.shape[1], -1)
        return o.astype(np.float64) @ vv.astype(np.float64)
    w = weight(role, m, layer).astype(np.float64)
    return w @ w.T if role == "down" else w.T @ w


def weight(role: str, m: CanonicalModel, layer: int, fold: bool = True) -> np.ndarray:
    """A layer's matrix of ``role`` in canonical layout, input norm folded in unless ``fold`` is False."""
    out: np.ndarray = _memo(m, ("weight", role, layer, fold), lambda: _read_weight(role, m, layer, fold))
    return out


def _read_weight(role: str, m: CanonicalModel, layer: int, fold: bool) -> np.ndarray:
    if role in ("q", "k"):
        pair = _memo(m, ("attention", layer, fold), lambda: m.attention(layer, fold))
        return pair[0 if role == "q" else 1]  # type: ignore[no-any-return]
    if role == "v":
        return np.asarray(m.value(layer, fold), np.float32)
    if role == "o":
        return m.output(layer)
    gate, up, down = _memo(m, ("mlp", layer, fold), lambda: m.mlp(layer, fold))
    w: np.ndarray | None = {"gate": gate, "up": up, "down": down}[role]
    if w is None:
        raise KeyError(role)
    return w


def roles_of(m: CanonicalModel, layer: int) -> list[str]:
    out = ["q", "k"]
    if m.arch.mla is None:
        out += ["v", "o"]
    if m.has("up", layer) or m.has("gate_up", layer):
        out += ["up", "down"] + (["gate"] if m.has("gate", layer) or m.has("gate_up", layer) else [])
    return out


def quant_steps(child: np.ndarray, dtype: str) -> np.ndarray | None:
    """Per-element quantization step of a child stored as ``dtype``, read from its own grid.

    Block schemes: ``(max − min) / (levels − 1)`` over each block of a row (the levels the block spans);
    fp8 with ``p`` mantissa bits: ``0.75 · |w| · 2^-p`` (the step of a value ``q·s`` lies between
    ``|w|·2^-(p+1)`` and ``|w|·2^-p`` for any scale ``s``). ``None`` for an unquantized dtype.
    """
    if dtype in FP8_MANTISSA:
        # w = q·s with a block scale s the dequantized view hides: q in [2^e, 2^(e+1)) has step 2^(e−p), so
        # the step is between |w|·2^-(p+1) and |w|·2^-p whatever s is; take the middle, 0.75·|w|·2^-p
        return 0.75 * np.abs(child.astype(np.float64)) * 2.0 ** -FP8_MANTISSA[dtype]
    scheme = BLOCK_SCHEMES.get(dtype)
    if scheme is None:
        return None
    block, levels = scheme
    rows, cols = child.shape
    if dtype in ("gptq:int4", "awq:int4"):  # the group size is the checkpoint's: the largest whose blocks hold ≤ 16 values
        fits = [g for g in (128, 64, 32) if cols % g == 0 and _levels_fit(child, g, levels)]
        if not fits:
            return None  # act-order groups (g_idx) are not contiguous blocks of the dequantized rows
        block = fits[0]
    if cols % block:
        return None
    b = child.astype(np.float64).reshape(rows, cols // block, block)
    step = (b.max(axis=2) - b.min(axis=2)) / (levels - 1)
    return np.repeat(step, block, axis=1)


def _levels_fit(child: np.ndarray, block: int, levels: int) -> bool:
    """Whether ≥ 90% of the row blocks of ``block`` elements hold at most ``levels`` distinct values."""
    b = np.sort(child.reshape(child.shape[0], -1, block), axis=2)
    distinct = (np.diff(b, axis=2) > 0).sum(axis=2) + 1
    return bool((distinct <= levels).mean() >= 0.9)


def grid_steps(child: np.ndarray) -> tuple[np.ndarray, str] | None:
    """A float-stored child whose blocks sit on a coarse grid (a dequantized re-upload): the per-element
    step and the block size, else ``None``. Blocks of 32, 64, 128 or a whole row are tried; a grid is
    when ≥ 90% of blocks hold at most ¾ as many distinct values as elements (random floats hold all),
    and its step is the smallest gap between a block's sorted distinct values."""
    rows, cols = child.shape
    for block in (32, 64, 128, cols):
        if cols % block or block < 16:
            continue
        b = np.sort(child.astype(np.float64).reshape(rows, cols // block, block), axis=2)
        gaps = np.diff(b, axis=2)
        distinct = (gaps > 0).sum(axis=2) + 1
        nonzero = (b != 0).sum(axis=2) + 1  # a pruned block repeats 0, not a grid
        if (distinct <= 0.75 * nonzero).mean() < 0.9:
            continue
        step = np.where(gaps > 0, gaps, np.inf).min(axis=2)
        step = np.where(np.isfinite(step), step, 0.0)
        return np.repeat(step, block, axis=1), f"grid/{block}"
    return None


def effective_rank(delta: np.ndarray, sigma: float, seed: int = 0) -> tuple[int, float, list[float]]:
    """``(r, share)``: ``r`` singular values of ``Δ Ω`` above ``1.5 σ (√m + √k)`` (module docstring, step 4)
    and the share of the energy above the noise's own, ``(Σ_{i≤r} s_i² − r·edge²) / (‖ΔΩ‖² − σ² m k)``, they
    hold: near 1 for a low-rank update, well below 1 for a full-rank one cut off by the noise edge; and
    the top 16 singular values in units of the edge (the spectrum a report draws)."""
    m, n = delta.shape
    k = min(n, 512)
    if k < n:
        omega, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
        delta = delta @ omega
    sv = np.linalg.svd(delta, compute_uv=False)
    edge = 1.5 * sigma * (np.sqrt(m) + np.sqrt(k)) + 1e-9 * (sv[0] if sv.size else 0.0)
    r = int((sv > edge).sum())
    excess = float((sv**2).sum()) - sigma**2 * m * k
    share = float((sv[:r] ** 2).sum() - r * edge**2) / excess if excess > 0 else 0.0
    return r, min(1.0, share), [round(float(x / edge), 3) for x in sv[:16]]


def _noise(wp: np.ndarray, dtype_p: str, dtype_c: str, steps: np.ndarray | None) -> float:
    """Per-element noise scale (absolute) of the two stored sides (module docstring, step 3)."""
    u = UNIT_ROUNDOFF.get(dtype_p, 2.0**-24) ** 2 + UNIT_ROUNDOFF.get(dtype_c, 2.0**-24) ** 2
    var = u * float(np.mean(wp.astype(np.float64) ** 2)) / 3.0
    if steps is not None:
        var += float(np.mean(steps**2)) / 12.0
    return float(np.sqrt(var))


def align_weight(role: str, wp: np.ndarray, t: np.ndarray) -> np.ndarray:
    out: np.ndarray = wp @ t if role in READERS else t.T @ wp
    return out


def _layer_pairs(parent: CanonicalModel, child: CanonicalModel, t: np.ndarray, sample: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Sampled ``(parent layer, child layer)`` pairs, and the parent layers a shallower child dropped.

    Equal depth pairs layers by index; a shallower child is matched by the monotone assignment that
    minimizes the summed relative difference of the logit forms (dynamic programming).
    """
    lp, lc = parent.spec.num_layers, child.spec.num_layers
    if lc == lp:
        pairs = [(i, i) for i in range(lc)]
        dropped: list[int] = []
    elif lc < lp:
        fc = [_form("qk", child, j) for j in range(lc)]
        fp = [t.T @ _form("qk", parent, i) @ t for i in range(lp)]
        cost = np.array([[np.linalg.norm(fc[j] - fp[i]) / (np.linalg.norm(fp[i]) + 1e-12) for i in range(lp)]
                         for j in range(lc)])
        best = np.full((lc + 1, lp + 1), np.inf)
        best[0, :] = 0.0
        for j in range(1, lc + 1):
            for i in range(j, lp + 1):
                best[j, i] = min(best[j, i - 1], best[j - 1, i - 1] + cost[j - 1, i - 1])
        pairs, j, i = [], lc, lp
        while j > 0:
            if best[j, i] == best[j, i - 1] and i > j:
                i -= 1
            else:
                pairs.append((i - 1, j - 1))
                i, j = i - 1, j - 1
        pairs.reverse()
        dropped = sorted(set(range(lp)) - {p for p, _ in pairs})
    else:
        raise ComparisonError(f"the child has more layers ({lc}) than the parent ({lp}): not a derivative this reads")
    if len(pairs) > sample:
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, sample).astype(int)]
    return pairs, dropped


def role_stats(parent: CanonicalModel, child: CanonicalModel, t: np.ndarray, lp: int, lc: int) -> list[RoleStats]:
    """Statistics of every role both layers have (module docstring, steps 2-4)."""
    out: list[RoleStats] = []
    forms: dict[str, float] = {}
    dense = not bool(np.isin(t, (-1.0, 0.0, 1.0)).all())  # an estimated rotation, not a signed permutation
    for role in roles_of(child, lc):
        if role not in roles_of(parent, lp):
            continue
        wp, wc = weight(role, parent, lp), weight(role, child, lc)
        dtype_p = parent.info(role, lp).dtype if parent.has(role, lp) else "F32"
        dtype_c = child.info(role, lc).dtype if child.has(role, lc) else "F32"
        wa = align_weight(role, wp.astype(np.float64), t)
        # A quantizer's grid is in the stored matrix, before a norm gain scales its columns: read it there
        # when the two share one basis (an attacked copy is judged on the folded view, which is close).
        same_basis = wa.shape == wc.shape and t.shape[0] == t.shape[1] and bool(np.array_equal(t, np.eye(len(t))))
        qc, qp = (weight(role, child, lc, fold=False), weight(role, parent, lp, fold=False)) if same_basis else (wc, wa)
        steps = quant_steps(qc, dtype_c) if wa.shape == wc.shape else None
        if steps is None and wa.shape == wc.shape and dtype_c in UNIT_ROUNDOFF:
            # stored as floats, but maybe on a quantizer's grid; a grid the parent already has is inherited
            grid = grid_steps(qc) if grid_steps(qp) is None else None
            if grid is not None:
                steps, dtype_c = grid[0], f"dequantized {grid[1]}"
        if wa.shape == wc.shape:
            delta = wc - wa
            raw = float(np.linalg.norm(delta) / (np.linalg.norm(wa) + 1e-30))
        else:
            delta, raw = None, float("inf")
        fname = FORM_OF[role]
        if fname not in forms:
            fc, fp = _form(fname, child, lc), t.T @ _form(fname, parent, lp) @ t
            forms[fname] = float(np.linalg.norm(fc - fp) / (np.linalg.norm(fp) + 1e-30)) / np.sqrt(2.0)
        scale = float(np.sqrt(np.mean(wa**2))) + 1e-30
        noise = _noise(wa, dtype_p, dtype_c, None)
        edge_noise = _noise(wa, dtype_p, dtype_c, steps)
        zeros = float((wc == 0).mean() - (wp == 0).mean())
        # The raw difference stands unless it is large and the form says the output side was only
        # re-expressed (a pruned or heavily trained matrix moves both, and stays raw).
        if delta is not None and (raw <= 0.5 or raw <= 2.0 * forms[fname] + 4.0 * noise / scale + 1e-6):
            qrms = (float(np.sqrt(np.mean(((qc - qp) / np.where(steps > 0, steps, np.inf)) ** 2)))
                    if steps is not None else None)
            rank, share, spectrum = effective_rank(delta, edge_noise)
            u = max(UNIT_ROUNDOFF.get(dtype_p, 2.0**-24), UNIT_ROUNDOFF.get(dtype_c, 2.0**-24))
            # plus a float32 arithmetic floor: an attack computed in float (a rotation) errs relative to its rows'
            # norm, not to each element (256 units of 2^-24 of the matrix's rms; a bf16 ulp is 2^-8 of |w|)
            # two roundings: the weight and, folded into it, its norm gain
            # A dense rotation estimated from rounded embeddings errs by about one rounding of the matrix's
            # scale in every element: its floor is 4u·rms(W) (a signed permutation is exact).
            floor = 4 * u * scale if dense else 256 * 2.0**-24 * scale
            beyond = float((np.abs(delta) > 2.02 * u * np.abs(wa) + floor).mean())
            out.append(RoleStats(lp, role, raw, "raw", rank, min(delta.shape), noise / scale, qrms, zeros, dtype_c,
                                 share, spectrum, beyond))
        else:
            via = "form" if delta is not None else "shape"  # "shape": a pruned side, not a transform
            out.append(RoleStats(lp, role, forms[fname], via, None, min(wc.shape), noise / scale, None, zeros,
                                 dtype_c))
    return out


def classify(parent: CanonicalModel, child: CanonicalModel, sample: int = 4) -> Relation:
    """Type the relation of ``child`` to ``parent`` (module docstring); raises ComparisonError when the
    two cannot be put in one basis (too few shared tokens, a deeper child)."""
    t, kind, _ = residual_alignment(parent, child)
    pairs, dropped = _layer_pairs(parent, child, t, sample)
    roles = [r for lp, lc in pairs for r in role_stats(parent, child, t, lp, lc)]
    if not roles:
        raise ComparisonError("no layer role the two models share: nothing to type the relation by")
    flags = [] if kind == "identity" or t.shape[0] != t.shape[1] else [f"residual {kind}"]
    forms = sorted({r.role for r in roles if r.via == "form"})
    if forms:
        flags.append("output side transformed: " + ", ".join(forms))
    drift = float(np.median([r.delta for r in roles]))
    if drift >= 1.0:
        raise ComparisonError(f"median relative difference {drift:.2f} after alignment: the two share no weights "
                              "to type (is the parent right?)")
    pv, cv = parent.vocab(), child.vocab()
    extra, missing = len(set(cv.keys) - set(pv.keys)), len(set(pv.keys) - set(cv.keys))
    if child.spec.wrapper and not parent.spec.wrapper:
        flags.append(f"multimodal wrapper ({child.spec.wrapper})")
    quant = sorted({r.dtype for r in roles if r.quant_rms is not None})

    def done(relation: str, rule: str, **detail: Any) -> Relation:
        return Relation(relation, detail, flags, rule, drift, kind, roles)

    sp, sc = parent.spec, child.spec
    if "MoE" in kind_of(child) and "MoE" not in kind_of(parent):
        return done("upcycled", "the parent is dense and the child a mixture of experts",
                    experts=sc.num_experts)
    pruned: dict[str, Any] = {}
    if dropped:
        pruned["depth"] = {"removed_layers": dropped}
    if sc.hidden_size < sp.hidden_size or (sc.num_heads, sc.num_kv_heads) < (sp.num_heads, sp.num_kv_heads):
        pruned["width"] = {"hidden": [sp.hidden_size, sc.hidden_size], "heads": [sp.num_heads, sc.num_heads]}
    zeros = float(np.median([r.zeros for r in roles]))
    if zeros >= 0.2:
        pruned["unstructured"] = {"sparsity": round(zeros, 3)}
    if pruned:
        return done("pruned", "layers, width or weights were removed", **pruned)
    # a copy: no element moved beyond two roundings of the coarser dtype (a matrix seen only through its form,
    # after an attack, within 4x the rounding noise); a bf16 fine-tune moves whole ulps, however small
    copy = all(r.beyond_rounding <= 0.01 if r.beyond_rounding is not None else r.delta <= 4.0 * r.noise + 1e-6
               for r in roles)
    if copy and sp.vocab_rows == sc.vocab_rows:  # the same weights, whatever either side is stored as
        return done("copy", "every sampled difference is within 4x the storage rounding")
    qr = [r.quant_rms for r in roles if r.quant_rms is not None]
    if qr:
        q = float(np.sqrt(np.mean(np.square(qr))))
        if q <= QUANT_RMS:
            return done("quantized", f"rms(Δ/step) = {q:.2f} ≤ {QUANT_RMS}: only the scheme's rounding", scheme=quant,
                        rms_over_step=round(q, 3))
        flags.append("stored quantized: " + ", ".join(quant))
    if sp.vocab_rows != sc.vocab_rows:
        rel = "continued_pretraining" if drift >= CPT_DRIFT else "vocab_changed"
        flags.append(f"vocabulary {sp.vocab_rows} -> {sc.vocab_rows} rows")
        return done(rel, f"embedding rows {sp.vocab_rows} -> {sc.vocab_rows}; median δ = {drift:.3f}",
                    rows=[sp.vocab_rows, sc.vocab_rows], tokens_added=extra, tokens_removed=missing)
    changed = [r for r in roles if r.delta > 4.0 * r.noise + 1e-6]
    ranks = [r for r in changed if r.rank is not None]
    if ranks and len(ranks) == len(changed) and all(r.rank is not None and 4 * r.rank <= r.size
                                                    and (r.rank_share or 0.0) >= 0.9 for r in ranks):
        rank = int(max(r.rank or 0 for r in ranks))
        return done("adapter_merged", f"every changed matrix has effective rank ≤ 1/4 of its side (max {rank})",
                    rank=rank, roles=sorted({r.role for r in ranks}))
    if drift >= CPT_DRIFT:
        return done("continued_pretraining", f"full-rank update, median δ = {drift:.3f} ≥ {CPT_DRIFT}")
    return done("finetune", f"full-rank update, median δ = {drift:.3f} < {CPT_DRIFT}")
