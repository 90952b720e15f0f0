"""HuRef invariant terms (Zeng et al., NeurIPS 2024), as a baseline.

On ``n`` rare shared tokens ``X̂`` (embedding rows) and each of the last two layers:
``M_a = X̂ W_Qᵀ W_K X̂ᵀ``, ``M_b = X̂ W_Vᵀ W_Oᵀ X̂ᵀ``, ``M_f = X̂ (W_gateᵀ ⊙ W_upᵀ) W_downᵀ X̂ᵀ``
(``W_upᵀ W_downᵀ`` without a gate). GQA keys/values are expanded with ``repeat_interleave``. Each
``n × n`` term is z-scored, all are concatenated, and ``ICS = cos(vec_A, vec_B)``. Raw (unfolded)
weights, as in the reference.

Rare tokens: HuRef keeps the 4096 least frequent Wikipedia tokens. Offline we count tokens of a
fixed corpus that every machine has — the Python standard library's ``.py`` sources (first 2 MB,
files in sorted order) — tokenized with model A's ``tokenizer.json``; shared tokens that occur are
ranked by ascending count. Without a usable ``tokenizer.json`` (e.g. GGUF) longer token strings are
taken as rarer (documented fallback).
"""

from __future__ import annotations

import functools
import hashlib
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.similarity.verdict import MIN_SHARED_TOKENS, NULL_DRAWS, NULL_SEED, CompareResult, build_result
from fingerprint.tokenizer import shared_tokens

CORPUS_BYTES = 2_000_000


@functools.cache
def reference_corpus() -> str:
    """The offline frequency corpus: the standard library's sources, sorted, first 2 MB."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for f in sorted(root.glob("*.py")):
        text = f.read_text("utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= CORPUS_BYTES:
            break
    return "".join(parts)[:CORPUS_BYTES]


def token_counts(m: CanonicalModel) -> dict[int, int] | None:
    """Token-id counts of the reference corpus under the model's tokenizer (None if unavailable)."""
    if m.spec.source_format != "safetensors" or not m.repo.exists("tokenizer.json"):
        return None
    raw = m.repo.read_bytes("tokenizer.json")
    digest = hashlib.sha256(raw).hexdigest()
    if digest not in _COUNTS:  # tokenizing 2 MB takes seconds; an evaluation would pay it twice per pair
        _COUNTS[digest] = _count(raw)
    return _COUNTS[digest]


_COUNTS: dict[str, dict[int, int] | None] = {}


def _count(raw: bytes) -> dict[int, int] | None:
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception:  # a tokenizer the library cannot build: use the fallback ranking
        return None
    counts: dict[int, int] = {}
    text = reference_corpus()
    for i in range(0, len(text), 100_000):
        for t in tok.encode(text[i : i + 100_000], add_special_tokens=False).ids:
            counts[t] = counts.get(t, 0) + 1
    return counts


def select_rare(a: CanonicalModel, ids_a: list[int], ids_b: list[int], keys: list[str], n: int) -> tuple[list[int], list[int]]:
    """The ``n`` rarest shared tokens (see module docstring)."""
    counts = token_counts(a)
    if counts is not None:
        order = sorted((i for i in range(len(keys)) if counts.get(ids_a[i], 0) > 0),
                       key=lambda i: (counts[ids_a[i]], keys[i]))
        if len(order) < n:  # not enough tokens seen in the corpus: add never-seen ones
            seen = set(order)
            order += sorted((i for i in range(len(keys)) if i not in seen), key=lambda i: (-len(keys[i]), keys[i]))
    else:
        order = sorted(range(len(keys)), key=lambda i: (-len(keys[i]), keys[i]))
    sel = order[:n]
    return [ids_a[i] for i in sel], [ids_b[i] for i in sel]


def _expand(w: np.ndarray, n_heads: int, n_kv: int, head_dim: int) -> np.ndarray:
    if n_kv == n_heads:
        return w
    return np.repeat(w.reshape(n_kv, head_dim, -1), n_heads // n_kv, axis=0).reshape(n_heads * head_dim, -1)


def invariant_terms(m: CanonicalModel, ids: list[int], n_layers: int = 2) -> list[torch.Tensor]:
    """The z-scored invariant terms of the last ``n_layers`` layers on tokens ``ids``."""
    s = m.spec
    x = torch.from_numpy(m.embed_rows(ids)).to(torch.float64)
    terms = []
    for layer in range(s.num_layers - n_layers, s.num_layers):
        q, k = m.attention(layer, fold=False)
        v = m.value(layer, fold=False)
        k = _expand(k, s.num_heads, s.num_kv_heads, s.head_dim)
        v = _expand(v, s.num_heads, s.num_kv_heads, s.head_dim)
        o = m.output(layer)
        mats = [torch.tensor(q).T.double() @ torch.tensor(k).double(), torch.tensor(v).T.double() @ torch.tensor(o).T.double()]
        if s.num_experts == 0 and (m.has("up", layer) or m.has("gate_up", layer)):
            gate, up, down = m.mlp(layer, fold=False)
            inner = torch.tensor(up).T.double()
            if gate is not None:
                inner = torch.tensor(gate).T.double() * inner
            mats.append(inner @ torch.tensor(down).T.double())
        for mat in mats:
            t = x @ mat @ x.T
            terms.append((t - t.mean()) / t.std().clamp_min(1e-30))
    return terms


def ics(a_terms: list[torch.Tensor], b_terms: list[torch.Tensor]) -> float:
    """Cosine of the concatenated z-scored terms."""
    va = torch.cat([t.flatten() for t in a_terms])
    vb = torch.cat([t.flatten() for t in b_terms])
    return float(va @ vb / (va.norm() * vb.norm()).clamp_min(1e-30))


def compare_huref(a: CanonicalModel, b: CanonicalModel, n_tokens: int = 4096) -> CompareResult:
    """HuRef's invariant-terms cosine (ICS) on rare shared tokens, against a null of random permutations
    of the selected tokens (the terms' row/column order is what a derivative keeps)."""
    t0 = time.perf_counter()
    ids_a, ids_b, keys = shared_tokens(a.vocab(), b.vocab())
    if len(ids_a) < MIN_SHARED_TOKENS:
        raise ComparisonError(f"the two tokenizers share only {len(ids_a)} tokens; HuRef needs shared tokens")
    sa, sb = select_rare(a, ids_a, ids_b, keys, min(n_tokens, len(ids_a)))
    ta, tb = invariant_terms(a, sa), invariant_terms(b, sb)
    if len(ta) != len(tb):
        raise ComparisonError("HuRef terms differ in number (one model lacks an MLP term)")
    score = ics(ta, tb)
    rng = np.random.default_rng(NULL_SEED)
    null = []
    for _ in range(NULL_DRAWS):
        p = torch.from_numpy(rng.permutation(len(sb)))
        null.append(ics(ta, [t[p][:, p] for t in tb]))
    return build_result("huref", score, null, alignment="token-space (none needed)",
                        background=f"per-pair null: {NULL_DRAWS} random permutations of the selected tokens (seed {NULL_SEED})",
                        bytes_read={"a": a.bytes_read, "b": b.bytes_read}, seconds=time.perf_counter() - t0,
                        shared=len(ids_a), notes=[f"{len(sa)} rare shared tokens, last 2 layers"])
