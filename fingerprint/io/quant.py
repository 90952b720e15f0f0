"""Dequantization of quantized safetensors checkpoints into plain float32 weights.

* **fp8** (``F8_E4M3``/``F8_E5M2``): ``W = q · s`` with ``weight_scale`` per tensor (scalar) or per
  output channel (``[out]`` or ``[out, 1]``), or ``W[i, j] = q[i, j] · s[i // B, j // B]`` with
  ``weight_scale_inv`` in ``B × B`` blocks (DeepSeek-V3, B = 128).
* **GPTQ** (``qweight`` int32 packed along in-features, ``qzeros`` packed along out-features,
  ``scales [groups, out]``, ``g_idx [in]``): ``W[o, i] = s[g(i), o] · (q[i, o] − z[g(i), o])``;
  v1 checkpoints store ``z − 1``.
* **AWQ** (``qweight [in, out/8]`` packed along out-features in order 0,2,4,6,1,3,5,7, ``qzeros``,
  ``scales [in/group, out]``): ``W[o, i] = s[i // group, o] · (q[i, o] − z[i // group, o])``.

:class:`QuantizedSafetensors` wraps a :class:`SafetensorsReader` and exposes each quantized
``X.weight`` as if it were stored in float32; scale tensors are hidden from the index.
"""

from __future__ import annotations

import json
import re

import numpy as np

from fingerprint.errors import CheckpointFormatError, TensorNotFoundError
from fingerprint.io.safetensors import SafetensorsReader
from fingerprint.io.tensors import TensorInfo, decode_raw_int

_AWQ_ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7])


FP8_BLOCK = 128
"""DeepSeek-V3's ``weight_block_size`` (``[128, 128]``), the default when a config does not say."""


def fp8_block(shape: tuple[int, ...], blocks: tuple[int, ...], declared: tuple[int, int] | None = None) -> tuple[int, int]:
    """The tile of a ``blocks``-shaped ``weight_scale_inv`` over an ``(out, in)`` weight: the config's
    ``weight_block_size``, else 128 where it tiles the weight into exactly that many blocks (the last
    ones partial: 576 rows are 5 blocks of 128, not 5 of 116), else the ceiling division.

    >>> fp8_block((576, 576), (5, 5))
    (128, 128)
    >>> fp8_block((64, 64), (2, 2))
    (32, 32)
    """
    out = []
    for n, nb, dec in zip(shape, blocks, declared or (None, None)):
        if dec and -(-n // dec) == nb:
            out.append(int(dec))
        elif -(-n // FP8_BLOCK) == nb:
            out.append(FP8_BLOCK)
        else:
            out.append(-(-n // nb))
    return out[0], out[1]


def dequantize_fp8(q: np.ndarray, scale: np.ndarray | None, block_scale_inv: np.ndarray | None,
                   block: tuple[int, int] | None = None) -> np.ndarray:
    """Apply fp8 scales to already-decoded fp8 values ``q`` of shape ``(out, in)`` (``block``: the
    config's ``weight_block_size``, see :func:`fp8_block`).

    >>> dequantize_fp8(np.ones((2, 2), np.float32), np.array([2.0, 3.0], np.float32), None).tolist()
    [[2.0, 2.0], [3.0, 3.0]]
    """
    w = q.astype(np.float32, copy=True)
    if block_scale_inv is not None:
        bo, bi = fp8_block(w.shape, block_scale_inv.shape, block)
        s = np.repeat(np.repeat(block_scale_inv, bo, axis=0), bi, axis=1)[: w.shape[0], : w.shape[1]]
        w *= s
    elif scale is not None:
        s = scale.astype(np.float32).reshape(-1)
        if s.size == 1:
            w *= s[0]
        elif s.size == w.shape[0]:
            w *= s[:, None]
        else:
            raise CheckpointFormatError("fp8", f"weight_scale of {s.size} values does not fit {w.shape}")
    return w


def _unpack_int4(words: np.ndarray, axis: int) -> np.ndarray:
    """Unpack int32 words into 8 nibbles each (low bits first) along ``axis``."""
    w = np.moveaxis(words.astype(np.uint32), axis, -1)
    nib = (w[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & 0xF
    nib = nib.reshape(*w.shape[:-1], w.shape[-1] * 8)
    return np.moveaxis(nib, -1, axis).astype(np.float32)


def dequantize_gptq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray | None,
                    v1_zero_offset: bool = True) -> np.ndarray:
    """GPTQ 4-bit → float32 ``(out, in)`` (formula in the module docstring)."""
    q = _unpack_int4(qweight, 0)  # [in, out]
    z = _unpack_int4(qzeros, 1)  # [groups, out]
    if v1_zero_offset:
        z = z + 1
    n_in = q.shape[0]
    if g_idx is None:
        group = n_in // scales.shape[0]
        g_idx = np.arange(n_in) // group
    g = g_idx.astype(np.int64)
    if g.shape != (n_in,) or g.min() < 0 or g.max() >= scales.shape[0]:
        raise CheckpointFormatError("gptq", "g_idx does not fit qweight/scales")
    w = scales[g].astype(np.float32) * (q - z[g])
    return np.ascontiguousarray(w.T)


def dequantize_awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """AWQ 4-bit → float32 ``(out, in)`` (formula in the module docstring)."""
    def unpack(words: np.ndarray) -> np.ndarray:
        nib = _unpack_int4(words, 1)  # [rows, out] in packed order
        r, c = nib.shape
        inv = np.argsort(_AWQ_ORDER)
        return nib.reshape(r, c // 8, 8)[:, :, inv].reshape(r, c)

    q = unpack(qweight)  # [in, out]
    z = unpack(qzeros)  # [in/group, out]
    group = q.shape[0] // scales.shape[0]
    gi = np.arange(q.shape[0]) // group
    w = scales[gi].astype(np.float32) * (q - z[gi])
    return np.ascontiguousarray(w.T)


class QuantizedSafetensors:
    """A view of a safetensors reader in which quantized weights read as float32."""

    _HIDDEN = re.compile(r"\.(weight_scale|weight_scale_inv|input_scale|qzeros|scales|g_idx|qweight)$")

    def __init__(self, inner: SafetensorsReader) -> None:
        self.inner = inner
        self.name = inner.name
        self.files = inner.files
        self.metadata = inner.metadata
        self._kind: dict[str, str] = {}
        self._gptq_v1 = True
        self._fp8_block: tuple[int, int] | None = None
        quant_cfg = self._quant_config()
        t = inner.tensors
        self.tensors: dict[str, TensorInfo] = {n: i for n, i in t.items() if not self._HIDDEN.search(n)}
        for n, info in t.items():
            if n.endswith(".qweight"):
                base = n[: -len(".qweight")]
                scales = t.get(base + ".scales")
                if scales is None or base + ".qzeros" not in t:
                    raise CheckpointFormatError(n, "packed int4 weight without scales/qzeros")
                kind = "awq" if quant_cfg == "awq" else "gptq"
                out_f = scales.shape[1]
                in_f = info.shape[0] * 8 if kind == "gptq" else info.shape[0]
                self.tensors[base + ".weight"] = TensorInfo(base + ".weight", f"{kind}:int4", (out_f, in_f),
                                                            info.file, info.start, info.end)
                self._kind[base + ".weight"] = kind
            elif info.dtype in ("F8_E4M3", "F8_E5M2"):
                self._kind[n] = "fp8"

    def _quant_config(self) -> str | None:
        repo = self.inner.repo
        if not repo.exists("config.json"):
            return None
        try:
            cfg = json.loads(repo.read_bytes("config.json", 4 * 1024 * 1024))
        except (ValueError, UnicodeDecodeError):
            return None
        qc = cfg.get("quantization_config") if isinstance(cfg, dict) else None
        if isinstance(qc, dict):
            bs = qc.get("weight_block_size")
            if isinstance(bs, list) and len(bs) == 2 and all(isinstance(x, int) and 0 < x <= 1 << 16 for x in bs):
                self._fp8_block = (int(bs[0]), int(bs[1]))
            method = qc.get("quant_method")
            if qc.get("checkpoint_format") == "gptq_v2":
                self._gptq_v1 = False
            return str(method) if method else None
        return None

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        kind = self._kind.get(name)
        if kind is None:
            if name not in self.tensors:
                raise TensorNotFoundError(name, self.name)
            return self.inner.read(name, rows)
        base = name[: -len(".weight")]
        t = self.inner.tensors
        if kind == "fp8":
            w = self.inner.read(name)
            scale = self.inner.read(base + ".weight_scale") if base + ".weight_scale" in t else None
            block = self.inner.read(base + ".weight_scale_inv") if base + ".weight_scale_inv" in t else None
            out = dequantize_fp8(w, scale, block, self._fp8_block)
        else:
            def ints(n: str) -> np.ndarray:
                info, raw = self.inner.read_raw(n)
                return decode_raw_int(raw, info.dtype, info.shape, n)

            scales = self.inner.read(base + ".scales")
            if kind == "gptq":
                g_idx = ints(base + ".g_idx") if base + ".g_idx" in t else None
                out = dequantize_gptq(ints(base + ".qweight"), ints(base + ".qzeros"), scales, g_idx,
                                      self._gptq_v1)
            else:
                out = dequantize_awq(ints(base + ".qweight"), ints(base + ".qzeros"), scales)
        return out if rows is None else out[rows[0] : rows[1]]

    def read_rows(self, name: str, ids: list[int]) -> np.ndarray:
        """Rows of a tensor (:meth:`SafetensorsReader.read_rows` when it is not quantized)."""
        if name not in self._kind:
            return self.inner.read_rows(name, ids)
        return self.read(name)[np.asarray(ids, dtype=np.int64)]

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read

    @property
    def total_bytes(self) -> int:
        return self.inner.total_bytes
