"""bench.families: its function-preserving attacks are what they claim, and the fingerprint does not see them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tinymodels import V

from fingerprint.canonical import open_model


def test_rotating_mla_latents_changes_nothing_the_fingerprint_reads(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The latent-basis attack (``A ← P A``, ``B ← B diag(γ) Pᵀ``, ``γ ← 1``) with residual and head permutations
    keeps the function (checked) and leaves both tiers' scores at 1."""
    import transformers as tf
    from tinymodels import write_wordlevel_tokenizer

    from bench.families import attack_mla, same_function
    from fingerprint import screen
    from fingerprint.similarity import compare

    base = tf.AutoModelForCausalLM.from_pretrained(tiny_models["deepseek"]).float().eval()
    attacked = attack_mla(base, seed=3)
    assert same_function(base, attacked, bert=False) < 1e-4
    out = tmp_path / "attacked"
    attacked.save_pretrained(out, safe_serialization=True)
    src = tmp_path / "base"
    shutil.copytree(tiny_models["deepseek"], src)
    for p in (src, out):
        write_wordlevel_tokenizer(p, V)
    assert not np.allclose(open_model(out).attention(0, fold=False)[0], open_model(src).attention(0, fold=False)[0])
    r = compare(open_model(src), open_model(out))
    assert r.verdict == "derived" and r.score > 0.999
    assert screen.compare(screen.screen_model(open_model(src)), screen.screen_model(open_model(out))).score > 0.999



def test_the_bert_attack_keeps_the_function_and_stays_derived(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Residual, head and MLP permutations with per-head Q/K rescaling on a masked-LM BERT (tied decoder included)."""
    import transformers as tf
    from tinymodels import write_wordlevel_tokenizer

    from bench.families import attack_bert, same_function
    from fingerprint.similarity import compare

    base = tf.BertForMaskedLM.from_pretrained(tiny_models["bert"]).float().eval()
    attacked = attack_bert(base, seed=5)
    assert same_function(base, attacked, bert=True) < 1e-4
    out = tmp_path / "attacked"
    attacked.save_pretrained(out, safe_serialization=True)
    src = tmp_path / "base"
    shutil.copytree(tiny_models["bert"], src)
    for p in (src, out):
        write_wordlevel_tokenizer(p, V)
    r = compare(open_model(src), open_model(out))
    assert r.verdict == "derived" and r.score > 0.999
