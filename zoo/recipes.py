"""The zoo as data: sizes, bases and derivative recipes. ``build.py`` executes them.

Ground truth is explicit: every model names its ``parents`` (a merge of two unrelated bases names both).
Cards are sometimes dishonest on purpose (``card_base`` / ``card_license`` differ from the truth) so the
crawler and the undeclared-derivative alerts have something real to find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    # The tests' and `lineage demo`'s zoo, built in under a minute on 2 cores by 2 worker processes of one
    # torch thread each (``workers``; zoo/parallel.py). 150 steps of 8 sequences take a base from loss 6.2
    # to 4.1; 300 of 16 reached 3.1 in 3.5x the time, and what the zoo tests (lineage, not language
    # modelling) does not need the last nat.
    "tiny": dict(d=64, layers=3, heads=4, kv_gqa=2, ffn=192, vocab=512, seq=64, batch=8, base_steps=120, lr=3e-3,
                 tokens=200_000, dtype="float32", workers=2),
    # The benchmark set: d=256 (Q4_K-sized rows), 4 layers, 4x the tiny zoo's width and vocabulary;
    # 250 steps per base (continued pretraining as many again). Build time is in docs/evaluation.md.
    "small": dict(d=256, layers=4, heads=8, kv_gqa=2, ffn=704, vocab=2048, seq=64, batch=8, base_steps=250,
                  lr=2e-3, tokens=1_000_000, dtype="float16"),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    op: str
    parents: tuple[str, ...] = ()
    category: str = "base"
    args: dict[str, Any] = field(default_factory=dict)
    org: str = "zoo"
    license: str | None = None
    """Licence in the card (None: inherit the first parent's)."""
    card_base: str | None = "truth"
    """``truth``: the real parents; None: no base_model in the card; any other name: a wrong claim."""


BASES = [
    Recipe("llama-a", "pretrain", org="meta-zoo", license="llama2",
           args=dict(arch="llama", tokenizer="tok-a", data="code-a", seed=1)),
    # Hard negatives: same data, other seed; same seed (same init), other data.
    Recipe("llama-b", "pretrain", org="mistral-zoo", license="apache-2.0",
           args=dict(arch="llama", tokenizer="tok-a", data="code-a", seed=2)),
    Recipe("llama-c", "pretrain", org="tii-zoo", license="mit",
           args=dict(arch="llama", tokenizer="tok-a", data="code-b", seed=1)),
    Recipe("llama-d", "pretrain", org="meta-zoo", license="llama3",
           args=dict(arch="llama", tokenizer="tok-b", data="code-b", seed=3, gqa=True)),
    Recipe("neox-e", "pretrain", org="eleuther-zoo", license="apache-2.0",
           args=dict(arch="gpt_neox", tokenizer="tok-b", data="code-a", seed=4)),
    Recipe("qwen2-f", "pretrain", org="qwen-zoo", license="other",
           args=dict(arch="qwen2", tokenizer="tok-a", data="code-b", seed=5)),
]

TOKENIZERS = {"tok-a": "code-a", "tok-b": "code-b"}


def _per_base() -> list[Recipe]:
    out = []
    for i, b in enumerate(BASES):
        arch = b.args["arch"]
        llama_like = arch in ("llama", "qwen2")
        n = b.name
        out += [
            Recipe(f"{n}-sft", "sft", (n,), "sft", dict(data="docs", frac=0.15, seed=100 + i), org="alice"),
            Recipe(f"{n}-cpt", "sft", (n,), "continued-pretraining", dict(data="tests", frac=1.0, seed=200 + i, lr_mult=0.5),
                   org="bob", card_base=None if i == 2 else "truth"),
            Recipe(f"{n}-rl", "dpo", (n,), "rl", dict(frac=0.1, seed=300 + i), org="carol",
                   card_base="llama-b" if n == "llama-a" else "truth"),
            Recipe(f"{n}-prune-depth", "prune_depth", (n,), "pruning", dict(frac=0.1, seed=400 + i), org="dave"),
            Recipe(f"{n}-prune-magnitude", "prune_magnitude", (n,), "pruning",
                   dict(sparsity=0.9 if i in (1, 3) else 0.5), org="dave", card_base=None if i == 3 else "truth"),
        ]
        if llama_like:
            out += [
                Recipe(f"{n}-multimodal", "multimodal", (n,), "multimodal", dict(frac=0.1, seed=500 + i), org="erin"),
                Recipe(f"{n}-prune-width", "prune_width", (n,), "pruning", dict(keep=0.75, frac=0.1, seed=600 + i),
                       org="dave"),
            ]
        if arch == "llama":
            out.append(Recipe(f"{n}-moe", "upcycle", (n,), "upcycling", dict(experts=4, frac=0.15, seed=700 + i),
                              org="frank", license="apache-2.0" if i == 0 else None))
    return out


EXTRAS = [
    # Multi-generation chain: base -> sft -> sft2 -> sft3.
    Recipe("llama-a-sft-sft2", "sft", ("llama-a-sft",), "sft", dict(data="code-b", frac=0.15, seed=801), org="grace"),
    Recipe("llama-a-sft-sft2-sft3", "sft", ("llama-a-sft-sft2",), "sft", dict(data="tests", frac=0.15, seed=802),
           org="heidi", card_base="llama-a"),
    Recipe("llama-d-sft-sft2", "sft", ("llama-d-sft",), "sft", dict(data="tests", frac=0.15, seed=803), org="grace"),
    Recipe("llama-a-vocab", "vocab_extend", ("llama-a",), "vocab-extension", dict(new_tokens=64, frac=0.1, seed=804),
           org="ivan"),
    Recipe("llama-a-lora", "lora", ("llama-a",), "lora", dict(rank=8, frac=0.2, seed=805), org="judy", card_base=None),
    Recipe("qwen2-f-lora", "lora", ("qwen2-f",), "lora", dict(rank=4, frac=0.2, seed=806), org="judy"),
    Recipe("llama-a-merge-linear", "merge_linear", ("llama-a-sft", "llama-a-rl"), "merge", org="mallory"),
    Recipe("llama-a-merge-ties", "merge_ties", ("llama-a-sft", "llama-a-cpt"), "merge", dict(base="llama-a", density=0.2),
           org="mallory"),
    # Two unrelated bases averaged: honestly derived from both.
    Recipe("llama-ab-merge", "merge_linear", ("llama-a", "llama-b"), "merge-unrelated", org="mallory"),
    Recipe("llama-a-sft-q8", "gguf", ("llama-a-sft",), "quantized", dict(qtype="Q8_0"), org="quant"),
    Recipe("llama-a-sft-q4k", "gguf", ("llama-a-sft",), "quantized", dict(qtype="Q4_K"), org="quant", card_base=None),
    Recipe("llama-d-sft-fp8", "fp8", ("llama-d-sft",), "quantized", dict(scheme="block"), org="quant"),
]

ATTACK_TARGETS = ("llama-a-sft", "llama-d-cpt")


def attacks() -> list[Recipe]:
    from zoo.attacks import ATTACKS

    return [Recipe(f"{t}-{a}", "attack", (t,), "attack", dict(attack=a, seed=900 + i), org="mallory",
                   card_base=None, license="mit")
            for t in ATTACK_TARGETS for i, a in enumerate(ATTACKS)]


def all_recipes() -> list[Recipe]:
    return [*BASES, *_per_base(), *EXTRAS, *attacks()]
