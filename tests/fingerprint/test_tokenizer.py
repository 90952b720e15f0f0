"""Vocabularies from every source normalize to comparable keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from fingerprint.errors import TokenizerError
from fingerprint.io.source import LocalRepo
from fingerprint.tokenizer import (
    load_vocab,
    normalize_token,
    shared_tokens,
    vocab_from_gguf,
    vocab_from_sentencepiece,
)

TEXT = ["the quick brown fox jumps over the lazy dog", "def main():\n    return 42", "naïve café déjà vu"] * 50


def train(kind: str) -> Tokenizer:
    if kind == "byte_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=["<|endoftext|>"])
    elif kind == "spm_bpe":
        tok = Tokenizer(models.BPE(byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                      initial_alphabet=[f"<0x{i:02X}>" for i in range(256)])
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<unk>"], unk_token="<unk>")
    tok.train_from_iterator(TEXT, trainer)
    return tok


@pytest.mark.parametrize("kind", ["byte_bpe", "spm_bpe", "unigram"])
def test_tokenizer_json_kinds(tmp_path: Path, kind: str) -> None:
    train(kind).save(str(tmp_path / "tokenizer.json"))
    v = load_vocab(LocalRepo(tmp_path))
    assert v.style == ("byte_level" if kind == "byte_bpe" else "sentencepiece")
    assert "t" in v.keys and " " in v.keys and len(v.keys) >= 30
    assert not any(k in v.keys for k in ("<|endoftext|>", "<s>", "<unk>"))  # specials excluded
    assert all("Ġ" not in k and "▁" not in k for k in v.keys)


def test_families_intersect_after_normalization(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    train("byte_bpe").save(str(a / "tokenizer.json"))
    train("spm_bpe").save(str(b / "tokenizer.json"))
    va, vb = load_vocab(LocalRepo(a)), load_vocab(LocalRepo(b))
    ia, ib, keys = shared_tokens(va, vb)
    assert " the" in keys and "\n" in keys and len(keys) > 50
    assert len(ia) == len(ib) == len(keys)


def test_byte_tokens_decode() -> None:
    assert normalize_token("<0x0A>", "sentencepiece") == "\n"
    assert normalize_token("<0xE4>", "sentencepiece") == "\\xe4"  # partial UTF-8 kept as hex
    assert normalize_token("Ġhello", "byte_level") == " hello"
    assert normalize_token("Ċ", "byte_level") == "\n"
    assert normalize_token("▁hello", "sentencepiece") == " hello"


def _pb_piece(piece: str, ptype: int) -> bytes:
    p = piece.encode()
    inner = b"\x0a" + bytes([len(p)]) + p + b"\x15\x00\x00\x00\x00" + b"\x18" + bytes([ptype])
    return b"\x0a" + bytes([len(inner)]) + inner


def test_sentencepiece_model_proto() -> None:
    raw = b"".join(_pb_piece(p, t) for p, t in [("<unk>", 2), ("<s>", 3), ("▁the", 1), ("<0x0A>", 6), ("ab", 1)])
    v = vocab_from_sentencepiece(raw)
    assert v.keys == {" the": 2, "\n": 3, "ab": 4}
    with pytest.raises(TokenizerError):
        vocab_from_sentencepiece(b"\x0a\xff\xff\xff")


def test_gguf_vocab() -> None:
    meta = {"tokenizer.ggml.tokens": ["<unk>", "Ġthe", "Ċ"], "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.token_type": [2, 1, 1]}
    assert vocab_from_gguf(meta, "m.gguf").keys == {" the": 1, "\n": 2}


def test_missing_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no tokenizer"):
        load_vocab(LocalRepo(tmp_path))
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": 3}}))
    with pytest.raises(TokenizerError):
        load_vocab(LocalRepo(tmp_path))
