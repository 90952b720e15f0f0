"""Similarity: CKA/LAP/Procrustes properties, attacks that preserve the function, verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from tinymodels import attacked_family, build_hf, llama_config, write_wordlevel_tokenizer

from fingerprint.canonical import open_model
from fingerprint.errors import ComparisonError
from fingerprint.similarity import METHODS
from fingerprint.similarity.align import procrustes, procrustes_fit, signed_lap
from fingerprint.similarity.awm import compare_awm
from fingerprint.similarity.cka import biased_cka, feature_cka, unbiased_cka
from fingerprint.similarity.lineage import compare_lineage
from zoo.attacks import ATTACKS


def test_unbiased_cka_near_zero_where_biased_is_half() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 512, generator=g, dtype=torch.float64)
    y = torch.randn(512, 512, generator=g, dtype=torch.float64)
    assert abs(feature_cka(x, y)) < 0.02
    assert 0.4 < feature_cka(x, y, unbiased=False) < 0.6


def test_cka_invariances() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 64, generator=g, dtype=torch.float64)
    y = x + 0.5 * torch.randn(200, 64, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    base = feature_cka(x, y)
    assert feature_cka(x @ q, y) == pytest.approx(base, abs=1e-9)  # output-side orthogonal map
    assert feature_cka(3.7 * x, y) == pytest.approx(base, abs=1e-9)  # isotropic scaling
    k = x @ x.T
    assert biased_cka(k, k) == pytest.approx(1.0) and unbiased_cka(k, k) == pytest.approx(1.0)


def test_lap_recovers_planted_signed_permutation() -> None:
    rng = np.random.default_rng(2)
    e_b = rng.standard_normal((1000, 48))
    perm, sign = rng.permutation(48), rng.choice([-1.0, 1.0], 48)
    e_t = e_b[:, perm] * sign
    sp = signed_lap(torch.from_numpy(e_b), torch.from_numpy(e_t))
    assert np.array_equal(sp.index, perm) and np.array_equal(sp.sign, sign)
    assert sp.quality == pytest.approx(1.0)


def test_procrustes_recovers_planted_rotation() -> None:
    rng = np.random.default_rng(3)
    e_b = rng.standard_normal((2000, 32))
    rot, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    r, fit = procrustes(torch.from_numpy(e_b), torch.from_numpy(e_b @ rot))
    np.testing.assert_allclose(r, rot, atol=1e-8)
    assert fit == pytest.approx(1.0)


def test_procrustes_fit_from_singular_values_equals_the_full_fit() -> None:
    rng = np.random.default_rng(4)
    for d_b, d_t in ((32, 32), (48, 32)):  # square (singular values only) and rectangular (full path)
        e_b = torch.from_numpy(rng.standard_normal((500, d_b)))
        noisy = e_b[:, :d_t] + 2.0 * torch.from_numpy(rng.standard_normal((500, d_t)))
        for e_t in (noisy, torch.from_numpy(rng.standard_normal((500, d_t)))):
            assert procrustes_fit(e_b, e_t) == pytest.approx(procrustes(e_b, e_t)[1], rel=1e-10, abs=1e-12)


# -- tiny model families -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return attacked_family(tmp_path_factory.mktemp("family"))


def _logits(path: Path) -> torch.Tensor:
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64)
    ids = torch.tensor([[5, 17, 300, 42, 7, 99, 256, 1, 64, 128]])
    with torch.no_grad():
        return model(ids).logits[0]


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_preserves_function(family: dict[str, Path], attack: str) -> None:
    ref, got = _logits(family["derived"]), _logits(family[attack])
    assert float((ref - got).abs().max() / ref.abs().max()) < 1e-4


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacked_derivative_is_derived(family: dict[str, Path], attack: str) -> None:
    r = compare_lineage(open_model(family["base"]), open_model(family[attack]))
    assert r.verdict == "derived", (r.score, r.z, r.notes)
    assert r.score > 0.8


def test_faithful_awm_fails_rotation_but_not_plain_derivative(family: dict[str, Path]) -> None:
    base = open_model(family["base"])
    plain = compare_awm(base, open_model(family["derived"]))
    rotated = compare_awm(base, open_model(family["fold_and_rotate"]))
    scaled = compare_awm(base, open_model(family["scale_qk_pairs"]))
    assert plain.score > 0.8
    assert rotated.score < 0.3 * plain.score  # the known blind spot of AWM
    assert scaled.score < plain.score - 0.05  # per-pair Q/K rescaling costs AWM points
    ours = compare_lineage(base, open_model(family["fold_and_rotate"]))
    assert ours.alignment == "procrustes"


def test_independent_models_are_independent(family: dict[str, Path]) -> None:
    for method in ("lineage", "awm"):
        r = METHODS[method](open_model(family["base"]), open_model(family["other"]))
        assert r.verdict == "independent", (method, r.score, r.z, r.notes)
        assert abs(r.score) < 0.1


def test_no_shared_tokens_is_a_clear_error(family: dict[str, Path], tmp_path: Path) -> None:
    other = build_hf("llama", tmp_path / "x", seed=5, config=llama_config())
    write_wordlevel_tokenizer(other, 512, prefix="zz")
    with pytest.raises(ComparisonError, match="share only 0 tokens"):
        compare_lineage(open_model(family["base"]), open_model(other))


def test_huref_and_reef_baselines(family: dict[str, Path]) -> None:
    from fingerprint.similarity.huref import compare_huref
    from fingerprint.similarity.reef import compare_reef

    base = open_model(family["base"])
    pos = compare_huref(base, open_model(family["derived"]))
    neg = compare_huref(base, open_model(family["other"]))
    assert pos.score > neg.score + 0.3 and pos.verdict == "derived", (pos.score, neg.score)
    # The word-level test tokenizer knows only "w<i>": probe with in-vocabulary texts.
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(1, 512, 12)) for _ in range(120)]
    pos = compare_reef(base, open_model(family["derived"]), texts=texts)
    neg = compare_reef(base, open_model(family["other"]), texts=texts)
    assert pos.score > neg.score + 0.2, (pos.score, neg.score)


def test_compare_cli_json(family: dict[str, Path]) -> None:
    from click.testing import CliRunner

    from lineage.cli import main

    res = CliRunner().invoke(main, ["compare", str(family["base"]), str(family["fold_and_rotate"]), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["verdict"] == "derived" and {"score", "z", "alignment_quality", "layers", "bytes_read"} <= set(doc)
    assert len(doc["layers"]) == 4
    res = CliRunner().invoke(main, ["compare", str(family["base"]), str(family["other"])])
    assert res.exit_code == 0 and "INDEPENDENT" in res.output


def test_compare_cli_mismatched_pair_is_one_line(family: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lineage.cli import main

    other = build_hf("llama", tmp_path / "x", seed=5, config=llama_config())
    write_wordlevel_tokenizer(other, 512, prefix="zz")
    res = CliRunner().invoke(main, ["compare", str(family["base"]), str(other)])
    assert res.exit_code == 2 and "share only 0 tokens" in res.output and "Traceback" not in res.output


def test_no_derived_verdict_without_a_credible_alignment() -> None:
    """Q/K Grams that still match under a partial (blockwise-rotated) coordinate match give a high score
    and z, but without embeddings a rotation explains that is no evidence: when a rotation explains no
    more than half of what chance leaves (embeddings as good as retrained), the pair is independent;
    in the band above, inconclusive. A dense rotation whose embeddings Procrustes explains is derived."""
    from fingerprint.similarity.lineage import compare_fingerprints
    from fingerprint.similarity.verdict import score_thresholds
    from fingerprint.sketch import Sketch

    rng = np.random.default_rng(11)
    d, n, layers = 128, 1024, 3
    blocks = np.zeros((d, d))
    for b in range(0, d, 16):  # 16-wide random rotations: a column's best match has |cos| ≈ 0.5
        blocks[b:b + 16, b:b + 16] = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    dense = np.linalg.qr(rng.standard_normal((d, d)))[0]
    keys = [f"t{i}" for i in range(n)]
    emb = rng.standard_normal((n, d))
    qs, ks = [rng.standard_normal((d, 16)) for _ in range(layers)], [rng.standard_normal((d, 8)) for _ in range(layers)]

    def sk(e: np.ndarray, q: list[np.ndarray], k: list[np.ndarray]) -> Sketch:
        return Sketch({"hidden_size": d}, keys, e, None, q, k, [(0.0, 0.0)] * layers, np.zeros((layers, 2, 16), np.float32))

    base = sk(emb, qs, ks)
    for rot, noise, expect in ((blocks, 2.0, "independent"), (blocks, 0.8, "inconclusive"), (dense, 0.1, "derived")):
        t = sk(emb @ rot + noise * rng.standard_normal((n, d)), [rot.T @ q for q in qs], [rot.T @ k for k in ks])
        r = compare_fingerprints(base, t)
        assert r.alignment_quality < 0.5 and r.z > 6 and r.score >= score_thresholds(d)[0], (r.alignment_quality, r.z, r.score)
        assert r.verdict == expect and r.aligned == (expect == "derived"), (r.verdict, r.procrustes_fit, r.notes)
        assert any("no credible residual alignment" in x for x in r.notes) == (expect == "inconclusive")
        assert any("no correspondence beyond" in x for x in r.notes) == (expect == "independent")
        if expect != "derived":  # the chance level is measured, and the rule's share is what decided
            assert r.procrustes_chance is not None and r.procrustes_fit is not None
            g = (r.procrustes_fit - r.procrustes_chance) / (1 - r.procrustes_chance)
            assert (g < 0.5) == (expect == "independent"), g


def test_independent_needs_enough_anchor_rows_to_rule_out_a_rotation() -> None:
    """With fewer shared tokens than the width, an untied pair (two views of the basis) still recovers a
    dense rotation and may be called independent; a tied pair may not."""
    from fingerprint.similarity.lineage import compare_fingerprints
    from fingerprint.sketch import Sketch

    rng = np.random.default_rng(12)
    d, n, layers = 384, 300, 2
    keys = [f"t{i}" for i in range(n)]

    def sk(e: np.ndarray, head: np.ndarray | None, q: list[np.ndarray], k: list[np.ndarray]) -> Sketch:
        return Sketch({"hidden_size": d}, keys, e, head, q, k, [(0.0, 0.0)] * layers, np.zeros((layers, 2, 16), np.float32))

    def model() -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        return (rng.standard_normal((n, d)), rng.standard_normal((n, d)), [rng.standard_normal((d, 8)) for _ in range(layers)],
                [rng.standard_normal((d, 4)) for _ in range(layers)])

    e, h, q, k = model()
    e2, h2, q2, k2 = model()
    untied = compare_fingerprints(sk(e, h, q, k), sk(e2, h2, q2, k2))
    tied = compare_fingerprints(sk(e, None, q, k), sk(e2, None, q2, k2))
    assert untied.verdict == "independent" and untied.score < 0.01
    assert tied.verdict == "inconclusive" and any("rotated derivative" in x for x in tied.notes)
    rot = np.linalg.qr(rng.standard_normal((d, d)))[0]
    kid = sk(e @ rot, h @ rot, [rot.T @ x for x in q], [rot.T @ x for x in k])
    found = compare_fingerprints(sk(e, h, q, k), kid)
    assert found.alignment == "procrustes" and found.verdict == "derived" and found.score > 0.99


def test_a_shared_random_start_is_flagged_not_a_plain_derivative(tiny_zoo: Any) -> None:
    """llama-c starts from llama-a's random initialization (same seed and shapes) and trains on other
    text: the weights share an origin (derived: z ≫ 6 on an aligned basis), but the aligned embeddings
    explain under three quarters of each other, so the pair is flagged ``shared_init``, on the
    checkpoint path and the fingerprint path alike. Every kind of derivative keeps most of its
    parent's embeddings (continued pretraining included) and stays a plain ``derived``."""
    from click.testing import CliRunner

    from fingerprint.similarity.lineage import compare_fingerprints
    from fingerprint.similarity.verdict import SHARED_INIT_SHARE
    from fingerprint.sketch import sketch_model
    from lineage.cli import main

    root = Path(tiny_zoo.dir_of(tiny_zoo.by_name()["llama-a"])).parent
    a, c = open_model(root / "llama-a"), open_model(root / "llama-c")
    for r in (compare_lineage(a, c), compare_fingerprints(sketch_model(a), sketch_model(c))):
        assert r.verdict == "derived" and r.shared_init and r.outcome == "shared_init", (r.verdict, r.embedding_share)
        assert r.embedding_share is not None and r.embedding_share < SHARED_INIT_SHARE
        assert any(n.startswith("shared initialization") for n in r.notes) and r.to_dict()["outcome"] == "shared_init"
    for child in ("llama-a-sft", "llama-a-cpt", "llama-a-prune-magnitude", "llama-a-sft-fold_and_rotate"):
        r = compare_lineage(a, open_model(root / child))
        assert r.verdict == "derived" and not r.shared_init, (child, r.embedding_share)
        assert r.embedding_share is not None and r.embedding_share >= SHARED_INIT_SHARE
    out = CliRunner().invoke(main, ["compare", str(root / "llama-a"), str(root / "llama-c")])
    assert out.exit_code == 0 and "verdict    DERIVED (SHARED INIT" in out.output, out.output


@pytest.mark.parametrize("share", [0.2, 0.5, 0.8])
def test_reinitialized_embeddings_over_inherited_layers_stay_derived(tiny_zoo: Any, tmp_path: Path, share: float) -> None:
    """Re-initializing a share of llama-a-sft's embedding rows (fresh Gaussian rows of the same scale)
    leaves its layers llama-a's: 20% and 50% keep a credible alignment, 80% leaves the signed LAP poor and
    no rotation, yet the layers agree at ≈ 1 under the LAP's matching, which no chance matching reaches.
    Before, 80% was called independent and 20% a shared random start."""
    import shutil

    from safetensors.numpy import save_file

    root = Path(tiny_zoo.dir_of(tiny_zoo.by_name()["llama-a"])).parent
    out = tmp_path / "reinit"
    shutil.copytree(root / "llama-a-sft", out)
    sd = load_file(str(out / "model.safetensors"))
    e = sd["model.embed_tokens.weight"].astype(np.float32)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(e), int(share * len(e)), replace=False)
    e[rows] = rng.standard_normal((len(rows), e.shape[1])).astype(np.float32) * e.std()
    sd["model.embed_tokens.weight"] = e.astype(sd["model.embed_tokens.weight"].dtype)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    r = compare_lineage(open_model(root / "llama-a"), open_model(out))
    assert r.verdict == "derived" and not r.shared_init and r.score > 0.95, (r.verdict, r.score, r.notes)
    assert (r.aligned is False) == (share == 0.8)
    if share == 0.8:
        assert any("inherited layers" in n for n in r.notes)
