"""REEF (Zhang et al., ICLR 2025), as a baseline: CKA of hidden representations on probe texts.

Each of ~200 neutral statements shipped in ``fingerprint/data/probes.txt`` is encoded alone; the
hidden state after decoder block ``ℓ`` at the last token is kept, ``ℓ = round(0.5625 · L)`` (REEF's
layer 18 of 32). Features are z-scored over the statements, then biased linear CKA is taken.
Needs ``transformers`` (extra ``[reef]``); models load with ``trust_remote_code=False`` from
safetensors only.
"""

from __future__ import annotations

import sys
import time
from importlib import resources

import numpy as np
import torch
from tqdm import tqdm

from fingerprint.canonical import CanonicalModel
from fingerprint.errors import ComparisonError
from fingerprint.similarity.cka import feature_cka
from fingerprint.similarity.verdict import NULL_DRAWS, NULL_SEED, CompareResult, build_result


def probe_texts() -> list[str]:
    text = resources.files("fingerprint").joinpath("data/probes.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def representations(m: CanonicalModel, texts: list[str], device: str = "cpu") -> np.ndarray:
    """Last-token hidden states after the middle block, one row per text."""
    try:
        import transformers as tf
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ComparisonError("REEF needs transformers: pip install 'model-lineage[reef]'") from e
    if m.spec.source_format != "safetensors" or not m.repo.exists("tokenizer.json"):
        raise ComparisonError(f"{m.repo.name}: REEF needs a safetensors model with tokenizer.json")
    tok = Tokenizer.from_str(m.repo.read_bytes("tokenizer.json").decode("utf-8"))
    tf.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one "Loading weights" bar per model would bury the command's output
    model = tf.AutoModelForCausalLM.from_pretrained(m.repo.name, trust_remote_code=False, use_safetensors=True,
                                                    dtype=torch.float32)
    model = model.to(device).eval()  # type: ignore[arg-type]
    layer = min(m.spec.num_layers, max(1, round(0.5625 * m.spec.num_layers)))
    rows = []
    # the long part of REEF and of the second opinion (a forward pass per text): say what is running.
    # disable=None: shown on a terminal only; TQDM_DISABLE=1 turns it off everywhere
    bar = tqdm(texts, desc=f"representations of {m.repo.name[-48:]}", unit="text", leave=False, disable=None,
               file=sys.stderr)
    with torch.no_grad():
        for t in bar:
            ids = tok.encode(t).ids or [0]
            out = model(torch.tensor([ids], device=device), output_hidden_states=True)
            rows.append(out.hidden_states[layer][0, -1].float().cpu().numpy())
    return np.stack(rows)


def zscore(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    return out


def compare_reef(a: CanonicalModel, b: CanonicalModel, device: str = "cpu", texts: list[str] | None = None) -> CompareResult:
    """REEF's biased CKA of z-scored middle-layer last-token representations on ``texts`` (default: the
    shipped probe statements), against a null of random text pairings."""
    t0 = time.perf_counter()
    texts = texts or probe_texts()
    xa = torch.from_numpy(zscore(representations(a, texts, device)))
    xb = torch.from_numpy(zscore(representations(b, texts, device)))
    score = feature_cka(xa, xb, unbiased=False)
    rng = np.random.default_rng(NULL_SEED)
    null = [feature_cka(xa, xb[torch.from_numpy(rng.permutation(len(texts)))], unbiased=False) for _ in range(NULL_DRAWS)]
    return build_result("reef", score, null, alignment="representations (none needed)",
                        background=f"per-pair null: {NULL_DRAWS} random pairings of the {len(texts)} probe texts (seed {NULL_SEED})",
                        bytes_read={"a": a.bytes_read, "b": b.bytes_read}, seconds=time.perf_counter() - t0, shared=0,
                        notes=[f"{len(texts)} probe texts"])
