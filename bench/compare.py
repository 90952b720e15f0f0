"""``lineage compare`` vs AWM as its authors publish it: time and peak RSS per pair, both directions.

Builds (cached under ``bench/.cache``) a synthetic LLaMA-shaped fp16 base and a perturbed "fine-tune" of it
at each width, with a word-level tokenizer, then runs every path as a whole process (interpreter start and
imports included), in the same run:

* **lineage**: the ``lineage compare A B --json`` command (the streamed float32 pairwise path, closed-form
  null), with its own per-phase timings;
* **AWM (authors)**: :func:`awm_authors`, the authors' published code path (both state dicts loaded whole
  with ``safetensors.torch.load_file``, float32 Grams one layer at a time, no null; |Z| from their fixed
  constants). The baseline the ratios are taken against;
* **AWM + null, float64** (``--faithful``, an extra column): the AWM statistic with dense float64 Grams of
  every layer and a 24-draw permutation null, our heavier variant (the baseline before).

It also checks the lineage score against the float64 sketch path on the same anchors (exact factors,
no stored-precision rounding), so the speed does not come from a different statistic.

``--sparse`` writes checkpoints whose tensors a fingerprint never reads (V, O, MLP) as file holes: the
files have the full size (a 7B pair is 2 × 13.5 GB) but take little disk; AWM is then not run (its two
state dicts would not fit in memory here).

Usage: ``python -m bench.compare [--hidden 1024 2048] [--layers 16] [--repeat 3]``;
``python -m bench.compare --hidden 4096 --layers 32 --kv-heads 8 --ff 11008 --sparse`` (7B-shaped).
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from bench import provenance
from bench.io import CACHE, build_checkpoint, llama_shapes

FINGERPRINT_ROLES = ("embed_tokens", "lm_head", "q_proj", "k_proj", "norm")


def _tokenizer(path: Path, vocab: int) -> None:
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": None, "decoder": None,
          "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(vocab)}, "unk_token": "w0"}}
    (path / "tokenizer.json").write_text(json.dumps(tj))


def _config(d: int, layers: int, ff: int, vocab: int, kv: int) -> str:
    return json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d,
                       "num_hidden_layers": layers, "num_attention_heads": d // 64, "num_key_value_heads": kv,
                       "intermediate_size": ff, "vocab_size": vocab, "tie_word_embeddings": False, "torch_dtype": "float16"})


def build_sparse(out: Path, d: int, layers: int, ff: int, vocab: int, kv: int, noise: float | None) -> Path:
    """One fp16 safetensors file with random fingerprint tensors and holes (zeros) for the rest.

    ``noise`` None writes the base (seed 0); a float writes a "fine-tune": the base's tensors plus that
    many standard deviations of Gaussian noise (seed 1), so base and fine-tune share their weights.
    """
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    names = llama_shapes(d, layers, ff, vocab, kv)
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in names:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    base_rng, noise_rng = np.random.default_rng(0), np.random.default_rng(1)
    with (out / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        start = f.tell()
        for name, shape in names:
            lo = header[name]["data_offsets"][0]
            if not any(r in name for r in FINGERPRINT_ROLES):
                continue  # a hole: the fingerprint never reads it
            f.seek(start + lo)
            if len(shape) == 1:
                w = np.ones(shape, np.float32)
            else:
                w = base_rng.standard_normal(shape, dtype=np.float32) * 0.02
                if noise is not None:
                    w += noise * 0.02 * noise_rng.standard_normal(shape, dtype=np.float32)
            f.write(w.astype(np.float16).tobytes())
        f.truncate(start + offset)
    (out / "config.json").write_text(_config(d, layers, ff, vocab, kv))
    _tokenizer(out, vocab)
    return out


def build_pair(d: int, layers: int, ff: int, vocab: int, kv: int, sparse: bool = False) -> tuple[Path, Path]:
    tag = f"{d}x{layers}" + ("-sparse" if sparse else "")
    if sparse:
        return (build_sparse(CACHE / f"cmp-base-{tag}", d, layers, ff, vocab, kv, None),
                build_sparse(CACHE / f"cmp-ft-{tag}", d, layers, ff, vocab, kv, 0.3))
    base = build_checkpoint(CACHE / f"cmp-base-{tag}", d, layers, ff, vocab, kv)
    _tokenizer(base, vocab)
    ft = CACHE / f"cmp-ft-{tag}"
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


AWM_NEG_MEAN, AWM_NEG_STD = 0.00375, 0.0028
"""The negative-pair mean and deviation the AWM authors' ``main.py`` hard-codes; it prints |Z| from them."""


def awm_authors(a: str, b: str) -> tuple[float, float]:
    """AWM as its authors publish it (LUMIA-Group/AWM at bc20ff8, read for ``shared/docs/fingerprint-methods.md``
    §1; reimplemented from that description): both state dicts loaded whole with ``safetensors.torch.load_file``,
    shared tokens by raw string, a LAP (``scipy.optimize.linear_sum_assignment``) on ``1 − |cos|`` of the
    embedding columns, then per layer i ↔ i the unbiased linear CKA of the aligned input Grams of W_Q and
    W_K in float32 (centring means in float64), no null. Returns ``(score, |Z|)`` with
    ``|Z| = |s − 0.00375| / 0.0028``; the code has no decision threshold."""
    import re

    import torch
    from safetensors.torch import load_file as load_torch
    from scipy.optimize import linear_sum_assignment

    def state(p: str) -> dict[str, torch.Tensor]:
        sd: dict[str, torch.Tensor] = {}
        for f in sorted(Path(p).glob("*.safetensors")):
            sd.update(load_torch(str(f)))
        return sd

    def vocab(p: str) -> dict[str, int]:
        v: dict[str, int] = json.loads((Path(p) / "tokenizer.json").read_text())["model"]["vocab"]
        return v

    def qk(sd: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        layer = re.compile(r"\.(layers|h|blocks)\.(\d+)\.")
        q: dict[int, torch.Tensor] = {}
        k: dict[int, torch.Tensor] = {}
        for name, w in sd.items():
            m = layer.search(name)
            if m and "model.layers" in name and name.endswith("self_attn.q_proj.weight"):
                q[int(m.group(2))] = w
            elif m and "model.layers" in name and name.endswith("self_attn.k_proj.weight"):
                k[int(m.group(2))] = w
        return [q[i] for i in sorted(q)], [k[i] for i in sorted(k)]

    def center(g: torch.Tensor) -> torch.Tensor:
        n = g.shape[0]
        g = g.clone()
        g.fill_diagonal_(0)
        means = g.sum(dim=0, dtype=torch.float64) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[:, None].to(g.dtype)
        g -= means[None, :].to(g.dtype)
        g.fill_diagonal_(0)
        return g

    def cka(x: torch.Tensor, y: torch.Tensor) -> float:
        kx, ky = center(x.T @ x), center(y.T @ y)
        hxy, hxx, hyy = float((kx * ky).sum()), float((kx * kx).sum()), float((ky * ky).sum())
        return 0.0 if hxx < 1e-8 or hyy < 1e-8 else hxy / (hxx * hyy) ** 0.5

    sa, sb = state(a), state(b)
    va, vb = vocab(a), vocab(b)
    shared = sorted(set(va) & set(vb))
    ea = sa["model.embed_tokens.weight"][[va[t] for t in shared]].float()
    eb = sb["model.embed_tokens.weight"][[vb[t] for t in shared]].float()
    (ref, er), (tgt, et) = ((sa, ea), (sb, eb)) if ea.shape[1] >= eb.shape[1] else ((sb, eb), (sa, ea))
    sim = (er / er.norm(dim=0).clamp_min(1e-12)).T @ (et / et.norm(dim=0).clamp_min(1e-12))
    rows, cols = linear_sum_assignment((1 - sim.abs()).numpy())
    perm = torch.empty(et.shape[1], dtype=torch.long)
    perm[torch.from_numpy(cols)] = torch.from_numpy(rows)
    signs = torch.sign(sim[perm, torch.arange(et.shape[1])])
    (qr, kr), (qt, kt) = qk(ref), qk(tgt)
    sq = [cka(w.float()[:, perm] * signs, v.float()) for w, v in zip(qr, qt)]
    sk = [cka(w.float()[:, perm] * signs, v.float()) for w, v in zip(kr, kt)]
    score = (sum(sq) / len(sq) + sum(sk) / len(sk)) / 2
    return score, abs(score - AWM_NEG_MEAN) / AWM_NEG_STD


def _run(which: str, a: str, b: str) -> tuple[float, float, str, float, dict[str, float]]:
    t = time.perf_counter()
    if which == "awm-authors":
        score, z = awm_authors(a, b)
        return time.perf_counter() - t, score, "-", z, {}
    if which == "lineage":
        from fingerprint.canonical import open_model
        from fingerprint.similarity import METHODS

        r = METHODS["lineage"](open_model(a), open_model(b))
    elif which == "float64":
        from fingerprint.anchors import bottom_k
        from fingerprint.canonical import open_model
        from fingerprint.similarity.lineage import compare_fingerprints
        from fingerprint.similarity.pairwise import pair_anchors
        from fingerprint.sketch import sketch_model

        ma, mb = open_model(a), open_model(b)
        keys = bottom_k(sorted(set(ma.vocab().keys) & set(mb.vocab().keys)),
                        pair_anchors(max(ma.spec.hidden_size, mb.spec.hidden_size)))
        r = compare_fingerprints(*(sketch_model(m, rank=None, keys=keys, stored_precision=False) for m in (ma, mb)))
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
    return time.perf_counter() - t, r.score, r.verdict, r.z, dict(r.timings)


_WRAP = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\n@@ {time.perf_counter() - t} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def whole_process(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` to its end: wall seconds (interpreter start and imports included), peak RSS in MB, and its
    standard output. A small wrapper interpreter forks and execs it and reads its ``wait4`` rusage: a child
    forked from this benchmark would carry the benchmark's own peak into ``ru_maxrss``, which survives exec."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.run([sys.executable, "-c", _WRAP, *cmd], stdout=subprocess.PIPE, stderr=err, text=True)
        err.seek(0)
        lines = err.read().strip().splitlines()
    if p.returncode or not lines or not lines[-1].startswith("@@ "):
        raise SystemExit(f"{' '.join(cmd[:4])}: exit {p.returncode}: {' '.join(lines)[-400:]}")
    _, secs, rss_kib = lines[-1].split()
    return float(secs), int(rss_kib) / 1024, p.stdout


def _command(which: str, a: Path, b: Path) -> list[str]:
    import sys

    if which == "lineage":  # the command a user runs
        return [sys.executable, "-m", "lineage", "compare", str(a), str(b), "--json"]
    code = "import json, sys; from bench.compare import _run; print(json.dumps(_run(*sys.argv[1:4])))"
    return [sys.executable, "-c", code, which, str(a), str(b)]


def measure(which: str, a: Path, b: Path, repeat: int = 1) -> dict[str, Any]:
    """One path as a whole process (``lineage``: the ``lineage compare --json`` command; the others through
    :func:`_run`): wall time, peak RSS (MB), score, verdict, z and lineage's phase timings; the run with the
    median time of ``repeat`` (this machine's timings vary by ±25% run to run)."""
    runs = []
    for _ in range(repeat):
        secs, rss, out = whole_process(_command(which, a, b))
        if which == "lineage":
            d = json.loads(out)
            score, verdict, z, phases = d["score"], d["verdict"], d["z"], d.get("timings") or {}
        else:
            _, score, verdict, z, phases = json.loads(out.strip().splitlines()[-1])
        runs.append({"s": secs, "rss_mb": rss, "score": score, "verdict": verdict, "z": z, "phases": phases, "all_s": []})
    runs.sort(key=lambda r: r["s"])
    mid = runs[len(runs) // 2]
    mid["all_s"] = [r["s"] for r in runs]
    return mid


def _width(d: int, a: argparse.Namespace) -> None:
    base, ft = build_pair(d, a.layers, a.ff, a.vocab, a.kv_heads, a.sparse)
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    runs: list[tuple[str, str, dict[str, Any]]] = []
    for label, x, y in (("base → ft", base, ft), ("ft → base", ft, base)):
        runs.append(("lineage", label, measure("lineage", x, y, a.repeat)))
        if not a.sparse:
            runs.append(("AWM (authors)", label, measure("awm-authors", x, y, a.repeat)))
            if a.faithful:
                runs.append(("AWM + null, float64", label, measure("awm", x, y, a.repeat)))
    print(f"\n### d={d}, L={a.layers}, {a.kv_heads} KV heads, fp16, {size / 1e9:.2f} GB per checkpoint"
          + (" (sparse: V/O/MLP are holes)" if a.sparse else "") + "\n")
    print(f"| path | direction | time (s){' (median; all runs)' if a.repeat > 1 else ''} | peak RSS (MB) | score | z | verdict |")
    print("|---|---|---|---|---|---|---|")
    for which, label, r in runs:
        every = f" ({', '.join(f'{x:.2f}' for x in r['all_s'])})" if a.repeat > 1 else ""
        print(f"| {which} | {label} | {r['s']:.2f}{every} | {r['rss_mb']:.0f} | {r['score']:.5f} | {r['z']:.1f} | {r['verdict']} |")
    if not a.sparse:
        print()
        for label in ("base → ft", "ft → base"):
            lin = next(r for w, lb, r in runs if w == "lineage" and lb == label)
            awm = next(r for w, lb, r in runs if w == "AWM (authors)" and lb == label)
            print(f"ratio lineage/AWM as its authors publish it ({label}): time {lin['s'] / awm['s']:.3f}, "
                  f"peak RSS {lin['rss_mb'] / awm['rss_mb']:.3f}")
    lin = runs[0][2]
    print("\nwhere lineage's time goes (base → ft; the rest is imports and opening):\n")
    print("| phase | s |\n|---|---|")
    for phase, s in lin["phases"].items():
        print(f"| {phase} | {s:.2f} |")
    if a.check and not a.sparse and d <= 1024:
        ref = measure("float64", base, ft)
        print(f"\nfloat64 sketch path on the same anchors: score {ref['score']:.6f} (z {ref['z']:.1f}, {ref['verdict']}, "
              f"{ref['s']:.1f} s); |Δscore| = {abs(ref['score'] - lin['score']):.1e}, z ratio {lin['z'] / ref['z']:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--ff", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="fresh-process runs per path and direction; the median is shown")
    ap.add_argument("--sparse", action="store_true", help="holes for the tensors a fingerprint never reads; no AWM run")
    ap.add_argument("--faithful", action="store_true",
                    help="also run the heavier AWM variant (float64 Grams of every layer, 24-draw null)")
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the float64 reference score (run at d ≤ 1024 only: it is the old, slow path)")
    a = ap.parse_args()

    print(f"{provenance()}. pair: a synthetic LLaMA-shaped "
          "base and a copy with 0.3σ Gaussian noise on every weight; each path a whole process (interpreter start "
          "and imports included), same run")
    for d in a.hidden:
        _width(d, a)


if __name__ == "__main__":
    main()
