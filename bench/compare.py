"""``lineage compare`` vs the faithful full-state-dict AWM path: time and peak RSS on one pair.

Builds (cached) a synthetic LLaMA-shaped base in fp16 and a perturbed "fine-tune" of it, with a
word-level tokenizer, then runs in fresh processes, in the same run:

* **lineage**: ``lineage compare --method lineage`` (lazy ranges, folded pair-normalized Grams,
  per-pair null);
* **AWM reference**: both checkpoints loaded whole with ``safetensors.numpy.load_file`` (AWM's
  loader), then the AWM statistic computed from those in-memory state dicts.

Usage: ``python -m bench.compare [--hidden 1024] [--layers 16]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from bench.io import CACHE, build_checkpoint, in_fresh_process


def _tokenizer(path: Path, vocab: int) -> None:
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": None, "decoder": None,
          "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(vocab)}, "unk_token": "w0"}}
    (path / "tokenizer.json").write_text(json.dumps(tj))


def build_pair(d: int, layers: int, ff: int, vocab: int, kv: int) -> tuple[Path, Path]:
    base = build_checkpoint(CACHE / f"cmp-base-{d}x{layers}", d, layers, ff, vocab, kv)
    _tokenizer(base, vocab)
    ft = CACHE / f"cmp-ft-{d}x{layers}"
    if not (ft / "config.json").exists():
        ft.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(1)
        weight_map = {}
        for f in sorted(base.glob("*.safetensors")):
            sd = load_file(str(f))
            out = {k: (v.astype(np.float32) + 0.3 * v.astype(np.float32).std() * rng.standard_normal(v.shape,
                                                                                                    dtype=np.float32)).astype(np.float16)
                   for k, v in sd.items()}
            save_file(out, str(ft / f.name))
            weight_map.update(dict.fromkeys(out, f.name))
        (ft / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        (ft / "config.json").write_text((base / "config.json").read_text())
        _tokenizer(ft, vocab)
    return base, ft


class StateDictReader:
    """A TensorReader over a state dict already loaded in memory (AWM's loading style)."""

    def __init__(self, path: Path) -> None:
        from fingerprint.io.tensors import TensorInfo

        self.name = str(path)
        self.sd: dict[str, np.ndarray] = {}
        for f in sorted(path.glob("*.safetensors")):
            self.sd.update(load_file(str(f)))
        self.tensors = {k: TensorInfo(k, "F16", tuple(v.shape), "", 0, v.nbytes) for k, v in self.sd.items()}
        self.metadata: dict[str, object] = {}
        self.total_bytes = sum(v.nbytes for v in self.sd.values())
        self.bytes_read = self.total_bytes
        self.files: list[str] = []

    def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        v = self.sd[name]
        return (v if rows is None else v[rows[0] : rows[1]]).astype(np.float32)


def _run(which: str, a: str, b: str) -> tuple[float, float, str]:
    t = time.perf_counter()
    if which == "lineage":
        from fingerprint.canonical import open_model
        from fingerprint.similarity import METHODS

        r = METHODS["lineage"](open_model(a), open_model(b))
    else:
        from fingerprint.architectures import resolve_architecture
        from fingerprint.canonical import CanonicalModel
        from fingerprint.io.source import LocalRepo
        from fingerprint.similarity import METHODS

        def load(p: str) -> CanonicalModel:
            cfg = json.loads((Path(p) / "config.json").read_text())
            arch, text_cfg, _ = resolve_architecture(cfg)
            return CanonicalModel(LocalRepo(p), StateDictReader(Path(p)), arch, text_cfg, "safetensors", "LlamaForCausalLM", None)

        r = METHODS["awm"](load(a), load(b))
    return time.perf_counter() - t, r.score, r.verdict


def measure(which: str, a: Path, b: Path) -> tuple[float, float, float, str]:
    """Time, peak RSS (MB), score and verdict of one path, in a fresh process."""
    t, score, verdict, rss_kib = in_fresh_process(_run, which, str(a), str(b))
    return t, rss_kib / 1024, score, verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--ff", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--kv-heads", type=int, default=4)
    a = ap.parse_args()
    base, ft = build_pair(a.hidden, a.layers, a.ff, a.vocab, a.kv_heads)
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    lt, lr, ls, lv = measure("lineage", base, ft)
    at, ar, as_, av = measure("awm", base, ft)
    print(f"pair: synthetic LLaMA-shaped base (d={a.hidden}, L={a.layers}, {a.kv_heads} KV heads, fp16, "
          f"{size / 1e9:.2f} GB each) and a perturbed copy\n")
    print("| path | time (s) | peak RSS (MB) | score | verdict |")
    print("|---|---|---|---|---|")
    print(f"| lineage compare (lazy, method lineage) | {lt:.1f} | {lr:.0f} | {ls:.4f} | {lv} |")
    print(f"| AWM reference (full state dicts, method awm) | {at:.1f} | {ar:.0f} | {as_:.4f} | {av} |")
    print(f"\nratio lineage/AWM: time {lt / at:.2f}, peak RSS {lr / ar:.2f}")


if __name__ == "__main__":
    main()
