"""Hostile inputs get a clear FingerprintError, never a crash, hang or huge allocation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from fingerprint.canonical import open_model
from fingerprint.errors import CheckpointFormatError, FingerprintError, UnsafePathError
from fingerprint.io.gguf import GGUFReader
from fingerprint.io.safetensors import SafetensorsReader
from fingerprint.io.source import LocalFileSource, LocalRepo


def st_bytes(header: object, data: bytes = b"", raw_header: bytes | None = None, length: int | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def open_st(tmp_path: Path, blob: bytes) -> SafetensorsReader:
    (tmp_path / "model.safetensors").write_bytes(blob)
    return SafetensorsReader.open(LocalRepo(tmp_path))


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def test_good_file_reads(tmp_path: Path) -> None:
    r = open_st(tmp_path, st_bytes(GOOD, np.arange(4, dtype="<f4").tobytes()))
    assert r.read("w").tolist() == [[0, 1], [2, 3]]
    assert r.read("w", rows=(1, 2)).tolist() == [[2, 3]]


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b"\x01\x02\x03", "too short"),
        (st_bytes(GOOD, b"\x00" * 8), "outside the data section"),  # truncated data
        (st_bytes(GOOD, b"\x00" * 16, length=10**6), "larger than the file"),
        (st_bytes(GOOD, b"\x00" * 16, length=2**62), "exceeds"),
        (st_bytes({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}, b"\x00" * 16), "outside"),
        (st_bytes({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [-4, 12]}}, b"\x00" * 16), "outside"),
        (st_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\x00" * 16), "overlap"),
        (st_bytes({"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\x00" * 16), "byte span"),
        (st_bytes({"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}}, b"\x00" * 16), "unknown dtype"),
        (st_bytes({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, b"\x00" * 16), "invalid shape"),
        (st_bytes({"w": {"dtype": "F32", "shape": [50_000, 50_000], "data_offsets": [0, 16]}}, b"\x00" * 16),
         "byte span"),  # a 10 GB claim: rejected without allocating
        (st_bytes(None, b"", raw_header=b'{"w": "\xff\xfe"}'), "UTF-8"),
        (st_bytes(None, b"", raw_header=b"[" * 100_000 + b"]" * 100_000), "nested"),
        (st_bytes(None, b"", raw_header=b"{not json"), "not valid JSON"),
        (st_bytes([1, 2, 3]), "not a JSON object"),
    ],
)
def test_hostile_safetensors(tmp_path: Path, blob: bytes, needle: str) -> None:
    with pytest.raises(CheckpointFormatError) as e:
        r = open_st(tmp_path, blob)
        r.read("w")
    assert needle in str(e.value)


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "a/../../b.safetensors", "C:\\x.safetensors",
                                 "..", "sub//x.safetensors"])
def test_shard_index_rejects_path_traversal(tmp_path: Path, bad: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": bad}}))
    with pytest.raises(UnsafePathError):
        SafetensorsReader.open(LocalRepo(tmp_path))


def test_index_pointing_to_wrong_shard(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(st_bytes(GOOD, b"\x00" * 16))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"other": "a.safetensors"}}))
    with pytest.raises(CheckpointFormatError, match="does not hold it"):
        SafetensorsReader.open(LocalRepo(tmp_path))


def gguf_blob(n_tensors: int = 0, n_kv: int = 1, key_len: int = 4, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + struct.pack("<Q", key_len) + body


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b"GGML" + b"\x00" * 40, "bad magic"),
        (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version"),
        (b"GGUF" + struct.pack("<IQQ", 3, 10**12, 0), "implausible"),
        (gguf_blob(key_len=2**40), "exceeds the limit"),
        (gguf_blob(key_len=100, body=b"abc"), "truncated"),
        (gguf_blob(body=b"arch" + struct.pack("<I", 77)), "invalid GGUF value type"),
        (gguf_blob(body=b"arch" + struct.pack("<IIQ", 9, 4, 2**40)), "exceeds the limit"),
    ],
)
def test_hostile_gguf(tmp_path: Path, blob: bytes, needle: str) -> None:
    p = tmp_path / "m.gguf"
    p.write_bytes(blob)
    with pytest.raises(CheckpointFormatError, match=needle):
        GGUFReader(LocalFileSource(p), "m.gguf")


def test_gguf_tensor_outside_file(tmp_path: Path) -> None:
    name = b"w"
    body = struct.pack("<Q", len(name)) + name + struct.pack("<I", 2) + struct.pack("<QQ", 32, 1000) + struct.pack("<IQ", 0, 0)
    blob = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + body
    p = tmp_path / "m.gguf"
    p.write_bytes(blob + b"\x00" * 64)
    with pytest.raises(CheckpointFormatError, match="outside the file"):
        GGUFReader(LocalFileSource(p), "m.gguf")


def test_truncated_real_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    src = tiny_models["llama"]
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    data = (src / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FingerprintError, match="outside the data section"):
        open_model(tmp_path)


def test_missing_and_malformed_config(tmp_path: Path) -> None:
    with pytest.raises(FingerprintError, match=r"no config\.json"):
        open_model(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(FingerprintError, match="JSON"):
        open_model(tmp_path)
