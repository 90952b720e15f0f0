"""zoo.build: the tiny zoo is really trained, its attacks really preserve function, its manifest is right.

Uses the session's tiny zoo (``tiny_zoo`` in conftest: built once into ``.cache/zoo/tiny``).
"""

from __future__ import annotations

import pytest

from fingerprint.canonical import open_model
from zoo.manifest import Manifest

pytestmark = pytest.mark.slow


def test_bases_are_really_trained(tiny_zoo: Manifest) -> None:
    bases = [m for m in tiny_zoo if m.category == "base"]
    assert len(bases) == 6 and {m.args["arch"] for m in bases} == {"llama", "gpt_neox", "qwen2"}
    for m in bases:
        lo = m.extra["losses"]
        # Uniform over 512 tokens is ln 512 = 6.24; trained bases end far below where they started.
        assert lo["first"] > 5.0 and lo["last"] < lo["first"] - 2.0, (m.name, lo)
        assert all(b <= a + 0.5 for a, b in zip(lo["every_10"], lo["every_10"][5:])), m.name


def test_manifest_covers_every_category_and_cards_tell_some_lies(tiny_zoo: Manifest) -> None:
    root = tiny_zoo.root
    cats = {m.category for m in tiny_zoo}
    assert {"sft", "continued-pretraining", "rl", "multimodal", "pruning", "upcycling", "vocab-extension", "merge",
            "merge-unrelated", "quantized", "lora", "attack"} <= cats
    by = tiny_zoo.by_name()
    assert by["llama-ab-merge"].roots == ("llama-a", "llama-b")
    assert by["llama-a-sft-sft2-sft3"].parents == ("llama-a-sft-sft2",)
    assert not by["llama-a-rl"].card_honest and by["llama-a-rl"].card.base_model == ("mistral-zoo/llama-b",)
    card = (root / "llama-a-sft" / "README.md").read_text()
    assert card.startswith("---\nlicense: llama2\nbase_model:\n- meta-zoo/llama-a\n")
    assert "base_model" not in (root / "llama-a-lora" / "README.md").read_text()
    for m in tiny_zoo:
        spec = open_model(tiny_zoo.dir_of(m)).spec  # every model opens through the real readers
        assert spec.num_layers >= 2


def test_attacks_preserve_logits(tiny_zoo: Manifest) -> None:
    attacks = [m for m in tiny_zoo if m.category == "attack"]
    assert len(attacks) == 16
    assert all(m.extra["logit_max_rel_err"] <= 1e-6 for m in attacks)
