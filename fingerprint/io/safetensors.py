"""A safetensors reader that parses headers itself, with hard bounds, over any byte source.

File layout: ``[u64 little-endian N][N bytes of UTF-8 JSON header][data]``; a tensor's bytes are
``[8 + N + begin, 8 + N + end)``. Every header value is treated as hostile: the header length,
the JSON nesting, each dtype and shape, and the data offsets (inside the file, no overlap, and
``prod(shape) * itemsize == end - begin``) are checked before any tensor byte is touched.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fingerprint.errors import CheckpointFormatError, FingerprintFileError, TensorNotFoundError
from fingerprint.io.source import ByteSource, Repo, safe_relative_name
from fingerprint.io.tensors import (
    GAP_BYTES,
    SAFETENSORS_DTYPE_SIZES,
    TensorInfo,
    check_no_overlap,
    decode,
    gather_rows,
)

#: The first read fetches this much; 97% of safetensors headers are smaller (huggingface_hub).
FIRST_READ_BYTES = 100_000
#: Refuse headers larger than this (the huggingface_hub client uses 25 MB; we allow some slack).
MAX_HEADER_BYTES = 100_000_000
#: Refuse JSON nested deeper than this; real headers have depth 3.
MAX_JSON_DEPTH = 16
MAX_TENSOR_RANK = 8
MAX_TENSORS = 1_000_000
INDEX_FILENAME = "model.safetensors.index.json"


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text never nests ``[``/``{`` deeper than ``limit`` (strings skipped).

    Strings are cut out with a linear-time pattern and everything but brackets is dropped, so the
    Python loop only visits brackets (2× faster on a fingerprint header of 4000 token strings). An
    unterminated string is not cut, so its brackets count: stricter, and such JSON is invalid anyway.
    """
    depth = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_json_bounded(raw: bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode UTF-8 JSON with a nesting bound; any failure becomes a CheckpointFormatError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointFormatError(where, f"header is not valid UTF-8 ({e.reason} at byte {e.start})") from e
    if not json_depth_ok(text, max_depth):
        raise CheckpointFormatError(where, f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointFormatError(where, f"header is not valid JSON: {e}") from e


def read_header(source: ByteSource, filename: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate the header of one safetensors file in at most two reads.

    Returns:
        The tensors (name → :class:`TensorInfo` with absolute offsets) and the ``__metadata__``.

    Raises:
        CheckpointFormatError: on any violated bound (see module docstring).
    """
    where = source.name
    size = source.size
    if size < 8:
        raise CheckpointFormatError(where, f"file of {size} bytes is too short for a safetensors header")
    # 1. One read of the first 100 kB covers most headers over HTTP; a local source asks for just
    #    the 8-byte length (``header_prefetch``) because a second pread costs nothing.
    prefetch = max(8, int(getattr(source, "header_prefetch", FIRST_READ_BYTES)))
    first = source.read(0, min(size, prefetch))
    (n,) = struct.unpack("<Q", first[:8])
    if n > MAX_HEADER_BYTES:
        raise CheckpointFormatError(where, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + n > size:
        raise CheckpointFormatError(where, f"header length {n} is larger than the file ({size} bytes)")
    # 2. A second read only when the header is longer than the first read.
    raw = first[8 : 8 + n] if 8 + n <= len(first) else first[8:] + source.read(len(first), 8 + n - len(first))
    header = parse_json_bounded(raw, where)
    if not isinstance(header, dict):
        raise CheckpointFormatError(where, "header is not a JSON object")
    if len(header) > MAX_TENSORS:
        raise CheckpointFormatError(where, f"header lists {len(header)} tensors (limit {MAX_TENSORS})")
    data_start = 8 + n
    data_size = size - data_start
    metadata: dict[str, str] = {}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                raise CheckpointFormatError(where, "__metadata__ must map strings to strings")
            metadata = entry
            continue
        tensors[name] = _validate_entry(name, entry, where, filename, data_start, data_size)
    check_no_overlap(tensors, where)
    return tensors, metadata


def _validate_entry(
    name: str, entry: Any, where: str, filename: str, data_start: int, data_size: int
) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) - {"dtype", "shape", "data_offsets"}:
        raise CheckpointFormatError(where, f"tensor {name!r}: malformed entry")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_SIZES:
        raise CheckpointFormatError(where, f"tensor {name[:100]!r}: unknown dtype {repr(dtype)[:100]}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_TENSOR_RANK
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise CheckpointFormatError(where, f"tensor {name[:100]!r}: invalid shape {repr(shape)[:100]}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CheckpointFormatError(where, f"tensor {name[:100]!r}: invalid data_offsets {repr(offsets)[:100]}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise CheckpointFormatError(
            where, f"tensor {name!r}: data_offsets [{begin}, {end}) outside the data section of {data_size} bytes"
        )
    numel = 1
    for s in shape:
        numel *= s  # Python ints: a 10 GB claim cannot overflow, it just fails the check below.
    if numel * SAFETENSORS_DTYPE_SIZES[dtype] != end - begin:
        raise CheckpointFormatError(
            where,
            f"tensor {name!r}: shape {shape} x {dtype} needs {numel * SAFETENSORS_DTYPE_SIZES[dtype]} bytes "
            f"but the byte span is {end - begin}",
        )
    return TensorInfo(name, dtype, tuple(shape), filename, data_start + begin, data_start + end)


class SafetensorsReader:
    """Lazy reader over one ``model.safetensors`` or a sharded set with ``*.index.json``.

    Only headers are read on construction; :meth:`read` then fetches exactly one byte range per
    call. ``bytes_read`` counts every byte taken from the weight files, headers included.
    """

    def __init__(self, repo: Repo, filenames: list[str], weight_map: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.name = repo.name
        self.files = filenames
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, object] = {}
        for fn in filenames:
            tensors, meta = read_header(repo.source(fn), fn)
            for tname, info in tensors.items():
                if tname in self.tensors:
                    raise CheckpointFormatError(fn, f"tensor {tname!r} appears in two shards")
                self.tensors[tname] = info
            self.metadata.update(meta)
        if weight_map is not None:
            for tname, fn in weight_map.items():
                held = self.tensors.get(tname)
                if held is None or held.file != fn:
                    raise CheckpointFormatError(
                        INDEX_FILENAME, f"index maps {tname!r} to {fn!r} but that shard does not hold it"
                    )

    @classmethod
    def open(cls, repo: Repo) -> SafetensorsReader:
        """Open ``model.safetensors``, else the sharded set named by the index, else any ``*.safetensors``."""
        if repo.exists(INDEX_FILENAME):
            weight_map = read_index(repo)
            return cls(repo, sorted(set(weight_map.values())), weight_map)
        if repo.exists("model.safetensors"):
            return cls(repo, ["model.safetensors"])
        files = [f for f in repo.files() if f.endswith(".safetensors") and "/" not in f]
        if not files:
            raise CheckpointFormatError(repo.name, "no .safetensors files found")
        return cls(repo, sorted(files))

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        info = self.tensors.get(name)
        if info is None:
            raise TensorNotFoundError(name, self.name)
        start, end = (info.start, info.end) if rows is None else info.row_range(rows)
        raw = self.repo.source(info.file).read(start, end - start)
        shape = info.shape if rows is None else (rows[1] - rows[0], *info.shape[1:])
        return decode(raw, info.dtype, shape, f"{info.file}:{name}")

    def read_rows(self, name: str, ids: list[int]) -> np.ndarray:
        """Rows ``ids`` (any order) of a 2-D tensor as float32: nearby rows are read as one range
        (:func:`~fingerprint.io.tensors.row_runs`) and only the wanted ones are decoded."""
        info = self.tensors.get(name)
        if info is None:
            raise TensorNotFoundError(name, self.name)
        if len(info.shape) != 2:
            raise CheckpointFormatError(f"{info.file}:{name}", f"rows of a {len(info.shape)}-D tensor")
        n_rows, d = info.shape
        if ids and (min(ids) < 0 or max(ids) >= n_rows):
            raise IndexError(f"{name}: row ids outside [0, {n_rows})")
        row_bytes = info.nbytes // max(n_rows, 1)
        src = self.repo.source(info.file)

        def run(first: int, last: int, picks: np.ndarray) -> np.ndarray:
            start, end = info.row_range((first, last))
            span = np.frombuffer(src.read(start, end - start), dtype=np.uint8).reshape(last - first, row_bytes)
            return decode(span[picks].tobytes(), info.dtype, (len(picks), d), f"{info.file}:{name}")

        # a remote source reads through wider gaps: a round trip costs more than the bytes it saves
        return gather_rows(ids, d, row_bytes, run, int(getattr(src, "gap_bytes", GAP_BYTES)))

    def read_raw(self, name: str) -> tuple[TensorInfo, bytes]:
        info = self.tensors.get(name)
        if info is None:
            raise TensorNotFoundError(name, self.name)
        return info, self.repo.source(info.file).read(info.start, info.nbytes)

    @property
    def bytes_read(self) -> int:
        return sum(self.repo.source(f).bytes_read for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(self.repo.source(f).size for f in self.files)


def read_index(repo: Repo) -> dict[str, str]:
    """Read and validate ``model.safetensors.index.json``: a ``weight_map`` of safe shard names."""
    raw = repo.read_bytes(INDEX_FILENAME, max_bytes=64 * 1024 * 1024)
    index = parse_json_bounded(raw, INDEX_FILENAME)
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise CheckpointFormatError(INDEX_FILENAME, "missing 'weight_map' object")
    weight_map: dict[str, str] = {}
    for tname, fn in index["weight_map"].items():
        if not isinstance(fn, str):
            raise CheckpointFormatError(INDEX_FILENAME, f"weight_map[{tname!r}] is not a string")
        weight_map[tname] = safe_relative_name(fn, INDEX_FILENAME)
    if not weight_map:
        raise CheckpointFormatError(INDEX_FILENAME, "empty weight_map")
    return weight_map


_WRITE_DTYPES = {np.dtype(np.int8): "I8", np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}


def container_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file of ``tensors`` (int8, float16 or float32) and ``metadata``, deterministic: tensors
    in name order, little-endian, the JSON header compact with sorted keys and padded to 8 bytes (what our
    fingerprint and screen files are; read back with :func:`read_header`)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset, blobs = 0, []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _WRITE_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def read_container(src: ByteSource, where: str, key: str, fmt: str, version: int, what: str,
                   version_label: str, hint: str
                   ) -> tuple[dict[str, Any], Callable[[str], np.ndarray], frozenset[str]]:
    """The JSON document under ``__metadata__[key]`` of one of our files (:func:`container_bytes`), checked
    to say ``format: fmt`` at ``version``, a reader of its tensors by name as float64, and their names; every
    fault is one :class:`FingerprintFileError` line (bounded parser, as for checkpoints)."""
    try:
        infos, metadata = read_header(src, where.rsplit("/", 1)[-1])
        raw = metadata.get(key)
        if raw is None:
            raise FingerprintFileError(where, f"no {key} metadata ({hint})")
        doc = parse_json_bounded(raw.encode(), where)
    except CheckpointFormatError as e:
        raise FingerprintFileError(where, e.reason) from e
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise FingerprintFileError(where, f"metadata is not a {what}")
    if doc.get("version") != version:
        raise FingerprintFileError(where, f"{version_label} version {doc.get('version')!r}; this build reads version {version}")

    def arr(name: str) -> np.ndarray:
        if name not in infos:
            raise FingerprintFileError(where, f"tensor {name!r} is missing")
        info = infos[name]
        out: np.ndarray = decode(src.read(info.start, info.nbytes), info.dtype, info.shape, where).astype(np.float64)
        return out

    return doc, arr, frozenset(infos)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary name and a rename: a crash never leaves half a file
    under the real name (fingerprint and screen files)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(p)
    return p
