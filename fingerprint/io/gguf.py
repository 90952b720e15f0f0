"""A bounded GGUF reader over any byte source; block types are dequantized with the ``gguf`` package.

GGUF layout (v2/v3): magic ``GGUF``, u32 version, u64 tensor count, u64 key/value count, the
key/value pairs, the tensor infos (name, dims ``ne`` with ``ne[0]`` fastest, type, offset), then
the data section aligned to ``general.alignment`` (default 32). Every count and length is bounded
before anything is allocated, and every tensor must lie inside the file.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from fingerprint.errors import CheckpointFormatError, TensorNotFoundError, UnsupportedDtypeError
from fingerprint.io.source import ByteSource
from fingerprint.io.tensors import TensorInfo, check_no_overlap

MAX_GGUF_HEADER_BYTES = 512 * 1024 * 1024
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_ARRAY_LEN = 10_000_000
MAX_STRING_LEN = 16 * 1024 * 1024
CHUNK = 1 << 20

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9

#: GGUF tensor types we decode (the common llama.cpp types; others raise UnsupportedDtypeError).
SUPPORTED_TYPES = {
    "F32", "F16", "BF16", "F64", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
}


class _Cursor:
    """Sequential reads over a byte source, fetched in 1 MiB chunks, with a total bound."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.source.size:
            raise CheckpointFormatError(self.source.name, f"truncated GGUF header at byte {self.pos}")
        if self.pos + n > MAX_GGUF_HEADER_BYTES:
            raise CheckpointFormatError(self.source.name, f"GGUF header exceeds {MAX_GGUF_HEADER_BYTES} bytes")
        end = self.pos + n
        if end > self._buf_start + len(self._buf):
            # Keep the unread tail and fetch at least one more chunk.
            keep = self._buf[self.pos - self._buf_start :]
            want = max(CHUNK, end - self.pos - len(keep))
            want = min(want, self.source.size - (self.pos + len(keep)))
            self._buf = keep + self.source.read(self.pos + len(keep), want)
            self._buf_start = self.pos
        off = self.pos - self._buf_start
        self.pos = end
        return self._buf[off : off + n]

    def scalar(self, fmt: str, size: int) -> Any:
        return struct.unpack(fmt, self.take(size))[0]

    def string(self) -> str:
        n = self.scalar("<Q", 8)
        if n > MAX_STRING_LEN:
            raise CheckpointFormatError(self.source.name, f"GGUF string of {n} bytes exceeds the limit")
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Token strings may hold partial UTF-8; keep them lossless and distinguishable.
            return raw.decode("utf-8", errors="surrogateescape")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(*_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth < 2:
            etype = self.scalar("<I", 4)
            n = self.scalar("<Q", 8)
            if n > MAX_ARRAY_LEN:
                raise CheckpointFormatError(self.source.name, f"GGUF array of {n} items exceeds the limit")
            if etype in _SCALARS:
                fmt, size = _SCALARS[etype]
                raw = self.take(n * size)
                return list(np.frombuffer(raw, dtype=np.dtype(fmt)).tolist())
            return [self.value(etype, depth + 1) for _ in range(n)]
        raise CheckpointFormatError(self.source.name, f"invalid GGUF value type {vtype}")


def _type_name(t: int, where: str) -> str:
    try:
        return GGMLQuantizationType(t).name
    except ValueError as e:
        raise CheckpointFormatError(where, f"unknown GGUF tensor type {t}") from e


class GGUFReader:
    """Lazy reader of one ``.gguf`` file: header parsed on open, tensors read one range each."""

    def __init__(self, source: ByteSource, filename: str) -> None:
        self.source = source
        self.name = source.name
        self.files = [filename]
        where = source.name
        cur = _Cursor(source)
        if cur.take(4) != b"GGUF":
            raise CheckpointFormatError(where, "not a GGUF file (bad magic)")
        version = cur.scalar("<I", 4)
        if version not in (2, 3):
            raise CheckpointFormatError(where, f"unsupported GGUF version {version}")
        n_tensors = cur.scalar("<Q", 8)
        n_kv = cur.scalar("<Q", 8)
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise CheckpointFormatError(where, f"implausible counts: {n_tensors} tensors, {n_kv} keys")
        self.metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key = cur.string()
            self.metadata[key] = cur.value(cur.scalar("<I", 4))
        infos: list[tuple[str, tuple[int, ...], str, int]] = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I", 4)
            if not 1 <= n_dims <= 4:
                raise CheckpointFormatError(where, f"tensor {name!r}: {n_dims} dimensions")
            ne = tuple(cur.scalar("<Q", 8) for _ in range(n_dims))
            tname = _type_name(cur.scalar("<I", 4), where)
            offset = cur.scalar("<Q", 8)
            infos.append((name, ne, tname, offset))
        alignment = self.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointFormatError(where, f"invalid general.alignment {alignment!r}")
        data_start = (cur.pos + alignment - 1) // alignment * alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, tname, offset in infos:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[tname]]
            numel = 1
            for s in ne:
                numel *= s
            if ne[0] % block:
                raise CheckpointFormatError(where, f"tensor {name!r}: row of {ne[0]} not a multiple of {block}")
            nbytes = numel // block * type_size
            start = data_start + offset
            if offset % alignment or start + nbytes > source.size:
                raise CheckpointFormatError(where, f"tensor {name!r}: data outside the file")
            if name in self.tensors:
                raise CheckpointFormatError(where, f"duplicate tensor {name!r}")
            shape = tuple(reversed(ne))
            self.tensors[name] = TensorInfo(name, f"gguf:{tname}", shape, filename, start, start + nbytes)
        check_no_overlap(self.tensors, where)
        self.header_bytes = cur.pos
        # The header was read in chunks, and the last one runs past the header into tensor data: keep it,
        # so a tensor inside it is not fetched twice (a small file was read ~1.4 times over, and the
        # byte accounting said "read 138% of the file").
        self._tail_start, self._tail = cur._buf_start, cur._buf

    def _range(self, start: int, end: int) -> bytes:
        t0 = self._tail_start
        if start >= t0 and end <= t0 + len(self._tail):
            return self._tail[start - t0 : end - t0]
        return self.source.read(start, end - start)

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        info = self.tensors.get(name)
        if info is None:
            raise TensorNotFoundError(name, self.name)
        tname = info.dtype.removeprefix("gguf:")
        if tname not in SUPPORTED_TYPES:
            raise UnsupportedDtypeError(tname, f"{self.name}:{name}")
        start, end = (info.start, info.end) if rows is None else info.row_range(rows)
        raw = np.frombuffer(self._range(start, end), dtype=np.uint8)
        shape = info.shape if rows is None else (rows[1] - rows[0], *info.shape[1:])
        qtype = GGMLQuantizationType[tname]
        if tname == "F64":
            out = raw.view("<f8").astype(np.float32)
        else:
            out = np.asarray(dequantize(raw, qtype), dtype=np.float32)
        return out.reshape(shape)

    @property
    def bytes_read(self) -> int:
        return self.source.bytes_read

    @property
    def total_bytes(self) -> int:
        return self.source.size
