"""bench.families: its function-preserving attacks are what they claim, and the fingerprint does not see them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tinymodels import V, write_wordlevel_tokenizer

from fingerprint.canonical import CanonicalModel, open_model


def _saved_pair(src: Path, attacked: Any, tmp_path: Path) -> tuple[CanonicalModel, CanonicalModel]:
    """The tiny model and its attacked copy as checkpoints on disk, with one tokenizer, opened."""
    out = tmp_path / "attacked"
    attacked.save_pretrained(out, safe_serialization=True)
    base = tmp_path / "base"
    shutil.copytree(src, base)
    for p in (base, out):
        write_wordlevel_tokenizer(p, V)
    return open_model(base), open_model(out)


def test_rotating_mla_latents_changes_nothing_the_fingerprint_reads(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The latent-basis attack (``A ← P A``, ``B ← B diag(γ) Pᵀ``, ``γ ← 1``) with residual and head permutations
    keeps the function (checked) and leaves both tiers' scores at 1."""
    import transformers as tf

    from bench.families import attack_mla, same_function
    from fingerprint import screen
    from fingerprint.similarity import compare

    base = tf.AutoModelForCausalLM.from_pretrained(tiny_models["deepseek"]).float().eval()
    attacked = attack_mla(base, seed=3)
    assert same_function(base, attacked) < 1e-4
    a, b = _saved_pair(tiny_models["deepseek"], attacked, tmp_path)
    assert not np.allclose(b.attention(0, fold=False)[0], a.attention(0, fold=False)[0])  # the stored weights moved
    r = compare(a, b)
    assert r.verdict == "derived" and r.score > 0.999
    assert screen.compare(screen.screen_model(a), screen.screen_model(b)).score > 0.999


def test_the_bert_attack_keeps_the_function_and_stays_derived(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Residual, head and MLP permutations with per-head Q/K rescaling on a masked-LM BERT (tied decoder included)."""
    import transformers as tf

    from bench.families import attack_bert, same_function
    from fingerprint.similarity import compare

    base = tf.BertForMaskedLM.from_pretrained(tiny_models["bert"]).float().eval()
    attacked = attack_bert(base, seed=5)
    assert same_function(base, attacked) < 1e-4
    r = compare(*_saved_pair(tiny_models["bert"], attacked, tmp_path))
    assert r.verdict == "derived" and r.score > 0.999
