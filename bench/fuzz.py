"""Fuzz every parser of untrusted input: valid seeds, mutated; only our typed errors may escape.

    python -m bench.fuzz [--cases 10000] [--seed 0] [--target NAME ...] [--atheris NAME]

Targets: the safetensors reader (header and every tensor), the GGUF reader (header, every tensor
dequantized, the tokenizer in its metadata), ``tokenizer.json``, SentencePiece ``tokenizer.model``,
the ``.lfp`` fingerprint reader, and the Hub's ``model_info`` record parser. Seeds are built here
(small, valid files of each format); each case applies 1-8 mutations (bit flips, byte runs, interesting
integers over length fields, inserts, deletes, truncation, splices, and, for JSON-bearing formats, edits
of the parsed document re-serialized validly). Per case: the exception must be the target's typed
error (or none), the peak traced allocation must stay under the target's bound (``MEM_BASE + MEM_PER_BYTE
× input size``), and the case must finish within ``TIME_BOUND_S``. Crashing inputs are written to
``bench/.cache/fuzz/`` for replay. ``--atheris NAME`` runs one target under atheris (coverage-guided
libFuzzer) instead, when it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import struct
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crawler.errors import CrawlerError
from fingerprint.errors import FingerprintError
from fingerprint.io.source import MAX_SMALL_FILE_BYTES, MemorySource

TIME_BOUND_S = 2.0
MEM_BASE = 32 * 2**20  # bytes any case may allocate: numpy/json working sets of tiny inputs
MEM_PER_BYTE = 64  # a dequantized tensor is at most 4 bytes/weight from ≥ 2.5 bits/weight (13×), plus copies
CRASH_DIR = Path(__file__).parent / ".cache" / "fuzz"
INTERESTING = (0, 1, 2, 7, 8, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1,
               2**64 - 1)


class Hang(Exception):
    """A case ran past :data:`TIME_BOUND_S`."""


class MemoryRepo:
    """A :class:`~fingerprint.io.source.Repo` of in-memory files."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.name, self.files_ = "fuzz", files

    def exists(self, filename: str) -> bool:
        return filename in self.files_

    def read_bytes(self, filename: str, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
        return self.files_[filename][:max_bytes]

    def source(self, filename: str) -> MemorySource:
        return MemorySource(filename, self.files_[filename])

    def files(self) -> list[str]:
        return sorted(self.files_)


# -- seeds ---------------------------------------------------------------------------------------
def _safetensors_seed() -> bytes:
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    return save({"model.embed_tokens.weight": rng.standard_normal((16, 8)).astype(np.float16),
                 "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((8, 8)).astype(np.float32),
                 "model.norm.weight": np.ones(8, np.float32), "steps": np.arange(4, dtype=np.int64)},
                metadata={"format": "pt"})


def _gguf_seed() -> bytes:
    import tempfile

    from gguf import GGMLQuantizationType as QT
    from gguf import GGUFWriter, quants

    from zoo.convert import quantize_q4_k

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.gguf"
        w = GGUFWriter(str(path), "llama")
        w.add_block_count(1)
        w.add_embedding_length(256)
        w.add_tokenizer_model("llama")
        w.add_token_list([f"tok{i}" for i in range(8)])
        w.add_token_types([1, 2, 3, 1, 1, 1, 1, 1])
        x = rng.standard_normal((8, 256)).astype(np.float32)
        w.add_tensor("token_embd.weight", x.astype(np.float16))
        w.add_tensor("blk.0.attn_q.weight", quants.quantize(x[:4], QT.Q8_0), raw_dtype=QT.Q8_0)
        w.add_tensor("blk.0.attn_k.weight", quantize_q4_k(x[:4]), raw_dtype=QT.Q4_K)
        w.add_tensor("output_norm.weight", np.ones(256, np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def _tokenizer_json_seeds() -> list[bytes]:
    bpe = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġthe": 3}, "merges": ["a b"]},
           "added_tokens": [{"id": 4, "content": "<s>", "special": True}, {"id": 5, "content": "extra"}],
           "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}
    uni = {"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["▁the", -1.5], ["s", -2.0]]},
           "decoder": {"type": "Metaspace", "replacement": "▁"}}
    return [json.dumps(bpe).encode(), json.dumps(uni, ensure_ascii=False).encode()]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _sentencepiece_seed() -> bytes:
    def piece(text: str, score: float, ptype: int) -> bytes:
        raw = text.encode()
        body = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + struct.pack("<f", score) + b"\x18" + _varint(ptype)
        return b"\x0a" + _varint(len(body)) + body

    trainer = b"\x12\x04\x08\x01\x10\x02"  # field 2 (trainer spec), ignored by the reader
    return b"".join(piece(t, -float(i), 2 if t == "<unk>" else 1) for i, t in
                    enumerate(["<unk>", "▁the", "▁a", "<0x0A>", "s"])) + trainer


def _lfp_seed() -> bytes:
    return (Path(__file__).parents[1] / "tests" / "data" / "golden-tiny-llama.lfp").read_bytes()


def _hub_record_seed() -> dict[str, Any]:
    """A ``model_info(files_metadata=True)`` body shaped as the real recorded payload (hub-fidelity #17)."""
    return {
        "_id": "65d3a1b2c3d4e5f601234567", "id": "org/model", "modelId": "org/model", "author": "org",
        "sha": "0123456789abcdef0123456789abcdef01234567", "lastModified": "2026-11-01T00:02:00.000Z",
        "createdAt": "2026-11-01T00:01:00.000Z", "private": False, "gated": False, "disabled": False,
        "downloads": 10, "likes": 1, "library_name": "transformers", "pipeline_tag": "text-generation",
        "tags": ["transformers", "safetensors", "license:apache-2.0", "base_model:org/base",
                 "base_model:finetune:org/base"],
        "cardData": {"license": "apache-2.0", "base_model": "org/base", "base_model_relation": "finetune"},
        "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
        "siblings": [{"rfilename": "config.json", "size": 600, "blobId": "ab" * 20},
                     {"rfilename": "model.safetensors", "size": 4096, "blobId": "cd" * 20,
                      "lfs": {"sha256": "ef" * 32, "size": 4096, "pointerSize": 134}}],
        "safetensors": {"parameters": {"F16": 2048}, "total": 2048}, "usedStorage": 4696, "spaces": []}


# -- targets -------------------------------------------------------------------------------------
def _run_safetensors(data: bytes) -> None:
    from fingerprint.io.safetensors import SafetensorsReader

    r = SafetensorsReader(MemoryRepo({"model.safetensors": data}), ["model.safetensors"])
    for name in r.tensors:
        r.read(name)


def _run_gguf(data: bytes) -> None:
    from fingerprint.io.gguf import GGUFReader
    from fingerprint.tokenizer import vocab_from_gguf

    r = GGUFReader(MemorySource("model.gguf", data), "model.gguf")
    for name in r.tensors:
        r.read(name)
    vocab_from_gguf(r.metadata, "model.gguf")


def _run_tokenizer_json(data: bytes) -> None:
    from fingerprint.tokenizer import vocab_from_tokenizer_json

    vocab_from_tokenizer_json(data)


def _run_sentencepiece(data: bytes) -> None:
    from fingerprint.tokenizer import vocab_from_sentencepiece

    vocab_from_sentencepiece(data)


def _run_lfp(data: bytes) -> None:
    from fingerprint.sketch import read_sketch

    read_sketch(MemorySource("fuzz.lfp", data), "fuzz.lfp")


def _run_hub_record(data: bytes) -> None:
    from crawler.records import from_payload

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the client never builds a record from it
    from_payload(doc)


@dataclass(frozen=True)
class Target:
    """A parser under test: how to build its seeds, run one input, and which errors are its own."""

    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    json_seed: bool = False  # the input is JSON: also mutate the parsed document


TARGETS = {t.name: t for t in [
    Target("safetensors", lambda: [_safetensors_seed()], _run_safetensors, (FingerprintError,)),
    Target("gguf", lambda: [_gguf_seed()], _run_gguf, (FingerprintError,)),
    Target("tokenizer.json", _tokenizer_json_seeds, _run_tokenizer_json, (FingerprintError,), json_seed=True),
    Target("sentencepiece", lambda: [_sentencepiece_seed()], _run_sentencepiece, (FingerprintError,)),
    Target("lfp", lambda: [_lfp_seed()], _run_lfp, (FingerprintError,)),
    Target("hub-record", lambda: [json.dumps(_hub_record_seed()).encode()], _run_hub_record, (CrawlerError,),
           json_seed=True),
]}


# -- mutation ------------------------------------------------------------------------------------
def _mutate_doc(rng: random.Random, doc: Any, depth: int = 0) -> Any:
    """One edit somewhere in a JSON document: a value replaced by another type, a key dropped or added."""
    odd: list[Any] = [None, True, -1, 0, 2**63, 1e308, "", "x" * rng.choice((1, 300, 70_000)), [], {}, [[[[]]]],
                      "../../etc/passwd", "a/b/../../c", "\u0000", "\ud800", {"__proto__": 1}]
    if isinstance(doc, dict) and doc and rng.random() < 0.8:
        k = rng.choice(list(doc))
        roll = rng.random()
        if roll < 0.2:
            return {a: b for a, b in doc.items() if a != k}
        if roll < 0.6:
            return {**doc, k: _mutate_doc(rng, doc[k], depth + 1)}
        return {**doc, k: rng.choice(odd)}
    if isinstance(doc, list) and doc and rng.random() < 0.8:
        i = rng.randrange(len(doc))
        out = list(doc)
        out[i] = _mutate_doc(rng, doc[i], depth + 1) if rng.random() < 0.6 else rng.choice(odd)
        if rng.random() < 0.1:
            out = out * rng.choice((2, 1000))
        return out
    if isinstance(doc, str) and rng.random() < 0.5:
        return doc[::-1] if rng.random() < 0.5 else doc + rng.choice(["/..", "\n", "é", ":x:y"])
    if isinstance(doc, (int, float)) and not isinstance(doc, bool) and rng.random() < 0.5:
        return rng.choice(INTERESTING) * rng.choice((1, -1))
    return rng.choice(odd)


def _safetensors_header_edit(rng: random.Random, data: bytes) -> bytes:
    """Edit the JSON header of a safetensors file and re-frame it (length prefix kept consistent)."""
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return data
    raw = json.dumps(_mutate_doc(rng, header)).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def mutate(rng: random.Random, seed: bytes, target: Target, seeds: list[bytes]) -> bytes:
    """1-8 random mutations of ``seed``."""
    data = bytearray(seed)
    if target.json_seed and rng.random() < 0.6:
        try:
            return json.dumps(_mutate_doc(rng, json.loads(seed)), ensure_ascii=rng.random() < 0.5).encode()
        except (ValueError, UnicodeEncodeError):
            pass
    if target.name in ("safetensors", "lfp") and rng.random() < 0.4:
        data = bytearray(_safetensors_header_edit(rng, bytes(data)))
    for _ in range(rng.randint(1, 8)):
        if not data:
            data = bytearray(rng.choice(seeds))
        roll, pos = rng.random(), rng.randrange(len(data))
        if roll < 0.25:
            data[pos] ^= 1 << rng.randrange(8)
        elif roll < 0.45:  # an interesting integer over a length/count/offset field
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(INTERESTING) % (1 << (8 * width))
            data[pos:pos + width] = value.to_bytes(width, "little")
        elif roll < 0.6:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif roll < 0.75:
            del data[pos:pos + rng.randint(1, 64)]
        elif roll < 0.85:
            del data[pos:]
        elif roll < 0.95:  # splice in a chunk of another seed
            other = rng.choice(seeds)
            a = rng.randrange(len(other))
            data[pos:pos] = other[a:a + rng.randint(1, 256)]
        else:
            data[pos:pos + 1] = bytes([rng.randrange(256)]) * rng.randint(2, 4096)
    return bytes(data)


# -- running -------------------------------------------------------------------------------------
@dataclass
class Report:
    target: str
    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: list[tuple[str, Path | None]] = field(default_factory=list)  # every failing case, saved
    errors: int = 0  # cases that raised something other than the target's typed errors
    hangs: int = 0
    over_memory: int = 0
    slowest_s: float = 0.0
    peak_ratio: float = 0.0  # the largest peak allocation / bound
    peak_bytes: int = 0


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def run_case(target: Target, data: bytes, report: Report, save: bool = True) -> None:
    """One input: outcome, time and peak allocation into ``report``."""
    report.cases += 1
    bound = MEM_BASE + MEM_PER_BYTE * len(data)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_BOUND_S)
    t0 = time.perf_counter()
    problem = None
    try:
        target.run(data)
        report.accepted += 1
    except Hang:
        report.hangs += 1
        problem = "hang"
    except target.allowed:
        report.rejected += 1
    except BaseException as e:  # the point: anything else is a crash
        if isinstance(e, KeyboardInterrupt):
            raise
        problem = f"{type(e).__name__}: {str(e)[:200]}"
        report.errors += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    report.slowest_s = max(report.slowest_s, time.perf_counter() - t0)
    peak = tracemalloc.get_traced_memory()[1] - before
    report.peak_ratio = max(report.peak_ratio, peak / bound)
    report.peak_bytes = max(report.peak_bytes, peak)
    if peak > bound:
        report.over_memory += 1
        problem = problem or f"allocated {peak:,} bytes, bound {bound:,}"
    if problem is not None and problem != "hang":
        path = None
        if save:
            CRASH_DIR.mkdir(parents=True, exist_ok=True)
            path = CRASH_DIR / f"{target.name}-{report.cases}.bin"
            path.write_bytes(data)
        report.crashes.append((problem, path))


def fuzz(target: Target, cases: int, seed: int = 0, save: bool = True) -> Report:
    """``cases`` mutated inputs of ``target`` (the seeds themselves first)."""
    rng = random.Random(f"{target.name}:{seed}")
    seeds = target.seeds()
    report = Report(target.name)
    for s in seeds:  # warm up outside the alarm: an alarm inside a first `import torch` breaks torch
        target.run(s)
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        for s in seeds:
            run_case(target, s, report, save)
        while report.cases < cases:
            run_case(target, mutate(rng, rng.choice(seeds), target, seeds), report, save)
    finally:
        if not started:
            tracemalloc.stop()
    return report


def _atheris(name: str) -> None:
    try:
        import atheris  # type: ignore[import-not-found]  # optional: coverage-guided fuzzing where it installs
    except ImportError:
        raise SystemExit("atheris is not installed (pip install atheris)") from None
    target = TARGETS[name]

    def one(data: bytes) -> None:
        with contextlib.suppress(target.allowed):
            target.run(data)

    corpus = CRASH_DIR / f"corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(target.seeds()):
        (corpus / f"seed{i}").write_bytes(s)
    for s in target.seeds():  # import what the target runs before instrumenting everything loaded
        with contextlib.suppress(*target.allowed):
            target.run(s)
    atheris.instrument_all()  # coverage feedback for every loaded Python function (our parsers included)
    atheris.Setup([sys.argv[0], str(corpus), *sys.argv[3:]], one)
    atheris.Fuzz()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", action="append", choices=sorted(TARGETS))
    p.add_argument("--atheris", choices=sorted(TARGETS), help="run one target under atheris (libFuzzer flags after it)")
    a, _ = p.parse_known_args()
    warnings.simplefilter("ignore")  # NaN/overflow warnings from mutated tensor data are expected
    if a.atheris:
        _atheris(a.atheris)
        return
    reports = []
    print(f"{a.cases} cases per target, seed {a.seed}, time bound {TIME_BOUND_S} s, memory bound "
          f"{MEM_BASE // 2**20} MiB + {MEM_PER_BYTE} x input bytes")
    print("\n| target | cases | crashes | hangs | over memory | rejected (typed) | accepted | slowest ms | "
          "peak alloc (KiB) | peak / bound |\n|---|---|---|---|---|---|---|---|---|---|")
    for name in a.target or sorted(TARGETS):
        t0 = time.perf_counter()
        r = fuzz(TARGETS[name], a.cases, a.seed)
        reports.append(r)
        print(f"| {name} | {r.cases} | {r.errors} | {r.hangs} | {r.over_memory} | {r.rejected} | {r.accepted} | "
              f"{1000 * r.slowest_s:.1f} | {r.peak_bytes / 1024:,.0f} | {r.peak_ratio:.3f} |  "
              f"<!-- {time.perf_counter() - t0:.0f} s -->", flush=True)
    for r in reports:
        for problem, path in r.crashes[:5]:
            print(f"{r.target}: {problem} ({path})")
    raise SystemExit(1 if any(r.crashes or r.hangs for r in reports) else 0)


if __name__ == "__main__":
    main()
