"""Tensor metadata shared by every format, and decoding of raw bytes to float32."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fingerprint.errors import CheckpointFormatError, UnsupportedDtypeError

#: Bytes per element of each safetensors dtype we accept.
SAFETENSORS_DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives.

    Attributes:
        name: the name as stored in the file.
        dtype: safetensors dtype (``BF16``...) or GGUF type name prefixed ``gguf:`` (``gguf:Q4_K``).
        shape: logical shape, row-major (for GGUF: reversed ``ne``, i.e. ``(out, in)``).
        file: the file (shard) that holds it, relative to the model directory.
        start: absolute offset of the first byte in ``file``.
        end: absolute offset one past the last byte.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def row_range(self, rows: tuple[int, int]) -> tuple[int, int]:
        """Absolute byte range of rows ``[a, b)`` of a row-major tensor (rows are whole blocks)."""
        a, b = rows
        n_rows = self.shape[0] if self.shape else 1
        if not 0 <= a <= b <= n_rows:
            raise IndexError(f"{self.name}: rows [{a}, {b}) outside [0, {n_rows})")
        row_bytes = self.nbytes // max(n_rows, 1)
        return self.start + a * row_bytes, self.start + b * row_bytes


#: Rows between two wanted rows are read through when they cost less than another request: a ranged read
#: has a round trip (~1 ms on a disk, tens over HTTP), in which 64 KiB arrive at ≥ 64 MB/s.
GAP_BYTES = 64 * 1024
#: One read covers at most this many bytes, so a dense sample never holds a whole matrix at once.
RUN_BYTES = 8 * 1024**2


def row_runs(rows: np.ndarray, row_bytes: int, gap_bytes: int = GAP_BYTES) -> list[tuple[int, int]]:
    """Split sorted distinct row numbers into runs ``rows[a:b]`` read as one range each: a gap of at most
    ``gap_bytes`` is read through (a source's own ``gap_bytes``, else :data:`GAP_BYTES`), and no run spans
    more than :data:`RUN_BYTES`."""
    gap = max(1, gap_bytes // max(1, row_bytes))
    longest = max(1, RUN_BYTES // max(1, row_bytes))
    runs: list[tuple[int, int]] = []
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and rows[end] - rows[end - 1] <= gap and rows[end] - rows[start] < longest:
            end += 1
        runs.append((start, end))
        start = end
    return runs


def gather_rows(ids: list[int], d: int, row_bytes: int,
                read_run: Callable[[int, int, np.ndarray], np.ndarray], gap_bytes: int = GAP_BYTES) -> np.ndarray:
    """Rows ``ids`` (any order, repeats allowed) of a ``(rows, d)`` tensor as float32, one read per run of
    :func:`row_runs`: ``read_run(first, last, picks)`` returns rows ``first + picks`` of ``[first, last)``."""
    if not ids:
        return np.zeros((0, d), dtype=np.float32)
    want = np.asarray(ids, dtype=np.int64)
    uniq = np.unique(want)
    out = np.empty((len(uniq), d), dtype=np.float32)
    for a, b in row_runs(uniq, row_bytes, gap_bytes):
        first = int(uniq[a])
        out[a:b] = read_run(first, int(uniq[b - 1]) + 1, uniq[a:b] - first)
    return out[np.searchsorted(uniq, want)]


class TensorReader(Protocol):
    """What every checkpoint format offers: an index of tensors and lazy float32 reads."""

    name: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, object]

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Read one tensor (or a contiguous block of its rows) as float32, in one byte range."""
        ...

    @property
    def bytes_read(self) -> int: ...

    @property
    def total_bytes(self) -> int: ...


def decode(raw: bytes, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Decode little-endian raw bytes of a safetensors dtype into a float32 array of ``shape``."""
    if dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4")
    elif dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2")
    elif dtype == "F64":
        arr = np.frombuffer(raw, dtype="<f8")
    elif dtype == "BF16":
        # bf16 is the top half of an IEEE float32.
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in ("F8_E4M3", "F8_E5M2"):
        # numpy has no float8; torch is imported here only, so no other dtype ever loads it.
        import torch

        tdt = torch.float8_e4m3fn if dtype == "F8_E4M3" else torch.float8_e5m2
        arr = torch.frombuffer(bytearray(raw), dtype=tdt).to(torch.float32).numpy()
    elif dtype in ("I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL"):
        np_dt = {"I8": "<i1", "U8": "<u1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
                 "I64": "<i8", "U64": "<u8", "BOOL": "<u1"}[dtype]
        arr = np.frombuffer(raw, dtype=np_dt)
    else:
        raise UnsupportedDtypeError(dtype, where)
    return arr.astype(np.float32, copy=False).reshape(shape)


def decode_raw_int(raw: bytes, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Decode an integer tensor keeping its integer type (packed GPTQ/AWQ words)."""
    np_dt = {"I32": "<i4", "U32": "<u4", "I64": "<i8", "I16": "<i2", "U8": "<u1", "I8": "<i1"}.get(dtype)
    if np_dt is None:
        raise UnsupportedDtypeError(dtype, where)
    return np.frombuffer(raw, dtype=np_dt).reshape(shape)


def check_no_overlap(tensors: dict[str, TensorInfo], where: str) -> None:
    """Raise :class:`CheckpointFormatError` if any two non-empty tensors share a byte."""
    spans = sorted((t.start, t.end, t.name) for t in tensors.values() if t.end > t.start)
    for (_, e1, n1), (s2, _, n2) in itertools.pairwise(spans):
        if s2 < e1:
            raise CheckpointFormatError(where, f"tensors {n1!r} and {n2!r} overlap")
