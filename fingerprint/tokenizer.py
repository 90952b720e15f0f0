"""Token vocabularies, with strings normalized so that two tokenizer families can be intersected.

Sources, in order: ``tokenizer.json`` (BPE/WordPiece dict or Unigram list), ``tokenizer.model``
(SentencePiece protobuf, parsed here with bounds), ``vocab.json`` (GPT-2 style), ``vocab.txt``
(WordPiece, one token per line, as older BERT-family repos ship it), or GGUF metadata
(``tokenizer.ggml.tokens``). Normalization maps every token to the text it stands for:
``▁`` (SentencePiece) and ``Ġ`` (byte-level BPE) become a space, byte tokens (``<0x0A>``, the GPT-2
byte alphabet) are decoded, and byte sequences that are not valid UTF-8 are kept as
``\\x..`` hex so that they never collide with text. When two ids normalize to the same key the
lowest id wins (tiktoken-style lossy decodes produce such duplicates).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache

from fingerprint.errors import TokenizerError
from fingerprint.io.source import Repo

MAX_TOKENIZER_BYTES = 64 * 1024 * 1024
MAX_VOCAB = 2_000_000
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@cache
def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character → byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _bytes_key(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02x}" for b in data)


def normalize_token(token: str, style: str) -> str | None:
    """Map one raw token string to its normalized key (``None`` if it cannot be decoded).

    Args:
        token: the token as stored by the tokenizer.
        style: ``byte_level`` (GPT-2 alphabet), ``sentencepiece`` (``▁`` and ``<0xNN>``), or ``plain``.
    """
    if style == "byte_level":
        dec = _gpt2_byte_decoder()
        try:
            return _bytes_key(bytes(dec[c] for c in token))
        except KeyError:
            return token  # added tokens outside the byte alphabet are literal text
    if style == "sentencepiece":
        m = _BYTE_TOKEN.match(token)
        if m:
            return _bytes_key(bytes([int(m.group(1), 16)]))
        return token.replace("▁", " ")
    return token


@dataclass(frozen=True)
class Vocab:
    """A normalized vocabulary.

    Attributes:
        keys: normalized key → token id (first id wins on collisions; special tokens excluded).
        size: number of ids in the raw vocabulary.
        style: how strings were normalized.
        source: the file it came from.
    """

    keys: dict[str, int]
    size: int
    style: str
    source: str

    def digest(self) -> str:
        """sha256 over the sorted (key, id) pairs: equal for identical tokenizers."""
        h = hashlib.sha256()
        for k, i in sorted(self.keys.items()):
            h.update(k.encode("utf-8", "surrogatepass") + b"\x00" + str(i).encode() + b"\x01")
        return h.hexdigest()


def _build(pairs: list[tuple[str, int]], style: str, size: int, source: str, special: set[str]) -> Vocab:
    if size > MAX_VOCAB:
        raise TokenizerError(source, f"vocabulary of {size} tokens exceeds the {MAX_VOCAB} limit")
    keys: dict[str, int] = {}
    for tok, idx in sorted(pairs, key=lambda p: p[1]):
        if tok in special:
            continue
        key = normalize_token(tok, style)
        if key is not None and key not in keys:
            keys[key] = idx
    if not keys:
        raise TokenizerError(source, "empty vocabulary")
    return Vocab(keys, size, style, source)


def vocab_from_tokenizer_json(raw: bytes, source: str = "tokenizer.json") -> Vocab:
    """Read a Hugging Face ``tokenizer.json`` (BPE, WordPiece or Unigram)."""
    try:
        tj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TokenizerError(source, f"not valid JSON: {e}") from e
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict):
        raise TokenizerError(source, "no 'model' section")
    vocab = model.get("vocab")
    pairs: list[tuple[str, int]]
    if isinstance(vocab, dict):
        pairs = [(t, i) for t, i in vocab.items() if isinstance(t, str) and isinstance(i, int) and i >= 0]
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        pairs = [(e[0], i) for i, e in enumerate(vocab) if isinstance(e, list) and e and isinstance(e[0], str)]
    else:
        raise TokenizerError(source, "model.vocab is neither a dict nor a list")
    special: set[str] = set()
    added = tj.get("added_tokens")
    for at in added if isinstance(added, list) else []:
        if isinstance(at, dict) and isinstance(at.get("content"), str) and isinstance(at.get("id"), int):
            if at.get("special"):
                special.add(at["content"])
            elif at["content"] not in dict(pairs):
                pairs.append((at["content"], at["id"]))
    text = json.dumps([tj.get("pre_tokenizer"), tj.get("decoder")])
    if "ByteLevel" in text:
        style = "byte_level"
    elif "▁" in text or model.get("type") == "Unigram" or model.get("byte_fallback"):
        style = "sentencepiece"
    else:
        style = "plain"
    size = max((i for _, i in pairs), default=-1) + 1
    return _build(pairs, style, size, source, special)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise TokenizerError("tokenizer.model", "truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """Top-level protobuf fields: (number, wire type, value)."""
    out: list[tuple[int, int, bytes | int]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
            out.append((num, wt, v))
        elif wt == 1:
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise TokenizerError("tokenizer.model", "truncated length-delimited field")
            out.append((num, wt, buf[pos : pos + n]))
            pos += n
        elif wt == 5:
            pos += 4
        else:
            raise TokenizerError("tokenizer.model", f"unsupported protobuf wire type {wt}")
    return out


def vocab_from_sentencepiece(raw: bytes, source: str = "tokenizer.model") -> Vocab:
    """Read a SentencePiece ``ModelProto`` (field 1: pieces {1: piece, 2: score, 3: type})."""
    pairs: list[tuple[str, int]] = []
    special: set[str] = set()
    for num, wt, val in _fields(raw):
        if num != 1 or wt != 2 or not isinstance(val, bytes):
            continue
        piece, ptype = None, 1
        for n2, w2, v2 in _fields(val):
            if n2 == 1 and w2 == 2 and isinstance(v2, bytes):
                piece = v2.decode("utf-8", errors="surrogateescape")
            elif n2 == 3 and w2 == 0 and isinstance(v2, int):
                ptype = v2
        if piece is None:
            raise TokenizerError(source, "piece without a string")
        if ptype in (2, 3):  # UNKNOWN, CONTROL
            special.add(piece)
        pairs.append((piece, len(pairs)))
        if len(pairs) > MAX_VOCAB:
            raise TokenizerError(source, f"more than {MAX_VOCAB} pieces")
    if not pairs:
        raise TokenizerError(source, "no pieces found (not a SentencePiece model?)")
    return _build(pairs, "sentencepiece", len(pairs), source, special)


def vocab_from_gguf(metadata: dict[str, object], source: str) -> Vocab:
    """Read ``tokenizer.ggml.tokens`` (+ ``token_type``) from GGUF metadata."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise TokenizerError(source, "GGUF file has no tokenizer.ggml.tokens")
    types = metadata.get("tokenizer.ggml.token_type")
    kind = metadata.get("tokenizer.ggml.model")
    style = "byte_level" if kind == "gpt2" else "sentencepiece" if kind in ("llama", "t5") else "plain"
    special = set()
    if isinstance(types, list) and len(types) == len(tokens):
        special = {t for t, ty in zip(tokens, types) if ty in (2, 3)}  # UNKNOWN, CONTROL
    return _build([(t, i) for i, t in enumerate(tokens)], style, len(tokens), source, special)


#: Parsed ``tokenizer.json`` files by content digest: a derivative usually ships its base's tokenizer,
#: and a pair (or a crawl of one family) parses it once (0.05 s for a 32k vocabulary).
_PARSED: dict[bytes, Vocab] = {}
_PARSED_MAX = 8


def _tokenizer_json_cached(raw: bytes) -> Vocab:
    key = hashlib.sha256(raw).digest()
    hit = _PARSED.get(key)
    if hit is None:
        hit = vocab_from_tokenizer_json(raw)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = hit
    return hit


def load_vocab(repo: Repo) -> Vocab:
    """Load the vocabulary of a model directory from the first source available.

    Raises:
        TokenizerError: if no tokenizer file is present or none can be parsed.
    """
    if repo.exists("tokenizer.json"):
        return _tokenizer_json_cached(repo.read_bytes("tokenizer.json", MAX_TOKENIZER_BYTES))
    if repo.exists("tokenizer.model"):
        return vocab_from_sentencepiece(repo.read_bytes("tokenizer.model", MAX_TOKENIZER_BYTES))
    if repo.exists("vocab.json"):
        try:
            vj = json.loads(repo.read_bytes("vocab.json", MAX_TOKENIZER_BYTES).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError("vocab.json", f"not valid JSON: {e}") from e
        if not isinstance(vj, dict):
            raise TokenizerError("vocab.json", "not a token → id object")
        pairs = [(t, i) for t, i in vj.items() if isinstance(i, int)]
        return _build(pairs, "byte_level", max(i for _, i in pairs) + 1, "vocab.json", set())
    if repo.exists("vocab.txt"):  # WordPiece (BERT family) without a tokenizer.json: one token per line, id = line
        lines = repo.read_bytes("vocab.txt", MAX_TOKENIZER_BYTES).decode("utf-8", "replace").split("\n")
        pairs = [(t.rstrip("\r"), i) for i, t in enumerate(lines) if t.rstrip("\r")]
        special = {t for t, _ in pairs if t.startswith("[") and t.endswith("]") and t[1:-1].isupper()}
        return _build(pairs, "plain", len(pairs), "vocab.txt", special)
    raise TokenizerError(repo.name, "no tokenizer.json, tokenizer.model, vocab.json or vocab.txt")


def shared_tokens(a: Vocab, b: Vocab) -> tuple[list[int], list[int], list[str]]:
    """Token ids of the keys both vocabularies share, ordered by key.

    Returns:
        ``(ids_a, ids_b, keys)`` aligned lists.
    """
    keys = sorted(set(a.keys) & set(b.keys))
    return [a.keys[k] for k in keys], [b.keys[k] for k in keys], keys


