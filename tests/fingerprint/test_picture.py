"""fingerprint.picture: the vector survives every function-preserving attack and light fine-tuning, keeps
independent models apart, ignores names; the PNG is small, valid and byte-stable (golden)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from tinymodels import perturb, randn, save_state_dict, write_wordlevel_tokenizer

from fingerprint.canonical import open_model
from fingerprint.errors import PictureError
from fingerprint.picture import MAX_SIZE, latent, picture_png, picture_vector, render, shrink_spikes
from fingerprint.sketch import load, save, sketch_model, sketch_of
from zoo.attacks import ATTACKS

GOLDEN = Path(__file__).parents[1] / "data" / "golden-tiny-llama.lfp"
#: sha256 of the golden fingerprint's 256×256 picture: a change here is a change every user sees.
GOLDEN_PNG = "88a58b41bc384cba1c11853a78d2cfa8f991ce038984cfff18ad615fadbdee24"


def _model(out: Path, seed: int, vocab: int = 300, d: int = 48) -> Path:
    layers, heads, kv, ff = 2, 4, 2, 96
    sd = {"model.embed_tokens.weight": randn(vocab, d, seed=seed), "lm_head.weight": randn(vocab, d, seed=seed + 1),
          "model.norm.weight": 1 + 0.1 * randn(d, seed=seed + 2)}
    for i in range(layers):
        p = f"model.layers.{i}."
        s = seed + 10 * (i + 1)
        sd |= {p + "self_attn.q_proj.weight": randn(heads * 12, d, seed=s), p + "self_attn.k_proj.weight": randn(kv * 12, d, seed=s + 1),
               p + "self_attn.v_proj.weight": randn(kv * 12, d, seed=s + 2), p + "self_attn.o_proj.weight": randn(d, heads * 12, seed=s + 3),
               p + "mlp.gate_proj.weight": randn(ff, d, seed=s + 4), p + "mlp.up_proj.weight": randn(ff, d, seed=s + 5),
               p + "mlp.down_proj.weight": randn(d, ff, seed=s + 6), p + "input_layernorm.weight": 1 + 0.1 * randn(d, seed=s + 7),
               p + "post_attention_layernorm.weight": 1 + 0.1 * randn(d, seed=s + 8)}
    # a shared low-rank "learned" component on top of the random start: what training on the same text gives
    common = randn(vocab, 3, seed=999) @ randn(3, d, seed=998)
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"] + 2.0 * common
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 12, "intermediate_size": ff,
           "vocab_size": vocab, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "rope_theta": 10000.0}
    save_state_dict(sd, cfg, out)
    write_wordlevel_tokenizer(out, vocab)
    return out


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    root = tmp_path_factory.mktemp("picture")
    base = _model(root / "base", seed=1)
    cfg = json.loads((base / "config.json").read_text())
    sd = {k: v.astype(np.float64) for k, v in load_file(str(base / "model.safetensors")).items()}
    ft = perturb(sd, 0.03, seed=5)
    dirs: dict[str, Path] = {"base": base, "ft": save_state_dict(ft, cfg, root / "ft", tokenizer_from=base),
                             "other": _model(root / "other", seed=7), "other2": _model(root / "other2", seed=13)}
    for name, fn in ATTACKS.items():
        dirs[name] = save_state_dict(fn(ft, dict(cfg), seed=3), cfg, root / name, tokenizer_from=base)
    return {n: picture_vector(sketch_of(p)) for n, p in dirs.items()}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_vector_survives_every_function_preserving_attack(family: dict[str, np.ndarray], attack: str) -> None:
    assert float(family["ft"] @ family[attack]) >= 0.99


def test_fine_tune_stays_close_and_independent_bases_sharing_structure_stay_apart(family: dict[str, np.ndarray]) -> None:
    assert float(family["base"] @ family["ft"]) >= 0.9
    # the three bases share a strong common embedding component (like models trained on one text); the
    # spike shrinkage is what keeps them apart: without it the shared mode would dominate the Gram
    for a, b in [("base", "other"), ("base", "other2"), ("other", "other2")]:
        assert abs(float(family[a] @ family[b])) < 0.2, (a, b)


def test_spike_shrinkage_lowers_only_the_eigenvalues_above_the_noise_edge() -> None:
    rng = np.random.default_rng(0)
    t, d = 400, 64
    e = rng.standard_normal((t, d)) / np.sqrt(d)
    e[:, :2] += rng.standard_normal((t, 1)) * 1.5  # one strong shared direction
    g, spikes = shrink_spikes(e @ e.T, d)
    assert spikes == 1
    before, after = np.linalg.eigvalsh(e @ e.T)[::-1], np.linalg.eigvalsh(g)[::-1]
    assert after[0] < before[0] / 10 and np.allclose(after[1:d], before[1:d], rtol=1e-8)


def test_golden_picture_is_small_valid_and_byte_stable() -> None:
    from PIL import Image

    sk = load(GOLDEN)
    data = picture_png(sk)
    assert picture_png(load(GOLDEN)) == data
    assert len(data) <= 50_000
    im = Image.open(io.BytesIO(data))
    assert im.size == (256, 256) and im.mode == "P"
    if os.environ.get("LINEAGE_REGENERATE_GOLDEN") == "1":
        print("golden picture sha256:", hashlib.sha256(data).hexdigest())
    assert hashlib.sha256(data).hexdigest() == GOLDEN_PNG, "the picture changed: every user's picture changes with it"


def test_picture_ignores_names_and_cards(tmp_path: Path) -> None:
    m = _model(tmp_path / "m", seed=1)
    a = sketch_model(open_model(m), source="alice/model", revision="a" * 40)
    (m / "README.md").write_text("---\nbase_model: x/y\nlicense: mit\n---\n# renamed\n")
    b = sketch_model(open_model(m), source="mallory/other-name", revision="b" * 40)
    assert a.meta["source"] != b.meta["source"] and picture_png(a) == picture_png(b)


def test_sizes_are_bounded_and_too_few_tokens_is_an_error(tmp_path: Path) -> None:
    z = latent(picture_vector(load(GOLDEN)))
    assert render(z, 16).shape == (16, 16)
    for bad in (15, MAX_SIZE + 1):
        with pytest.raises(PictureError):
            render(z, bad)
    sk = load(GOLDEN)
    sk.embed[20:] = 0.0  # only 20 usable anchor rows left
    with pytest.raises(PictureError, match="at least 32"):
        picture_vector(sk)


def _picture_in_a_fresh_process(src: Path, out: Path) -> bytes:
    env: dict[str, Any] = {**os.environ, "LINEAGE_DISABLE_PROGRESS_BARS": "1"}
    subprocess.run([sys.executable, "-m", "lineage", "picture", str(src), "-o", str(out)], check=True, env=env,
                   capture_output=True, timeout=120)
    return out.read_bytes()


def test_tiny_zoo_base_picture_is_byte_identical_across_runs(tiny_zoo: Any, tmp_path: Path) -> None:
    base = tiny_zoo.dir_of(tiny_zoo.by_name()["llama-a"])
    one = _picture_in_a_fresh_process(base, tmp_path / "one.png")
    two = _picture_in_a_fresh_process(base, tmp_path / "two.png")
    fp = save(sketch_of(base), tmp_path / "llama-a.lfp")
    assert one == two == picture_png(load(fp))  # and the same from the fingerprint file
