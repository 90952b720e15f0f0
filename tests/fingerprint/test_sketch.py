"""Compact fingerprints: exact factored CKA, reproducible files, a golden file, hostile files, the index."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tinymodels import randn, save_state_dict, write_wordlevel_tokenizer

from fingerprint.anchors import bottom_k
from fingerprint.canonical import open_model
from fingerprint.errors import FingerprintFileError, FingerprintIndexError
from fingerprint.index import Index
from fingerprint.similarity.cka import cka_centered, u_center
from fingerprint.similarity.factored import cka, factor
from fingerprint.similarity.lineage import compare_fingerprints, compare_lineage
from fingerprint.sketch import load, save, sketch_model, to_bytes
from lineage.cli import main

GOLDEN = Path(__file__).parents[1] / "data" / "golden-tiny-llama.lfp"


def golden_model(out: Path) -> Path:
    """A fixed-seed tiny LLaMA written from numpy alone (no framework init code that could change)."""
    d, layers, heads, kv, ff, vocab = 32, 2, 4, 2, 64, 96
    sd = {"model.embed_tokens.weight": randn(vocab, d, seed=1), "lm_head.weight": randn(vocab, d, seed=2),
          "model.norm.weight": 1 + 0.1 * randn(d, seed=3)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd |= {p + "self_attn.q_proj.weight": randn(heads * 8, d, seed=10 + i), p + "self_attn.k_proj.weight": randn(kv * 8, d, seed=20 + i),
               p + "self_attn.v_proj.weight": randn(kv * 8, d, seed=30 + i), p + "self_attn.o_proj.weight": randn(d, heads * 8, seed=40 + i),
               p + "mlp.gate_proj.weight": randn(ff, d, seed=50 + i), p + "mlp.up_proj.weight": randn(ff, d, seed=60 + i),
               p + "mlp.down_proj.weight": randn(d, ff, seed=70 + i), p + "input_layernorm.weight": 1 + 0.1 * randn(d, seed=80 + i),
               p + "post_attention_layernorm.weight": 1 + 0.1 * randn(d, seed=90 + i)}
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": ff, "vocab_size": vocab,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "rope_theta": 10000.0}
    save_state_dict(sd, cfg, out)
    write_wordlevel_tokenizer(out, vocab)
    return out


def test_factored_cka_is_u_centred_cka() -> None:
    g = torch.Generator().manual_seed(0)
    for n, r1, r2 in ((50, 20, 30), (64, 64, 8), (7, 3, 9)):
        f = torch.randn(n, r1, generator=g, dtype=torch.float64)
        h = f @ torch.randn(r1, r2, generator=g, dtype=torch.float64) + torch.randn(n, r2, generator=g, dtype=torch.float64)
        assert cka(factor(f), factor(h)) == pytest.approx(cka_centered(u_center(f @ f.T), u_center(h @ h.T)), abs=1e-12)


def test_bottom_k_is_order_free() -> None:
    keys = [f"t{i}" for i in range(1000)]
    assert bottom_k(keys, 50) == bottom_k(list(reversed(keys)), 50)
    assert set(bottom_k(keys[:600], 50)) & set(bottom_k(keys, 50))  # overlapping vocabularies share anchors


def test_fingerprint_is_reproducible_and_matches_the_golden_file(tmp_path: Path) -> None:
    m = golden_model(tmp_path / "m")
    a = to_bytes(sketch_model(open_model(m), source="golden-tiny-llama"))
    b = to_bytes(sketch_model(open_model(m), source="golden-tiny-llama"))
    assert a == b
    if os.environ.get("LINEAGE_REGENERATE_GOLDEN") == "1":  # after a deliberate format change; commit the file
        GOLDEN.write_bytes(a)
    assert a == GOLDEN.read_bytes(), "fingerprint bytes changed: bump sketch.VERSION and regenerate the golden file"
    sk = load(GOLDEN)
    # The default rank keeps exact factors at this width: every Q/K row, no tail.
    assert (sk.width, sk.num_layers, sk.meta["anchors"], sk.meta["rank"]) == (32, 2, 96, 32)
    assert all(t == (0.0, 0.0) for t in sk.tails)


def test_default_rank_spends_the_factor_budget() -> None:
    from fingerprint.sketch import FACTOR_BUDGET, auto_rank

    assert auto_rank(4096, 32) == 64  # LLaMA-2-7B: 32 layers × (Q + K) × 4096 × 64 int8 = 16 MiB
    assert auto_rank(256, 4) >= 256 and auto_rank(576, 30) * 2 * 30 * 576 <= FACTOR_BUDGET  # small zoo exact, SmolLM2 485
    assert auto_rank(8192, 80) == 64  # the floor for the widest models


def test_fingerprint_scores_agree_with_checkpoint_scores(tmp_path: Path) -> None:
    from safetensors.numpy import load_file
    from tinymodels import perturb

    base = golden_model(tmp_path / "base")
    sd = load_file(str(base / "model.safetensors"))
    cfg = json.loads((base / "config.json").read_text())
    kid = save_state_dict(perturb(sd, 0.3, seed=5), cfg, tmp_path / "kid")
    write_wordlevel_tokenizer(kid, 96)
    other = golden_model(tmp_path / "other")
    save_state_dict({k: randn(*v.shape, seed=99 + i) for i, (k, v) in enumerate(sd.items())}, cfg, other)
    for x, y in ((base, kid), (base, other)):
        full = compare_lineage(open_model(x), open_model(y))
        fa, fb = save(sketch_model(open_model(x)), tmp_path / "a.lfp"), save(sketch_model(open_model(y)), tmp_path / "b.lfp")
        fp = compare_fingerprints(load(fa), load(fb))
        assert abs(fp.score - full.score) <= 0.003 and fp.verdict == full.verdict, (fp.score, full.score)


def _rewrite_header(src: Path, dst: Path, edit) -> None:  # type: ignore[no-untyped-def]
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])


def test_corrupt_and_incompatible_files_are_rejected(tmp_path: Path) -> None:
    good = tmp_path / "good.lfp"
    save(sketch_model(open_model(golden_model(tmp_path / "m"))), good)

    def meta(h: dict) -> dict:  # type: ignore[type-arg]
        return json.loads(h["__metadata__"]["lineage.fingerprint"])

    def set_meta(h: dict, **kv: object) -> None:  # type: ignore[type-arg]
        h["__metadata__"]["lineage.fingerprint"] = json.dumps({**meta(h), **kv})

    cases = {
        "version": (lambda h: set_meta(h, version=99), "format version 99"),
        "format": (lambda h: set_meta(h, format="other"), "not a lineage fingerprint"),
        "width": (lambda h: set_meta(h, hidden_size=48), "do not match"),
        "layers": (lambda h: set_meta(h, num_layers=5), "missing"),
        "shape": (lambda h: h["layers.0.q.q8"].update(shape=[h["layers.0.q.q8"]["shape"][0] // 2,
                                                             h["layers.0.q.q8"]["shape"][1] * 2]), "do not match"),
        "nometa": (lambda h: h.pop("__metadata__"), "no lineage.fingerprint metadata"),
    }
    for name, (edit, msg) in cases.items():
        bad = tmp_path / f"{name}.lfp"
        _rewrite_header(good, bad, edit)
        with pytest.raises(FingerprintFileError, match=msg):
            load(bad)
    trunc = tmp_path / "trunc.lfp"
    trunc.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(FingerprintFileError, match="not a usable fingerprint file"):
        load(trunc)
    r = CliRunner().invoke(main, ["compare", str(trunc), str(good)])
    assert r.exit_code == 2 and r.output.startswith("Error: ") and r.output.count("\n") == 1


def test_index_add_list_match_and_tamper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file
    from tinymodels import perturb

    base = golden_model(tmp_path / "base")
    sd = load_file(str(base / "model.safetensors"))
    cfg = json.loads((base / "config.json").read_text())
    others = []
    for s in range(3):
        o = save_state_dict({k: randn(*v.shape, seed=1000 * s + i) for i, (k, v) in enumerate(sd.items())}, cfg, tmp_path / f"o{s}")
        write_wordlevel_tokenizer(o, 96)
        others.append(o)
    kid = save_state_dict(perturb(sd, 0.2, seed=7), cfg, tmp_path / "kid")
    write_wordlevel_tokenizer(kid, 96)
    run = CliRunner()
    for p, fam in ((base, "golden"), *((o, f"other{i}") for i, o in enumerate(others))):
        r = run.invoke(main, ["index", "add", str(p), "--family", fam])
        assert r.exit_code == 0, r.output
    r = run.invoke(main, ["index", "add", str(others[0]), "--family", "other0", "--name", "other0-twin"])
    assert r.exit_code == 0, r.output
    listed = json.loads(run.invoke(main, ["index", "list", "--json"]).output)
    assert [e["family"] for e in listed["entries"]] == ["golden", "other0", "other1", "other2", "other0"]
    out = json.loads(run.invoke(main, ["match", str(kid), "--json"]).output)
    assert out["matches"][0]["family"] == "golden" and out["matches"][0]["verdict"] == "derived"
    assert all(m["verdict"] != "derived" for m in out["matches"][1:])
    assert out["stats"]["indexed"] == 5
    # --top counts families: each once, by its best base (two bases of other0 do not both show)
    fams = [m["family"] for m in out["matches"]]
    assert len(fams) == len(set(fams)) == 4
    two = json.loads(run.invoke(main, ["match", str(kid), "--top", "2", "--json"]).output)["matches"]
    assert [m["family"] for m in two] == fams[:2]
    idx_dir = Path(listed["index"])
    f = idx_dir / Index(idx_dir).entries["base"].file
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")
    r = run.invoke(main, ["match", str(kid)])
    assert r.exit_code == 2 and "does not match the SHA-256" in r.output
    (idx_dir / "index.json").write_text("{not json")
    with pytest.raises(FingerprintIndexError, match="corrupt index"):
        Index(idx_dir)


def test_screen_in_blocks_equals_screening_every_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortlist is the best-prefilter entries that pass the width and token-overlap gates, however
    many blocks of entries the screen has to read to fill it."""
    import numpy as np

    from fingerprint import index as index_mod
    from fingerprint.index import screen_vector, token_sketch
    from fingerprint.sketch import Sketch

    like = sketch_model(open_model(golden_model(tmp_path / "m")))
    rng = np.random.default_rng(8)
    vocab_a, vocab_b = [f"a{i}" for i in range(300)], [f"b{i}" for i in range(300)]

    def fake(width: int, keys: list[str], seed: int) -> Sketch:
        r = np.random.default_rng(seed)
        return Sketch({**like.meta, "hidden_size": width, "num_layers": 2, "source": f"s{seed}"}, keys,
                      r.standard_normal((len(keys), width)), None, [r.standard_normal((width, 4)) for _ in range(2)],
                      [r.standard_normal((width, 4)) for _ in range(2)], [(0.0, 0.0)] * 2,
                      r.random((2, 2, 16)).astype(np.float32))

    items: list[tuple[str | Path, str | None, str | None]] = []
    fakes = {}
    for i in range(40):
        keys = sorted(rng.choice(vocab_a if i % 3 else vocab_b, 200, replace=False).tolist())
        fakes[f"e{i}"] = fake(int(rng.choice([16, 32, 48])), keys, i)
        items.append((save(fakes[f"e{i}"], tmp_path / f"e{i}.lfp"), f"e{i}", None))
    idx = Index(tmp_path / "idx")
    idx.add_many(items)
    suspect = fake(32, vocab_a[:250], 99)
    mine = set(token_sketch(suspect).tolist()) - {np.iinfo(np.uint64).max}
    brute = []
    for name, sk in fakes.items():
        overlap = len(mine & set(token_sketch(sk).tolist())) / len(mine)
        if sk.width >= 32 and overlap >= index_mod.MIN_TOKEN_OVERLAP:
            brute.append((name, float(idx._screen[list(fakes).index(name)] @ screen_vector(suspect)), overlap))
    brute.sort(key=lambda x: -x[1])
    assert 5 < len(brute) < 30  # both gates reject some entries
    for block in (3, 256):
        monkeypatch.setattr(index_mod, "SCREEN_BLOCK", block)
        for k in (1, 4, 40):
            got = idx.screen(suspect, k)
            assert [g[0] for g in got] == [b[0] for b in brute[:k]]
            assert [g[2] for g in got] == pytest.approx([b[2] for b in brute[:k]])


def test_screen_by_publication_order_hidden_entries_and_in_place_updates(tmp_path: Path) -> None:
    """``older_than`` / ``newer_than`` restrict the screen to one side of a publication time (names break
    ties), hidden entries are out of every match but found as later models, and updates persist."""
    import numpy as np

    from fingerprint.sketch import Sketch

    rng = np.random.default_rng(7)
    like = sketch_model(open_model(golden_model(tmp_path / "m")))
    keys = like.keys

    def fake(width: int, seed: int) -> Sketch:
        r = np.random.default_rng(seed)
        return Sketch({**like.meta, "hidden_size": width, "num_layers": 2, "source": f"s{seed}"}, keys,
                      r.standard_normal((len(keys), width)), None, [r.standard_normal((width, 4)) for _ in range(2)],
                      [r.standard_normal((width, 4)) for _ in range(2)], [(0.0, 0.0)] * 2,
                      rng.random((2, 2, 16)).astype(np.float32))

    idx = Index(tmp_path / "idx")
    widths = {"a": 32, "b": 32, "c": 16, "d": 32, "e": 32}
    times = {"a": 100, "b": 200, "c": 300, "d": 300, "e": 400}
    for i, (name, w) in enumerate(widths.items()):
        idx.add(save(fake(w, i), tmp_path / f"{name}.lfp"), name, "fam",
                meta={"published_ms": times[name], **({"hidden": True} if name == "e" else {})})
    probe = fake(16, 9)
    names = lambda got: sorted(g[0] for g in got)  # noqa: E731
    # before (300, "d"): a, b and c (same time, earlier name); the hidden e is in no match
    assert names(idx.screen(probe, 10, older_than=(300, "d"))) == ["a", "b", "c"]
    assert names(idx.screen(probe, 10)) == ["a", "b", "c", "d"]
    # after (200, "b"), no wider than the probe: c only; a wider probe also sees d and the hidden e
    assert names(idx.screen(probe, 10, newer_than=(200, "b"))) == ["c"]
    assert names(idx.screen(fake(32, 8), 10, newer_than=(200, "b"))) == ["c", "d", "e"]
    assert idx.newer_than((300, "c")) == 2 and idx.entries["a"].when() == (100, "a")
    # updates survive a reload; a rename keeps the screen row; a removal drops it
    idx.update("e", family="other", meta={"published_ms": 400})
    idx.update("a", rename="a2")
    idx.remove("c")
    again = Index(tmp_path / "idx")
    assert list(again.entries) == ["a2", "b", "d", "e"] and again.entries["e"].family == "other"
    assert names(again.screen(probe, 10)) == ["a2", "b", "d", "e"]
    assert again.screen(probe, 10) == idx.screen(probe, 10)
    with pytest.raises(FingerprintIndexError):
        again.update("b", rename="d")
    # two writers at once: one's screen.npz beside the other's index.json is refused, and rebuild mends it
    # from the files (keeping what ``keep`` accepts, dropping an entry whose file was altered)
    np.savez(tmp_path / "idx" / "screen.npz", screen=again._screen[:2], tokens=again._tokens[:2])
    with pytest.raises(FingerprintIndexError, match="does not match"):
        Index(tmp_path / "idx")
    (tmp_path / "idx" / again.entries["d"].file).write_bytes(b"LFP altered")
    mended, dropped = Index.rebuild(tmp_path / "idx", keep=lambda e: e.name != "b")
    assert (list(mended.entries), dropped) == (["a2", "e"], ["d"])
    rounded = lambda got: [(n, round(float(a), 5), round(float(b), 5)) for n, a, b in got]  # noqa: E731
    kept = [g for g in rounded(again.screen(probe, 10)) if g[0] in ("a2", "e")]
    assert rounded(Index(tmp_path / "idx").screen(probe, 10)) == rounded(mended.screen(probe, 10)) == kept
