"""Screens on real weights: does every derivative rank its parent first, on the screen and on the index row?

    python -m bench.real && python -m bench.screen      # SmolLM2-135M, its copies, the tiny zoo's roots

For every model of a ``bench.real`` directory: its screen (time, layers planned, bytes read) and its index
row (:func:`fingerprint.index.screen_vector` of its verification fingerprint). Then every SmolLM2 copy
(the GGUF, each function-preserving attack of the dequantized copy) against its parent and against the
zoo's roots: the screen score, the best other candidate's, and whether the parent ranks first, on the
screen and on the index row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fingerprint.canonical import open_model
from fingerprint.index import screen_vector
from fingerprint.screen import compare, screen_model
from fingerprint.sketch import sketch_model


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.screen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path(__file__).resolve().parent / ".cache" / "real" / "models")
    a = p.parse_args()
    names = sorted(x.name for x in a.models.iterdir())
    sc, vec = {}, {}
    for n in names:
        t = time.perf_counter()
        sc[n] = screen_model(open_model(a.models / n))
        dt = time.perf_counter() - t
        vec[n] = screen_vector(sketch_model(open_model(a.models / n)))
        print(f"{n:32s} screen {dt:.2f} s, layers {sc[n].meta['layers']}, read "
              f"{sc[n].meta['bytes_read'] / 1e6:.1f} of {sc[n].meta['total_bytes'] / 1e6:.1f} MB")
    roots = [n for n in names if n.startswith("zoo-")]
    copies = [n for n in names if n.startswith("smollm2-") and n != "smollm2-dequant"]
    for parent, suspects in (("smollm2-dequant", copies), ("smollm2-q4_1.gguf", ["smollm2-dequant"])):
        for s in suspects:
            scores = {b: compare(sc[b], sc[s]).score for b in [parent, *roots]}
            rows = {b: float(vec[b] @ vec[s]) for b in [parent, *roots]}
            other = max((v for b, v in scores.items() if b != parent), default=0.0)
            print(f"{s:32s} parent {parent}: screen {scores[parent]:.3f} (best other {other:.3f}), first "
                  f"{max(scores, key=lambda b: scores[b]) == parent}; index row {rows[parent]:.3f}, first "
                  f"{max(rows, key=lambda b: rows[b]) == parent}")


if __name__ == "__main__":
    main()
