"""zoo.build: the tiny zoo is really trained, its attacks really preserve function, its manifest is right.

Uses the session's tiny zoo (``tiny_zoo`` in conftest: built once into the zoo cache).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fingerprint.canonical import open_model
from zoo.manifest import Manifest

pytestmark = pytest.mark.slow


def test_bases_are_really_trained(tiny_zoo: Manifest) -> None:
    bases = [m for m in tiny_zoo if m.category == "base"]
    assert len(bases) == 6 and {m.args["arch"] for m in bases} == {"llama", "gpt_neox", "qwen2"}
    for m in bases:
        lo = m.extra["losses"]
        # Uniform over 512 tokens is ln 512 = 6.24; trained bases end far below where they started
        # (120 steps of 8 sequences: about 2 nats; an untrained model stays within a few tenths).
        assert lo["first"] > 5.0 and lo["last"] < lo["first"] - 1.5, (m.name, lo)
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


def test_one_zoo_cache_keyed_by_the_recipes(tiny_zoo: Manifest, tmp_path: Path) -> None:
    """The demo and the tests share ``default_dir``: ``<cache>/<size>-<build key>``, the cache from
    ``LINEAGE_ZOO_CACHE`` (read at import), so a zoo built by ``lineage demo`` is the one the suite finds."""
    import subprocess
    import sys

    from zoo.build import build_key, default_dir

    assert tiny_zoo.root == default_dir("tiny") and default_dir("tiny").name == f"tiny-{build_key('tiny')}"
    assert json.loads((tiny_zoo.root / "manifest.json").read_text())["key"] == build_key("tiny")
    out = subprocess.run([sys.executable, "-c", "from zoo.build import default_dir; print(default_dir('tiny'))"],
                         env={**os.environ, "LINEAGE_ZOO_CACHE": str(tmp_path)}, capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert Path(out) == tmp_path / f"tiny-{build_key('tiny')}"


def test_the_q4k_copy_is_not_the_q8_copy_at_tiny_width(tiny_zoo: Manifest) -> None:
    """At d=64 no row is a multiple of Q4_K's 256: llama.cpp falls back to Q5_0, not to Q8_0 (the
    copy used to be byte-identical to the Q8_0 one)."""
    from fingerprint.io.gguf import GGUFReader
    from fingerprint.io.source import LocalFileSource

    by_name = {m.name: m for m in tiny_zoo}

    def gguf(name: str) -> Path:
        return next(tiny_zoo.dir_of(by_name[name]).glob("*.gguf"))

    q4, q8 = gguf("llama-a-sft-q4k"), gguf("llama-a-sft-q8")
    assert q4.read_bytes() != q8.read_bytes() and q4.stat().st_size < q8.stat().st_size
    types = {t.dtype for t in GGUFReader(LocalFileSource(q4), q4.name).tensors.values()}
    assert "gguf:Q5_0" in types and "gguf:Q8_0" not in types, types


def test_an_interrupted_parallel_build_resumes_to_the_same_bytes(tiny_zoo: Manifest, tmp_path: Path) -> None:
    """Two worker processes build the tiny zoo (zoo/parallel.py). Take a copy, delete a third-generation
    model and the token file it trains on; the build redoes only those, in fresh workers, and writes the
    same bytes: a model depends on its recipe and its parents' files, not on which worker built it or
    when."""
    import shutil

    from zoo.build import Builder

    copy = tmp_path / "zoo"
    shutil.copytree(tiny_zoo.root, copy)
    gone = "llama-a-sft-sft2-sft3"
    (copy / gone).rename(tmp_path / "old")
    (copy / "tokens" / "tok-a-tests.npy").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in copy.iterdir() if (p / ".done").exists()}
    Builder("tiny", copy, quiet=True).build()
    new = sorted((copy / gone).glob("*.safetensors"))
    assert new and all(p.read_bytes() == (tmp_path / "old" / p.name).read_bytes() for p in new)
    assert np.array_equal(np.load(copy / "tokens" / "tok-a-tests.npy"), np.load(tiny_zoo.root / "tokens" / "tok-a-tests.npy"))
    assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir() if p.name in kept} == kept  # nothing else redone


def test_the_corpus_files_hash_like_the_text_and_encoding_stops_early(tmp_path: Path) -> None:
    """The zoo key's corpus digest is read off the text files (zoo/texts.py); it must equal the digest of
    the text itself, or every zoo cached before would be rebuilt. Encoding stops once it has the tokens
    it needs and returns the same ids as encoding everything."""
    from zoo import corpus, texts
    from zoo.train import encode, train_tokenizer

    d = texts.ensure(tmp_path, workers=2)
    assert texts.digest(d) == corpus.digest(*corpus.DOMAINS)
    assert texts.read(d, "docs") == corpus.domain_text("docs")
    text = texts.read(d, "code-b")
    tok = train_tokenizer(text[:300_000], 300, tmp_path / "tok")
    every = encode(tok, text)
    assert np.array_equal(encode(tok, text, 50_000), every[:50_000]) and len(every) > 200_000
