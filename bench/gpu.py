"""CPU against CUDA: seconds per model to fingerprint and per pair to compare, at Llama-like widths.

    python -m bench.gpu                          # d=2048 and d=4096, 4 layers, cpu and cuda
    python -m bench.gpu --dims 256 --layers 2    # a quick run (what the test does, on the CPU)

The models are synthetic (seeded Gaussian weights of the real shapes, 32 000-token vocabulary, a
fine-tune made by adding 2% noise), read from memory: the figures are the sketch's and the comparison's
math on each device, not the Hub's bandwidth. ``--layers`` layers are sketched and the per-model time is
scaled to the width's usual depth (24 layers at d=2048, 32 at d=4096; sketching is one independent step
per layer). The same run checks that CPU and CUDA agree: the largest gap between their Gram matrices
``F Fᵀ`` (factors are signed eigenvectors, so Grams are what is comparable) and between their scores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fingerprint import device
from fingerprint.canonical import ModelSpec
from fingerprint.screen import Screen, screen_model
from fingerprint.screen import compare as screen_compare
from fingerprint.similarity.lineage import compare_fingerprints
from fingerprint.sketch import Sketch, sketch_model
from fingerprint.tokenizer import Vocab

DEPTH = {2048: 24, 4096: 32}
VOCAB = 32_000


@dataclass
class _Repo:
    name: str


@dataclass
class SyntheticModel:
    """What :func:`sketch_model` reads of a checkpoint, generated from a seed (``noise`` > 0: a fine-tune
    of the seed's model)."""

    d: int
    layers: int
    seed: int = 0
    noise: float = 0.0
    spec: ModelSpec = field(init=False)
    repo: _Repo = field(init=False)
    bytes_read: int = 0
    total_bytes: int = 0

    def __post_init__(self) -> None:
        heads = self.d // 128
        self.spec = ModelSpec("llama", "safetensors", "LlamaForCausalLM", self.layers, self.d, heads, heads, 128,
                              VOCAB, 4 * self.d, False, "half", 128, "rms", False, 0, None)
        self.repo = _Repo(f"synthetic-d{self.d}-{self.seed}-{self.noise}")

    def _w(self, shape: tuple[int, int], *tag: int) -> np.ndarray:
        w = np.random.default_rng([self.seed, *tag]).standard_normal(shape, dtype=np.float32) / np.sqrt(shape[1])
        if self.noise:
            w += self.noise * np.random.default_rng([self.seed, 99, *tag]).standard_normal(shape, dtype=np.float32) \
                / np.sqrt(shape[1])
        return w

    def has(self, role: str, layer: int | None = None) -> bool:
        return role in ("q", "k", "embed")

    def info(self, role: str, layer: int | None = None) -> Any:
        return _Info((self.d, self.d))  # a square projection (what the screen's layer plan counts)

    def qk_tensors(self, layer: int) -> list[Any]:
        return [self.info("q", layer), self.info("k", layer)]

    def vocab(self) -> Vocab:
        return Vocab({f"tok{i}": i for i in range(VOCAB)}, VOCAB, "synthetic", "synthetic")

    def embed_rows(self, ids: list[int]) -> np.ndarray:
        return self._w((VOCAB, self.d), 1)[ids]

    def lm_head_rows(self, ids: list[int]) -> np.ndarray:
        return self._w((VOCAB, self.d), 2)[ids]

    def attention(self, layer: int, fold: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self._w((self.d, self.d), 3, layer), self._w((self.d, self.d), 4, layer)


@dataclass
class _Info:
    shape: tuple[int, int]


def _screen(m: SyntheticModel, dev: str) -> tuple[Screen, float]:
    with device.using(dev):
        t = time.perf_counter()
        sc = screen_model(m, budget=10**15)  # type: ignore[arg-type]  # duck-typed; every layer
        return sc, time.perf_counter() - t


def _sketch(m: SyntheticModel, dev: str) -> tuple[Sketch, float]:
    with device.using(dev):
        t = time.perf_counter()
        sk = sketch_model(m)  # type: ignore[arg-type]  # duck-typed: the calls sketch_model makes
        return sk, time.perf_counter() - t


def _compare(a: Sketch, b: Sketch, dev: str, repeat: int = 3) -> tuple[float, float]:
    with device.using(dev):
        compare_fingerprints(a, b)  # warm-up: kernels, allocator
        t = time.perf_counter()
        for _ in range(repeat):
            r = compare_fingerprints(a, b)
        return r.score, (time.perf_counter() - t) / repeat


def _gram_gap(a: Sketch, b: Sketch) -> float:
    worst = 0.0
    for fa, fb in zip(a.q + a.k, b.q + b.k, strict=True):
        ga, gb = fa @ fa.T, fb @ fb.T
        worst = max(worst, float(np.abs(ga - gb).max() / (np.abs(ga).max() or 1.0)))
    return worst


def bench(d: int, layers: int, devices: list[str]) -> dict[str, Any]:
    base, tuned = SyntheticModel(d, layers, seed=1), SyntheticModel(d, layers, seed=1, noise=0.02)
    row: dict[str, Any] = {"d": d, "layers": layers, "depth": DEPTH.get(d, layers)}
    sketches: dict[str, tuple[Sketch, Sketch]] = {}
    screens: dict[str, Screen] = {}
    for dev in devices:
        screens[dev], ts = _screen(base, dev)
        a, ta = _sketch(base, dev)
        b, _ = _sketch(tuned, dev)
        score, tc = _compare(a, b, dev)
        sketches[dev] = (a, b)
        row[dev] = {"fingerprint_s": ta * row["depth"] / layers, "compare_s": tc, "score": score, "screen_s": ts}
    if len(devices) == 2:
        (a0, b0), (a1, b1) = sketches[devices[0]], sketches[devices[1]]
        row["gram_gap"] = max(_gram_gap(a0, a1), _gram_gap(b0, b1))
        row["score_gap"] = abs(row[devices[0]]["score"] - row[devices[1]]["score"])
        row["screen_agreement"] = screen_compare(screens[devices[0]], screens[devices[1]]).score
    return row


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--layers", type=int, default=4, help="layers sketched (time scaled to the usual depth)")
    a = p.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("no CUDA device here: CPU figures only (run it on a GPU machine for the comparison)")
    else:
        print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    rows = [bench(d, a.layers, devices) for d in a.dims]
    head = "| d | layers (scaled to) | screen s/model " + " | ".join(devices) + " | verification s/model " \
        + " | ".join(devices)
    print(f"\n{head} | compare s/pair {' | '.join(devices)} | speed-up fp / cmp | max Gram gap | score gap |")
    print("|---" * (4 + 3 * len(devices)) + "|---|")
    for r in rows:
        sc = " | ".join(f"{r[dv]['screen_s']:.2f}" for dv in devices)
        fp = sc + " | " + " | ".join(f"{r[dv]['fingerprint_s']:.2f}" for dv in devices)
        cmp = " | ".join(f"{r[dv]['compare_s']:.3f}" for dv in devices)
        up = (f"{r['cpu']['fingerprint_s'] / r['cuda']['fingerprint_s']:.1f}× / "
              f"{r['cpu']['compare_s'] / r['cuda']['compare_s']:.1f}×") if "cuda" in r else "-"
        gaps = (f"{r['gram_gap']:.1e} | {r['score_gap']:.1e}") if "gram_gap" in r else "- | -"
        print(f"| {r['d']} | {r['layers']} ({r['depth']}) | {fp} | {cmp} | {up} | {gaps} |")
    scores = ", ".join(f"d={r['d']}: {r['cpu']['score']:.3f}" for r in rows)
    print(f"\nfine-tune vs base scores (cpu): {scores}")
    print("screen: every layer of the synthetic model (a real one samples as many as 1.8% of its bytes allow: "
          "6 of a 7B's 32), not scaled")
    if len(devices) == 2:
        ok = all(r["gram_gap"] <= 1e-3 and r["score_gap"] <= 1e-3 and r["screen_agreement"] > 0.9999 for r in rows)
        print("screens CPU vs CUDA (CKA): " + ", ".join(f"d={r['d']}: {r['screen_agreement']:.6f}" for r in rows))
        print(f"CPU and CUDA agree (Grams and scores to 1e-3: float32 randomized factors; screens ≥ 0.9999): {ok}")


if __name__ == "__main__":
    main()
