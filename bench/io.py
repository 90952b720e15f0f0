"""I/O benchmark: bytes and time to read "embed + all Q/K" lazily vs loading the full state dict.

Builds (once, cached under ``bench/.cache``) a synthetic LLaMA-style checkpoint of about 1B
parameters in fp16, sharded like transformers does, then measures in the same run:

* **lineage**: ``open_model`` + embedding + folded Q/K of every layer (what a fingerprint reads);
* **AWM reference**: ``safetensors.numpy.load_file`` of every shard into one dict (what the
  AWM loader does), then the same tensors picked from it.

Usage: ``python -m bench.io [--layers 16] [--hidden 2048]``. Files are in the page cache for both
paths (they were just written or read), so the time ratio is a lower bound on the gain from disk
or network.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from fingerprint.canonical import open_model

CACHE = Path(__file__).parent / ".cache"


def llama_shapes(d: int, n_layers: int, ff: int, vocab: int, kv_heads: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes of an untied LLaMA-2-style checkpoint (head_dim 64)."""
    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, d)), ("lm_head.weight", (vocab, d)),
                                                ("model.norm.weight", (d,))]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        names += [(p + "input_layernorm.weight", (d,)), (p + "post_attention_layernorm.weight", (d,)),
                  (p + "self_attn.q_proj.weight", (d, d)), (p + "self_attn.k_proj.weight", (kv_heads * 64, d)),
                  (p + "self_attn.v_proj.weight", (kv_heads * 64, d)), (p + "self_attn.o_proj.weight", (d, d)),
                  (p + "mlp.gate_proj.weight", (ff, d)), (p + "mlp.up_proj.weight", (ff, d)),
                  (p + "mlp.down_proj.weight", (d, ff))]
    return names


def build_checkpoint(out: Path, d: int, n_layers: int, ff: int, vocab: int, kv_heads: int, n_shards: int = 4) -> Path:
    """Write a LLaMA-2-shaped fp16 checkpoint with random weights (deterministic)."""
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def mat(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    names = llama_shapes(d, n_layers, ff, vocab, kv_heads)
    per = -(-len(names) // n_shards)
    weight_map: dict[str, str] = {}
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: (np.ones(shape, np.float16) if len(shape) == 1 else mat(*shape)) for n, shape in names[s * per : (s + 1) * per]}
        save_file(part, str(out / fn))
        weight_map.update(dict.fromkeys(part, fn))
        del part
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "num_hidden_layers": n_layers,
        "num_attention_heads": d // 64, "num_key_value_heads": kv_heads, "intermediate_size": ff, "vocab_size": vocab,
        "tie_word_embeddings": False, "torch_dtype": "float16"}))
    return out


def lineage_path(path: Path) -> tuple[float, int, int]:
    t = time.perf_counter()
    m = open_model(path)
    m.embed()
    for layer in range(m.spec.num_layers):
        m.attention(layer)
    return time.perf_counter() - t, m.bytes_read, m.total_bytes


def awm_path(path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    sd: dict[str, np.ndarray] = {}
    total = 0
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(str(f)))
        total += f.stat().st_size
    _ = [sd[k].astype(np.float32) for k in sd if "q_proj" in k or "k_proj" in k or "embed" in k]
    return time.perf_counter() - t, total


def peak_rss_kib() -> int:
    """This process's peak resident set (KiB) since its image was loaded.

    ``VmHWM`` belongs to the address space, which ``execve`` replaces; ``getrusage``'s ``ru_maxrss`` is
    kept across ``execve``, so a spawned child would report its parent's peak at the fork (1.3 GB after
    the parent built a d=2048 pair, against the child's own 0.45 GB).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _child(fn: Any, args: tuple[Any, ...], q: Any) -> None:
    res = fn(*args)
    q.put((*res, peak_rss_kib()))


def in_fresh_process(fn: Any, *args: Any) -> tuple[Any, ...]:
    """Run ``fn(*args)`` (returning a tuple) in a spawned process; append its peak RSS in KiB."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q))
    p.start()
    out = q.get()
    p.join()
    return tuple(out)


def measure(which: str, path: Path) -> tuple[Any, ...]:
    """One path of the benchmark in a fresh process, so its peak RSS is its own."""
    return in_fresh_process(lineage_path if which == "lineage" else awm_path, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    a = ap.parse_args()
    t = time.perf_counter()
    path = build_checkpoint(CACHE / f"io-{a.hidden}x{a.layers}x{a.kv_heads}", a.hidden, a.layers, a.ff, a.vocab, a.kv_heads)
    print(f"checkpoint: {path} (ready in {time.perf_counter() - t:.1f} s)")
    kv_dim = a.kv_heads * 64
    n_params = a.vocab * a.hidden * 2 + a.layers * (2 * a.hidden**2 + 2 * kv_dim * a.hidden + 3 * a.hidden * a.ff)
    measure("awm", path)  # warm the page cache for both paths alike
    lt, lbytes, total, lrss = measure("lineage", path)
    at, abytes, arss = measure("awm", path)
    print(f"\nsynthetic TinyLlama-shaped checkpoint: {n_params / 1e9:.2f} B parameters, d={a.hidden}, L={a.layers}, "
          f"{a.kv_heads} KV heads, fp16, {total / 1e9:.2f} GB in 4 shards (page cache warm for both)\n")
    print("| path | bytes read | share of checkpoint | time (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    print(f"| lineage: embed + all Q/K (lazy ranges) | {lbytes / 1e9:.3f} GB | {100 * lbytes / total:.1f}% | {lt:.2f} | "
          f"{lrss / 1024:.0f} |")
    print(f"| AWM reference: full state dict | {abytes / 1e9:.3f} GB | 100.0% | {at:.2f} | {arss / 1024:.0f} |")
    print(f"\nratio lineage/AWM: bytes {lbytes / abytes:.3f}, time {lt / at:.3f}, peak RSS {lrss / arss:.3f}")


if __name__ == "__main__":
    main()
