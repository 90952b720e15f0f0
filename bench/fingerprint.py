"""What one fingerprint costs at real model shapes, per tier: seconds, peak RSS, bytes read and stored.

    python -m bench.fingerprint                      # 1B, 7B and 13B shapes (≈ 10 minutes on 2 cores)
    python -m bench.fingerprint --shapes 1B          # one shape

The checkpoints are synthetic safetensors files of the real shapes (bf16, seeded Gaussian weights,
``bench/.cache/shapes/``), written *sparse*: the tensors a fingerprint reads (embedding, lm_head, every
layer's Q, K and norms) hold data, the rest (V, O, MLP) are holes, so the file has its real size and
byte offsets without storing 13B parameters. They are read through the page cache, so the figures are the
tiers' own work (decoding, arithmetic, bytes touched), not a disk's or the Hub's bandwidth.

Tiers, each run in its own process (its peak RSS is its own):

* ``screen``: :func:`fingerprint.screen.screen_model` (anchor Grams of a byte-budgeted layer sample);
* ``verify``: :func:`fingerprint.sketch.sketch_model`, the per-layer evidence (randomized float32
  truncation where the rank keeps few rows);
* ``before``: the same sketch as it was computed before the tiers (float64 row Gram and a full ``eigh`` per
  projection), timed on ``--before-layers`` layers and scaled to the depth (each layer is an independent
  step; reading the anchors is timed once). Its bytes read and stored are the verification tier's.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance

SHAPES: dict[str, dict[str, Any]] = {
    # Llama-3.2-1B, Mistral-7B-v0.1, Llama-2-13B (config.json values)
    "1B": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
           "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True},
    "7B": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "head_dim": 128, "intermediate_size": 14336, "vocab_size": 32000, "tie_word_embeddings": False},
    "13B": {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
            "head_dim": 128, "intermediate_size": 13824, "vocab_size": 32000, "tie_word_embeddings": False},
}
CACHE = Path(__file__).resolve().parent / ".cache" / "shapes"
READ_ROLES = ("embed_tokens", "lm_head", "q_proj", "k_proj", "layernorm", "model.norm")


def tensors_of(c: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of a LLaMA-layout checkpoint of config ``c``, in file order."""
    d, hd, ff = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (c["vocab_size"], d))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (q, d)),
                (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.v_proj.weight", (kv, d)),
                (p + "self_attn.o_proj.weight", (d, q)), (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (ff, d)), (p + "mlp.up_proj.weight", (ff, d)),
                (p + "mlp.down_proj.weight", (d, ff))]
    out.append(("model.norm.weight", (d,)))
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", (c["vocab_size"], d)))
    return out


def _bf16(x: np.ndarray) -> bytes:
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()


def write_shape(name: str, seed: int = 0) -> Path:
    """The sparse synthetic checkpoint of shape ``name`` and weights seeded ``seed`` (written once, then
    reused; ``bench.service`` serves several seeds as distinct models)."""
    c = SHAPES[name]
    out = CACHE / (name if seed == 0 else f"{name}-s{seed}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "max_position_embeddings": 4096, "torch_dtype": "bfloat16", **c}
    (out / "config.json").write_text(json.dumps(cfg))
    # each seed its own vocabulary: unrelated models share no tokens, so the index never scores them
    # against each other (bench.service measures the workers, not the driver's matching)
    prefix = "t" if seed == 0 else f"s{seed}t"
    vocab = {f"{prefix}{i:06d}": i for i in range(c["vocab_size"])}
    (out / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": f"{prefix}000000"}}))
    if (out / "done").exists():
        return out
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    layout = tensors_of(c)
    for n, shape in layout:
        size = 2 * int(np.prod(shape))
        header[n] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(seed)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        base = f.tell()
        for n, shape in layout:
            start = base + header[n]["data_offsets"][0]
            if not any(r in n for r in READ_ROLES):
                continue  # a hole: never read by a fingerprint
            f.seek(start)
            if len(shape) == 1:
                f.write(_bf16(1.0 + 0.1 * rng.standard_normal(shape[0], dtype=np.float32)))
                continue
            for a in range(0, shape[0], 4096):  # in slabs: a 13B lm_head is 0.3 GB of bf16
                rows = min(4096, shape[0] - a)
                f.write(_bf16(0.02 * rng.standard_normal((rows, shape[1]), dtype=np.float32)))
        f.truncate(base + offset)
    (out / "done").write_text("")
    return out


def run_tier(tier: str, path: Path, before_layers: int) -> dict[str, Any]:
    """One tier on one checkpoint, in this process (``--one``)."""
    from fingerprint.canonical import open_model

    m = open_model(path)
    t = time.perf_counter()
    doc: dict[str, Any] = {"tier": tier}
    if tier == "screen":
        from fingerprint.screen import screen_model, to_bytes

        sc = screen_model(m)
        doc["stored"] = len(to_bytes(sc))
        doc["layers"] = len(sc.meta["layers"])
    elif tier == "verify":
        from fingerprint.sketch import sketch_model
        from fingerprint.sketch import to_bytes as sketch_bytes

        sk = sketch_model(m)
        doc["stored"] = len(sketch_bytes(sk))
        doc["layers"] = sk.num_layers
    else:
        from fingerprint.anchors import DEFAULT_ANCHORS, bottom_k
        from fingerprint.grams import row_blocks
        from fingerprint.sketch import auto_rank, pair_factor, truncate

        s = m.spec
        vocab = m.vocab()
        ids = [vocab.keys[k] for k in bottom_k(list(vocab.keys), DEFAULT_ANCHORS)]
        m.embed_rows(ids)
        m.lm_head_rows(ids)
        anchors_s = time.perf_counter() - t
        rank = auto_rank(s.hidden_size, s.num_layers)
        qb = row_blocks(s.num_heads, s.head_dim, s.rotary_dim, s.rope_style)
        kb = row_blocks(s.num_kv_heads, s.head_dim, s.rotary_dim, s.rope_style)
        t1 = time.perf_counter()
        n = min(before_layers, s.num_layers)
        for layer in range(n):
            wq, wk = m.attention(layer, fold=True)
            truncate(pair_factor(wq, qb), rank)
            truncate(pair_factor(wk, kb), rank)
        per_layer = (time.perf_counter() - t1) / n
        doc["seconds"] = anchors_s + per_layer * s.num_layers
        doc["layers"] = f"{n} (of {s.num_layers})"
        doc["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return doc
    doc["seconds"] = time.perf_counter() - t
    doc["read"] = m.bytes_read
    doc["total"] = m.total_bytes
    doc["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return doc


def _child(tier: str, path: Path, before_layers: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.fingerprint", "--one", tier, str(path),
                          "--before-layers", str(before_layers)], capture_output=True, text=True, check=True)
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fingerprint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--before-layers", type=int, default=2)
    p.add_argument("--one", nargs=2, metavar=("TIER", "PATH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_tier(a.one[0], Path(a.one[1]), a.before_layers)))
        return
    from lineage.cli.output import table

    print(f"bench.fingerprint at {provenance()}")
    rows = []
    for name in a.shapes:
        path = write_shape(name)
        res = {tier: _child(tier, path, a.before_layers) for tier in ("screen", "verify", "before")}
        res["before"].update(read=res["verify"]["read"], total=res["verify"]["total"], stored=res["verify"]["stored"])
        for tier in ("screen", "verify", "before"):
            r = res[tier]
            rows.append([name, tier, str(r["layers"]), f"{r['seconds']:.1f} s", f"{r['rss'] / 2**20:,.0f} MiB",
                         f"{r['read'] / 1e6:,.0f} MB", f"{100 * r['read'] / r['total']:.2f}%", f"{r['stored'] / 1e6:.2f} MB"])
    print(table(rows, ["shape", "tier", "layers", "seconds", "peak RSS", "bytes read", "of checkpoint", "stored"]))


if __name__ == "__main__":
    main()
