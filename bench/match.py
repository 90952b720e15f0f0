"""Fingerprint index benchmark: file size, agreement with full checkpoints, match time vs N, recall.

    python -m bench.match [--zoo DIR] [--negatives roots|all] [--ranks auto 64 32]
    python -m bench.match --real bench/.cache/real --ranks auto 64   # part 2 only, on real checkpoints

1. Fingerprint size as a function of d and L (formula checked against real files), extrapolated to a
   LLaMA-2-7B shape (d=4096, L=32, 32k vocabulary, untied head), at the default rank (``auto``: as many
   components as a 16 MiB factor budget allows, at least 64) and at fixed ranks.
2. Agreement: for every labelled pair of the zoo, the score from two fingerprint files vs the score from
   the two full checkpoints (max |Δ|, identical verdicts), for each factor rank.
3. For one suspect against N = 10 … 1,000,000 indexed bases (synthetic bases: random sketches of the
   zoo's shape, so only screening grows with N; the shortlist is scored in full): the time to open the
   index, to add one entry (its fingerprint file already stored: the index's own cost) and the bytes
   that add writes (``wchar`` of /proc/self/io: every write(2), SQLite's included), the match time, and
   the index's bytes per entry (without the fingerprint files).
4. Shortlist recall: the zoo's roots plus 1,000 synthetic decoys indexed; does every zoo model's true root
   survive screening?
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.eval import read_pairs, zoo_pairs
from fingerprint.canonical import open_model
from fingerprint.index import Facts, Index
from fingerprint.similarity.lineage import compare_fingerprints, compare_lineage
from fingerprint.sketch import DEFAULT_ANCHORS, Sketch, auto_rank, load, save, sketch_model, truncate
from zoo.manifest import read_manifest


def size_formula(d: int, layers: int, q_rows: int, k_rows: int, anchors: int, rank: int, untied: bool) -> int:
    """Bytes of a fingerprint file, without the JSON header: int8 anchor rows (+ head rows when untied) and
    their fp16 row scales, int8 Q and K factors with fp16 column scales, fp32 prefilter."""
    per_anchor_matrix = anchors * d + 2 * anchors
    cols = min(rank, q_rows) + min(rank, k_rows)
    factors = layers * (d + 2) * cols
    return per_anchor_matrix * (2 if untied else 1) + factors + layers * 2 * 16 * 4


def synthetic(like: Sketch, seed: int) -> Sketch:
    """A random sketch with the same shape and anchor tokens as ``like`` (an unrelated base)."""
    g = torch.Generator().manual_seed(seed)
    d = like.width
    qs, ks, tails, pre = [], [], [], []
    for fq, fk in zip(like.q, like.k):
        a, ta, pa = truncate(torch.randn(d, fq.shape[1], generator=g, dtype=torch.float64), fq.shape[1])
        b, tb, pb = truncate(torch.randn(d, fk.shape[1], generator=g, dtype=torch.float64), fk.shape[1])
        qs.append(a.numpy())
        ks.append(b.numpy())
        tails.append((ta, tb))
        pre.append(np.stack([pa, pb]))
    emb = torch.randn(len(like.keys), d, generator=g, dtype=torch.float64).numpy()
    head = None if like.lm_head is None else torch.randn(len(like.keys), d, generator=g, dtype=torch.float64).numpy()
    return Sketch({**like.meta, "source": f"synthetic-{seed}"}, list(like.keys), emb, head, qs, ks, tails,
                  np.stack(pre).astype(np.float32))


def replicate(idx: Index, items: list[tuple[str | Path, str | None, str | None]], n: int) -> None:
    """An index of ``n`` entries from ``items``: the files are added once, then their entries and screen rows
    are repeated under new names (decoy-i), 50,000 to a transaction, up to ``n`` (the screen cost is what
    grows with ``n``)."""
    from dataclasses import replace as dc_replace

    from fingerprint.index import Facts

    added = idx.add_many(items)
    decoys = [e for e in added if e.name.startswith("decoy-")]
    rows = idx.db.rows()
    first = len(added) - len(decoys)
    screen, tokens = np.array(rows.screen[first:len(added)]), np.array(rows.tokens[first:len(added)])
    chunk = 50_000
    for start in range(0, n - len(added), chunk):
        ids = range(start, min(n - len(added), start + chunk))
        pick = np.fromiter((i % len(decoys) for i in ids), np.int64, len(ids))
        news = [dc_replace(decoys[i % len(decoys)], name=f"decoy-{len(decoys) + i}", family=f"decoy-{len(decoys) + i}",
                           facts=Facts(published_ms=10_000 + i)) for i in ids]
        idx.db.put(news, screen[pick], tokens[pick])


def io_written() -> int:
    """Bytes this process has passed to write(2) so far (``wchar`` of /proc/self/io; 0 where there is none)."""
    try:
        return int(next(x for x in Path("/proc/self/io").read_text().split("\n") if x.startswith("wchar")).split()[1])
    except (OSError, StopIteration):
        return 0


def agreement(root: Path, pairs: list[tuple[str, str, int, str]], ranks: list[str], tmp: Path) -> list[list[str]]:
    names = sorted({x for p in pairs for x in p[:2]})
    files = {r: {n: save(sketch_model(open_model(root / n), rank="auto" if r == "auto" else int(r)), tmp / f"r{r}" / f"{n}.lfp")
                 for n in names} for r in ranks}
    sizes = {r: np.mean([f.stat().st_size for f in files[r].values()]) for r in ranks}
    full = {}
    for a, b, _, _ in pairs:
        c = compare_lineage(open_model(root / a), open_model(root / b))
        full[(a, b)] = (c.score, c.verdict)
    rows = []
    for r in ranks:
        sk = {n: load(f) for n, f in files[r].items()}
        deltas, same = [], 0
        t = time.perf_counter()
        for a, b, _, _ in pairs:
            c = compare_fingerprints(sk[a], sk[b])
            deltas.append(abs(c.score - full[(a, b)][0]))
            same += c.verdict == full[(a, b)][1]
        per = (time.perf_counter() - t) / len(pairs)
        stored = max(int(load(f).meta["rank"]) for f in files[r].values())
        rows.append([f"{r} (stored ≤ {stored})", f"{sizes[r] / 1e3:.1f} KB", f"{max(deltas):.5f}", f"{np.mean(deltas):.5f}", f"{same}/{len(pairs)}",
                     f"{per * 1000:.1f} ms"])
    return rows


def main() -> None:
    from lineage.cli.output import table
    from zoo.build import default_dir

    p = argparse.ArgumentParser(prog="python -m bench.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", type=Path, default=None)
    p.add_argument("--negatives", choices=["roots", "all"], default="roots")
    p.add_argument("--ranks", nargs="+", default=["auto", "64"], help="factor ranks to compare: integers or 'auto'")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    p.add_argument("--skip-agreement", action="store_true", help="skip part 2 (the slowest)")
    p.add_argument("--real", type=Path, default=None,
                   help="a bench.real directory: run only the agreement part on its pairs (real spectra, wider models)")
    a = p.parse_args()
    if a.real:
        real_pairs = [x for x in read_pairs(a.real / "pairs.txt") if all((a.real / "models" / n).exists() for n in x[:2])]
        with tempfile.TemporaryDirectory() as tmpd:
            print(f"2. Fingerprint vs full checkpoints on {len(real_pairs)} pairs of {a.real}")
            print(table(agreement(a.real / "models", real_pairs, a.ranks, Path(tmpd)),
                        ["rank", "mean file", "max |Δ|", "mean |Δ|", "same verdict", "per pair"]))
        return
    root = a.zoo or default_dir("small")
    man = read_manifest(root)
    pairs = zoo_pairs(man, a.negatives)

    print(f"1. Fingerprint size ({DEFAULT_ANCHORS} anchors max, untied head, int8 factors)")
    rows = []
    for d, layers, vocab, kv_rows, label in ((64, 3, 512, 64, "tiny zoo"), (256, 4, 2048, 256, "small zoo"),
                                             (576, 30, 49152, 192, "SmolLM2-135M"), (2048, 16, 128256, 512, "Llama-3.2-1B"),
                                             (4096, 32, 32000, 4096, "LLaMA-2-7B"), (8192, 80, 32000, 1024, "LLaMA-2-70B")):
        auto = auto_rank(d, layers)
        sizes = [size_formula(d, layers, d, kv_rows, min(DEFAULT_ANCHORS, vocab), r, True) for r in (auto, 64, 32)]
        rows.append([label, d, layers, f"{min(auto, d)}{' (exact)' if auto >= d else ''}", *(f"{x / 1e6:.2f} MB" for x in sizes)])
    print(table(rows, ["model", "d", "L", "default rank", "size (default)", "size (rank 64)", "size (rank 32)"]))
    real = save(sketch_model(open_model(root / man.models[0].path)), Path(tempfile.mkdtemp()) / "x.lfp")
    sk = load(real)
    n_body = size_formula(sk.width, sk.num_layers, sk.q[0].shape[1], sk.k[0].shape[1], len(sk.keys), 10**9, sk.lm_head is not None)
    print(f"check: {man.models[0].name} file {real.stat().st_size:,} B = formula {n_body:,} B + header "
          f"{real.stat().st_size - n_body:,} B (JSON incl. anchor strings)\n")

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        print(f"2. Fingerprint vs full checkpoints on {len(pairs)} labelled pairs of the {man.size} zoo "
              f"(negatives: {a.negatives})")
        if a.skip_agreement:
            print("(skipped: --skip-agreement)")
        else:
            print(table(agreement(root, pairs, a.ranks, tmp), ["rank", "mean file", "max |Δ|", "mean |Δ|", "same verdict", "per pair"]))
        print()

        roots = [m for m in man if m.is_base]
        base_files = {m.name: save(sketch_model(open_model(root / m.path)), tmp / "bases" / f"{m.name}.lfp") for m in roots}
        like = load(next(iter(base_files.values())))
        decoys = [save(synthetic(like, 10_000 + i), tmp / "decoys" / f"d{i}.lfp") for i in range(50)]
        suspect = sketch_model(open_model(root / "llama-a-sft"))
        print("3. One suspect (llama-a-sft) against N indexed bases: open, add one entry, match (shortlist 8 "
              "scored in full)")
        rows = []
        extra = [save(synthetic(like, 20_000 + i), tmp / "extra" / f"x{i}.lfp") for i in range(10)]
        Index(tmp / "warm").add_many([(f, f"x{i}", None) for i, f in enumerate(extra)])  # their files: stored once
        for n in a.sizes:
            root_n = tmp / f"idx{n}"
            idx = Index(root_n)
            items: list[tuple[str | Path, str | None, str | None]] = [(f, name, name) for name, f in base_files.items()]
            items += [(decoys[i % len(decoys)], f"decoy-{i}", f"decoy-{i}") for i in range(max(0, n - len(items)))]
            if n <= 10_000:
                idx.add_many(items[:n])
            else:  # past 10k, adding file by file costs hours: replicate the entries of the 50 decoy files
                replicate(idx, items[:len(base_files) + len(decoys)], n)
            idx.close()
            t = time.perf_counter()
            idx = Index(root_n)  # reopen: time includes nothing cached from building
            opened = time.perf_counter() - t
            adds, written = [], []
            for i, f in enumerate(extra):  # files already in the store: what the index itself costs
                w0, t = io_written(), time.perf_counter()
                idx.add(f, f"new-{i}", f"new-{i}", facts=Facts(key=f"k-new-{i}", published_ms=20_000 + i))
                adds.append(time.perf_counter() - t)
                written.append(io_written() - w0)
            times, screens = [], []
            for _ in range(5):
                t = time.perf_counter()
                res, stats = idx.match(suspect)
                times.append(time.perf_counter() - t)
                screens.append(stats["screen_seconds"])
            disk = sum(f.stat().st_size for f in root_n.iterdir() if f.is_file())
            rows.append([f"{n:,}", f"{opened * 1000:.0f} ms", f"{np.median(adds) * 1000:.1f} ms",
                         f"{np.median(written) / 1e3:.1f} KB", f"{disk / n:,.0f} B", f"{np.median(screens) * 1000:.0f} ms",
                         f"{np.median(times) * 1000:.0f} ms", res[0].family, f"{res[0].score:.3f}"])
            idx.close()
            shutil.rmtree(root_n)
        print(table(rows, ["N bases", "open", "add one entry (median of 10)", "written per add",
                           "index bytes/entry (no .lfp)", "screen", "match total (median of 5)", "top family", "score"]))
        print()

        print("4. Shortlist recall: zoo roots + 1,000 decoys indexed, shortlist 8")
        idx = Index(tmp / "recall")
        items = [(f, name, name) for name, f in base_files.items()]
        items += [(decoys[i % len(decoys)], f"decoy-{i}", f"decoy-{i}") for i in range(1000)]
        idx.add_many(items)
        hits, total, worst = 0, 0, 0
        for m in man:
            if m.is_base:
                continue
            sk2 = sketch_model(open_model(root / m.path))
            short = [name for name, _, _ in idx.screen(sk2, 8)]
            for r in m.roots:
                total += 1
                if r in short:
                    hits += 1
                    worst = max(worst, short.index(r) + 1)
        print(f"true root in the shortlist: {hits}/{total} (worst rank {worst} of 8)")


if __name__ == "__main__":
    main()
