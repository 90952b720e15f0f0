"""fingerprint.relation: each derivative kind, made here on real files, is typed from its weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fingerprint.canonical import open_model
from fingerprint.errors import ComparisonError
from fingerprint.relation import classify, effective_rank, quant_steps
from tests.tinymodels import build_hf, llama_base, llama_config, perturb, save_state_dict, write_wordlevel_tokenizer
from zoo.attacks import fold_and_rotate, scale_qk_heads
from zoo.convert import to_fp8, to_gguf, to_int4

MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _lora(sd: dict[str, np.ndarray], rank: int, size: float, seed: int) -> dict[str, np.ndarray]:
    """A LoRA of ``rank`` on every layer matrix, merged: ``W + B A`` with ``‖BA‖ ≈ size·‖W‖``."""
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for k, w in sd.items():
        if k.endswith(tuple(f"{m}.weight" for m in MATRICES)):
            b, a = rng.standard_normal((w.shape[0], rank)), rng.standard_normal((rank, w.shape[1]))
            ba = b @ a
            out[k] = (w + size * np.linalg.norm(w) / np.linalg.norm(ba) * ba).astype(np.float32)
    return out


def _save_bf16(sd: dict[str, np.ndarray], cfg: dict, out: Path, tokenizer_from: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16) for k, v in sd.items()},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "tokenizer.json").write_text((tokenizer_from / "tokenizer.json").read_text())
    return out


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("relation")
    base, cfg, sd = llama_base(root / "base")
    out = {"base": base}

    def save(name: str, s: dict[str, np.ndarray], c: dict | None = None) -> None:
        out[name] = save_state_dict(s, c or cfg, root / name, base)

    save("finetune", perturb(sd, 0.03, seed=1))
    save("cpt", perturb(sd, 0.5, seed=2))
    save("lora", _lora(sd, 4, 0.1, seed=3))
    save("rotated", fold_and_rotate(sd, cfg, seed=4))
    save("rescaled", scale_qk_heads(sd, cfg, seed=5))
    save("rotated_finetune", fold_and_rotate(perturb(sd, 0.03, seed=6), cfg, seed=7))
    pruned = {k: (np.where(np.abs(v) < np.median(np.abs(v)), 0.0, v) if k.endswith("proj.weight") else v) for k, v in sd.items()}
    save("magnitude", pruned)
    shallow = {k: v for k, v in sd.items() if ".layers.3." not in k}
    save("depth", shallow, {**cfg, "num_hidden_layers": 3})
    grown = dict(perturb(sd, 0.01, seed=8))
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        grown[k] = np.concatenate([grown[k], grown[k][:64] * 0.1]).astype(np.float32)
    save("vocab", grown, {**cfg, "vocab_size": 576})
    small = {k: (v[:448] if k in ("model.embed_tokens.weight", "lm_head.weight") else v) for k, v in perturb(sd, 0.01, 10).items()}
    save("vocab_pruned", small, {**cfg, "vocab_size": 448})
    write_wordlevel_tokenizer(out["vocab_pruned"], 448)
    out["gptq"] = to_int4(base, root / "gptq", "gptq", group=32)
    out["awq"] = to_int4(base, root / "awq", "awq", group=32)
    # bfloat16, as most Hub checkpoints are: a conversion is a copy, a light fine-tune (0.3% of the weights'
    # scale, below bf16's rounding threshold of 4x the noise) is not
    out["bf16"] = _save_bf16(sd, cfg, root / "bf16", base)
    out["bf16_light_ft"] = _save_bf16(perturb(sd, 0.003, seed=11), cfg, root / "bf16_light_ft", base)
    out["q8"] = to_gguf(base, root / "q8.gguf", "Q8_0")
    out["finetune_q8"] = to_gguf(out["finetune"], root / "ft-q8.gguf", "Q8_0")
    out["fp8"] = to_fp8(base, root / "fp8", "block", block=32)
    other = build_hf("llama", root / "other", seed=9, config=llama_config())
    write_wordlevel_tokenizer(other, 512)
    out["other"] = other
    return out


def _type(family: dict[str, Path], child: str, parent: str = "base"):
    return classify(open_model(family[parent]), open_model(family[child]))


@pytest.mark.parametrize("child, relation", [
    ("finetune", "finetune"), ("cpt", "continued_pretraining"), ("lora", "adapter_merged"), ("rotated", "copy"),
    ("rescaled", "copy"), ("rotated_finetune", "finetune"), ("magnitude", "pruned"), ("depth", "pruned"),
    ("vocab", "vocab_changed"), ("vocab_pruned", "vocab_changed"), ("q8", "quantized"), ("fp8", "quantized"),
    ("gptq", "quantized"), ("awq", "quantized"), ("finetune_q8", "finetune"),
])
def test_each_kind_is_typed(family: dict[str, Path], child: str, relation: str) -> None:
    assert _type(family, child).relation == relation


def test_bfloat16_copies_and_light_finetunes_are_told_apart(family: dict[str, Path]) -> None:
    assert _type(family, "bf16").relation == "copy"  # float32 -> bfloat16: every element within one rounding
    assert _type(family, "bf16_light_ft", "bf16").relation == "finetune"  # whole-ulp steps in most elements
    assert _type(family, "bf16", "bf16_light_ft").relation == "finetune"


def test_lora_rank_and_attack_flags_are_reported(family: dict[str, Path]) -> None:
    lora = _type(family, "lora")
    assert lora.detail["rank"] == 4 and lora.alignment == "identity" and not lora.flags
    assert _type(family, "rotated").flags == ["residual rotated"]
    assert _type(family, "rotated_finetune").alignment == "rotated"
    assert any("output side transformed: k, q" in f for f in _type(family, "rescaled").flags)
    assert _type(family, "depth").detail == {"depth": {"removed_layers": [3]}}
    assert _type(family, "magnitude").detail["unstructured"]["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert _type(family, "q8").detail["scheme"] == ["gguf:Q8_0"]
    # A fine-tune quantized afterwards differs from the base by more than the scheme's rounding.
    assert "stored quantized: gguf:Q8_0" in _type(family, "finetune_q8").flags


@pytest.mark.parametrize("child, scheme", [("q8", "gguf:Q8_0"), ("gptq", "gptq:int4"), ("awq", "awq:int4")])
def test_the_quantized_copy_is_its_parents_rounding(family: dict[str, Path], child: str, scheme: str) -> None:
    r = _type(family, child)
    assert r.detail["scheme"] == [scheme]
    assert r.detail["rms_over_step"] < 0.35  # round-to-nearest: 1/sqrt(12) = 0.29


def test_a_pruned_vocabulary_is_a_vocabulary_change(family: dict[str, Path]) -> None:
    r = _type(family, "vocab_pruned")
    assert r.detail["rows"] == [512, 448] and r.detail["tokens_removed"] == 64


def test_unrelated_models_are_not_typed(family: dict[str, Path]) -> None:
    with pytest.raises(ComparisonError, match="share no weights"):
        _type(family, "other")


def test_effective_rank_sees_low_rank_above_noise() -> None:
    rng = np.random.default_rng(0)
    low = rng.standard_normal((96, 5)) @ rng.standard_normal((5, 80))
    noise = 1e-3 * rng.standard_normal((96, 80))
    r, share, spectrum = effective_rank(low + noise, 1e-3)
    assert r == 5 and share > 0.99 and spectrum[4] > 1 > spectrum[5]
    r_full, _, _ = effective_rank(rng.standard_normal((96, 80)) + noise, 1e-3)
    assert r_full == 80


def test_quant_steps_read_the_block_grid() -> None:
    grid = np.arange(32, dtype=np.float32).reshape(1, 32) * 0.5  # 32 values on a step-0.5 grid
    steps = quant_steps(np.tile(grid, (2, 1)), "gguf:Q4_0")  # 16 levels over the range 15.5
    assert steps is not None and np.allclose(steps, 15.5 / 15)
    assert quant_steps(grid, "F16") is None
