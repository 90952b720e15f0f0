"""The newer families on models trained here: MoE with multi-head latent attention, an upcycled MoE, an encoder.

    python -m bench.families        # about 4 minutes on 2 cores; writes bench/results/families.txt

Three from-scratch roots of each kind share one byte-level BPE tokenizer (512 tokens) and one corpus:

* ``mla-a`` and ``mla-b``: DeepSeek-V3-layout models (d=128, 4 layers, the first dense and three with 4
  routed experts and a shared one; query and key/value latents of 64 and 32, RoPE dims 16) from two
  seeds on the same text: the hard negative;
* ``llama-u``: a dense LLaMA, and ``llama-u-upcycled``: its MLP copied into 4 experts and trained on (Mixtral);
* ``bert-a`` and ``bert-b``: post-LayerNorm BERT encoders (masked LM) from two seeds on the same text.

Derivatives of ``mla-a`` and ``bert-a``: a fine-tune on other text, continued pretraining, a copy in fp8 with
128 × 128 block scales (as DeepSeek-V3 ships; BERT: per-row int8), a depth-pruned child trained on, and a
function-preserving attack checked to give the same outputs. The MLA attack permutes the residual stream and
the heads and changes both latent bases by random rotations (``A ← P A``, ``B ← B diag(γ) Pᵀ``, ``γ ← 1``);
the BERT attack permutes the residual stream, heads and MLP neurons and rescales each head's Q against its K.

The verdict rules are the product's, unchanged: every positive must be ``derived`` and no negative may be.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import provenance

CACHE = Path(__file__).resolve().parent / ".cache" / "families"
RESULTS = Path(__file__).resolve().parent / "results" / "families.txt"
D, LAYERS, HEADS, VOCAB, SEQ, BATCH = 128, 4, 4, 512, 64, 8


def _mla_config() -> Any:
    import transformers as tf

    return tf.DeepseekV3Config(vocab_size=VOCAB, hidden_size=D, intermediate_size=2 * D, moe_intermediate_size=D // 2,
                               num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                               q_lora_rank=64, kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=32,
                               n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                               first_k_dense_replace=1, max_position_embeddings=4 * SEQ, tie_word_embeddings=False,
                               pad_token_id=None, bos_token_id=None, eos_token_id=None)


def _llama_config() -> Any:
    import transformers as tf

    return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=2 * D, num_hidden_layers=LAYERS,
                          num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=4 * SEQ,
                          tie_word_embeddings=False, pad_token_id=None, bos_token_id=None, eos_token_id=None)


def _bert_config(layers: int = LAYERS) -> Any:
    import transformers as tf

    return tf.BertConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=2 * D, num_hidden_layers=layers,
                         num_attention_heads=HEADS, max_position_embeddings=4 * SEQ, pad_token_id=0)


def train_mlm(model: Any, ids: np.ndarray, steps: int, seed: int, lr: float, mask_id: int = 0) -> None:
    """Masked-LM training of a ``BertForMaskedLM``: batches of 8 × 64 tokens, 15% of positions replaced by
    ``mask_id`` (default token 0, this benchmark's tokenizer's only special token); the vocabulary head is
    applied to the masked positions only (the loss reads no other)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - SEQ, BATCH)
        x = torch.from_numpy(np.stack([ids[s : s + SEQ] for s in starts]))
        mask = torch.rand(x.shape) < 0.15
        h = model.bert(input_ids=x.masked_fill(mask, mask_id)).last_hidden_state[mask]
        loss = torch.nn.functional.cross_entropy(model.cls(h), x[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _save(model: Any, out: Path, tok: Path) -> Path:
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tok, out / "tokenizer.json")
    return out


def _orthogonal(n: int, rng: np.random.Generator) -> torch.Tensor:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return torch.from_numpy((q * np.sign(np.diag(r))).astype(np.float32))


def attack_mla(model: Any, seed: int) -> Any:
    """Residual permutation, head permutation and rotated query / key-value latents: the same function."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    p = torch.from_numpy(rng.permutation(cfg.hidden_size))
    heads, qk, v = cfg.num_attention_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
    nope, rank = cfg.qk_nope_head_dim, cfg.kv_lora_rank
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, w in out.named_parameters():
            if name.endswith(("embed_tokens.weight", "lm_head.weight", "q_a_proj.weight", "kv_a_proj_with_mqa.weight",
                              "gate_proj.weight", "up_proj.weight", "mlp.gate.weight")):
                w.copy_(w[:, p])
            elif name.endswith(("o_proj.weight", "down_proj.weight")) and w.ndim == 2:
                w.copy_(w[p])
            elif name.endswith("experts.gate_up_proj"):
                w.copy_(w[..., p] if w.shape[-1] == cfg.hidden_size else w[:, p])
            elif name.endswith("experts.down_proj"):
                w.copy_(w[:, p] if w.shape[1] == cfg.hidden_size else w[..., p])
            elif name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")) or name == "model.norm.weight":
                w.copy_(w[p])
        for layer in out.model.layers:
            at = layer.self_attn
            hp = torch.from_numpy(rng.permutation(heads))
            rows_q = (hp[:, None] * qk + torch.arange(qk)[None]).reshape(-1)
            rows_kv = (hp[:, None] * (nope + v) + torch.arange(nope + v)[None]).reshape(-1)
            cols_o = (hp[:, None] * v + torch.arange(v)[None]).reshape(-1)
            pq, pk = _orthogonal(cfg.q_lora_rank, rng), _orthogonal(rank, rng)
            at.q_a_proj.weight.copy_(pq @ at.q_a_proj.weight)
            at.q_b_proj.weight.copy_((at.q_b_proj.weight * at.q_a_layernorm.weight[None]) @ pq.T)
            at.q_a_layernorm.weight.fill_(1.0)
            at.q_b_proj.weight.copy_(at.q_b_proj.weight[rows_q])
            kva = at.kv_a_proj_with_mqa.weight
            kva[:rank] = pk @ kva[:rank].clone()
            at.kv_b_proj.weight.copy_((at.kv_b_proj.weight * at.kv_a_layernorm.weight[None]) @ pk.T)
            at.kv_a_layernorm.weight.fill_(1.0)
            at.kv_b_proj.weight.copy_(at.kv_b_proj.weight[rows_kv])
            at.o_proj.weight.copy_(at.o_proj.weight[:, cols_o])
    return out


def attack_bert(model: Any, seed: int) -> Any:
    """Residual, head and MLP-neuron permutations and per-head Q/K rescaling (``BertForMaskedLM``)."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    hd = d // heads
    p = torch.from_numpy(rng.permutation(d))
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, w in out.named_parameters():
            if name.startswith("bert.embeddings.") and w.ndim == 2:
                w.copy_(w[:, p])
            elif "LayerNorm" in name or name == "cls.predictions.transform.dense.bias":
                w.copy_(w[p])
            elif name == "cls.predictions.transform.dense.weight":  # its output meets the (tied, permuted) decoder
                w.copy_(w[p][:, p])
        for layer in out.bert.encoder.layer:
            hp = torch.from_numpy(rng.permutation(heads))
            rows = (hp[:, None] * hd + torch.arange(hd)[None]).reshape(-1)
            scale = torch.from_numpy(np.repeat(rng.uniform(0.5, 2.0, heads), hd).astype(np.float32))
            sa = layer.attention.self
            for lin, s in ((sa.query, scale), (sa.key, 1 / scale), (sa.value, torch.ones_like(scale))):
                lin.weight.copy_(lin.weight[rows][:, p] * s[:, None])
                lin.bias.copy_(lin.bias[rows] * s)
            o = layer.attention.output.dense
            o.weight.copy_(o.weight[p][:, rows])
            o.bias.copy_(o.bias[p])
            mp = torch.from_numpy(rng.permutation(cfg.intermediate_size))
            i, f = layer.intermediate.dense, layer.output.dense
            i.weight.copy_(i.weight[mp][:, p])
            i.bias.copy_(i.bias[mp])
            f.weight.copy_(f.weight[p][:, mp])
            f.bias.copy_(f.bias[p])
    return out


def same_function(a: Any, b: Any) -> float:
    """``max |logits_a − logits_b| / max |logits_a|`` on two random sequences."""
    x = torch.from_numpy(np.random.default_rng(0).integers(1, a.config.vocab_size, (2, 32)))
    with torch.no_grad():
        ya = a(input_ids=x).logits
        yb = b(input_ids=x).logits
    return float((ya - yb).abs().max() / ya.abs().max())


def build() -> tuple[dict[str, Path], list[tuple[str, str, int, str]], list[str]]:
    import transformers as tf

    from zoo.convert import to_fp8
    from zoo.corpus import domain_text
    from zoo.ops import prune_depth, upcycle
    from zoo.train import encode, train_lm, train_tokenizer

    CACHE.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(domain_text("code-a", 1_000_000), VOCAB, CACHE / "tok")
    code, docs, tests = (encode(tok, domain_text(n, 800_000), 150_000) for n in ("code-a", "docs", "tests"))
    models: dict[str, Path] = {}
    notes: list[str] = []

    def lm(model: Any, ids: np.ndarray, steps: int, seed: int, lr: float = 2e-3) -> Any:
        train_lm(model, ids, steps=steps, lr=lr, seq=SEQ, batch=BATCH, seed=seed)
        return model

    def keep(name: str, model: Any) -> None:
        models[name] = _save(model, CACHE / name, tok)

    def new(cfg: Any, seed: int) -> Any:
        torch.manual_seed(seed)
        return tf.AutoModelForCausalLM.from_config(cfg).float().eval()

    for name, seed in (("mla-a", 1), ("mla-b", 2)):
        keep(name, lm(new(_mla_config(), seed), code, 300, seed))
    base = tf.AutoModelForCausalLM.from_pretrained(models["mla-a"]).float().eval()
    keep("mla-a-sft", lm(copy.deepcopy(base), docs, 60, 101, 5e-4))
    keep("mla-a-cpt", lm(copy.deepcopy(base), tests, 200, 102, 1e-3))
    keep("mla-a-prune-depth", lm(prune_depth(copy.deepcopy(base)), code, 60, 103, 5e-4))
    att = attack_mla(base, 104)
    notes.append(f"mla-a-attack: largest output change {same_function(base, att):.1e} of the largest logit")
    keep("mla-a-attack", att)
    models["mla-a-fp8"] = to_fp8(models["mla-a"], CACHE / "mla-a-fp8", scheme="block")
    keep("llama-u", lm(new(_llama_config(), 3), code, 300, 3))
    dense = tf.AutoModelForCausalLM.from_pretrained(models["llama-u"]).float().eval()
    keep("llama-u-upcycled", lm(upcycle(copy.deepcopy(dense), 4, 105), docs, 60, 105, 5e-4))

    for name, seed in (("bert-a", 11), ("bert-b", 12)):
        torch.manual_seed(seed)
        m = tf.BertForMaskedLM(_bert_config())
        train_mlm(m, code, 300, seed, 1e-3)
        keep(name, m)
    bert = tf.BertForMaskedLM.from_pretrained(models["bert-a"]).float().eval()
    ft = copy.deepcopy(bert)
    train_mlm(ft, docs, 60, 111, 2e-4)
    keep("bert-a-ft", ft)
    cpt = copy.deepcopy(bert)
    train_mlm(cpt, tests, 200, 112, 5e-4)
    keep("bert-a-cpt", cpt)
    student = tf.BertForMaskedLM(_bert_config(3))
    sd = bert.state_dict()
    for new_i, old_i in enumerate((0, 1, 3)):
        sd |= {k.replace(f"encoder.layer.{old_i}.", f"encoder.layer.{new_i}."): v for k, v in bert.state_dict().items()
               if f"encoder.layer.{old_i}." in k}
    student.load_state_dict({k: v for k, v in sd.items() if "encoder.layer.3." not in k}, strict=False)
    train_mlm(student, code, 60, 113, 5e-4)
    keep("bert-a-3layer", student)
    att_b = attack_bert(bert, 114)
    notes.append(f"bert-a-attack: largest output change {same_function(bert, att_b):.1e} of the largest logit")
    keep("bert-a-attack", att_b)
    q8 = copy.deepcopy(bert)
    with torch.no_grad():
        for _, w in q8.named_parameters():
            if w.ndim == 2:
                s = w.abs().amax(dim=1, keepdim=True) / 127 + 1e-12
                w.copy_((w / s).round().clamp(-127, 127) * s)
    keep("bert-a-int8", q8)

    pos = [("mla-a", f"mla-a-{k}", 1, k) for k in ("sft", "cpt", "prune-depth", "attack", "fp8")]
    pos += [("llama-u", "llama-u-upcycled", 1, "upcycled MoE")]
    pos += [("bert-a", f"bert-a-{k}", 1, k) for k in ("ft", "cpt", "3layer", "attack", "int8")]
    neg = [("mla-b", m, 0, "same data, other seed") for m in ("mla-a", *(f"mla-a-{k}" for k in ("sft", "cpt", "attack", "fp8")))]
    neg += [("llama-u", m, 0, "other family") for m in ("mla-a", "mla-a-attack", "mla-b")]
    neg += [("llama-u-upcycled", m, 0, "other family") for m in ("mla-a", "mla-b")]
    neg += [("bert-b", m, 0, "same data, other seed") for m in ("bert-a", *(f"bert-a-{k}" for k in ("ft", "cpt", "3layer", "attack", "int8")))]
    return models, pos + neg, notes


def main() -> None:
    from fingerprint import screen
    from fingerprint.canonical import open_model
    from fingerprint.similarity import compare

    t0 = time.perf_counter()
    models, pairs, notes = build()
    built = time.perf_counter() - t0
    screens = {n: screen.screen_model(open_model(p)) for n, p in models.items()}
    rows = ["| a | b | truth | kind | verdict | score | screen |", "|---|---|---|---|---|---|---|"]
    wrong = 0
    for a, b, label, kind in pairs:
        r = compare(open_model(models[a]), open_model(models[b]))
        ok = (r.verdict == "derived") if label else (r.verdict != "derived")
        wrong += not ok
        rows.append(f"| {a} | {b} | {'derived' if label else 'independent'} | {kind} | {r.verdict}{'' if ok else ' ✗'} "
                    f"| {r.score:.3f} | {screen.compare(screens[a], screens[b]).score:.3f} |")
    npos = sum(1 for p in pairs if p[2])
    head = (f"bench.families at {provenance()}: {npos} positives, {len(pairs) - npos} negatives, {wrong} wrong; models built in {built:.0f} s, "
            f"{time.perf_counter() - t0:.0f} s in all\n" + "".join(f"{n}\n" for n in notes))
    text = head + "\n".join(rows) + "\n"
    print(text)
    RESULTS.write_text(text)
    (CACHE / "pairs.json").write_text(json.dumps(pairs))
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
