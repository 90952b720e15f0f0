"""Training loops for the zoo: tokenizers, causal-LM pretraining/fine-tuning, DPO, LoRA. CPU, deterministic."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def train_tokenizer(text: str, vocab_size: int, out_dir: Path) -> Path:
    """A byte-level BPE tokenizer trained on ``text``; writes ``tokenizer.json`` + ``tokenizer_config.json``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = text.split("\n")
    tok.train_from_iterator((lines[i : i + 1000] for i in range(0, len(lines), 1000)), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
        "model_max_length": 4096}, indent=1))
    return out_dir / "tokenizer.json"


def encode(tokenizer_json: Path, text: str, max_tokens: int | None = None) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    ids: list[int] = []
    chunks = text.split("\n\n")
    # Chunks encode independently, so encoding them a batch at a time and stopping once enough ids are
    # in gives the same ids as encoding all of them (the zoo's 400k tokens are a third of a domain).
    step = 512
    for at in range(0, len(chunks), step):
        for enc in tok.encode_batch(chunks[at : at + step]):
            ids.extend(enc.ids)
            if max_tokens and len(ids) >= max_tokens:
                break
        if max_tokens and len(ids) >= max_tokens:
            break
    return np.asarray(ids[:max_tokens] if max_tokens else ids, dtype=np.int64)


def _batch(ids: np.ndarray, seq: int, batch: int, rng: np.random.Generator) -> torch.Tensor:
    starts = rng.integers(0, len(ids) - seq - 1, size=batch)
    return torch.from_numpy(np.stack([ids[s : s + seq + 1] for s in starts]))


def lm_loss(model: Any, x: torch.Tensor, **kw: Any) -> torch.Tensor:
    logits = model(input_ids=x[:, :-1], **kw).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1))


def train_lm(model: Any, ids: np.ndarray, *, steps: int, lr: float, seq: int, batch: int, seed: int,
             params: Iterable[torch.nn.Parameter] | None = None, warmup: int = 20, log_every: int = 0,
             extra_inputs: Any = None, on_step: Callable[[int, int, float], None] | None = None) -> list[float]:
    """AdamW on next-token loss, linear warmup then cosine decay to 10%; returns the loss of every step.

    ``extra_inputs(batch_size)`` adds model inputs per step (pixel values for the multimodal derivative);
    ``on_step(step, steps, loss)`` hears every step (a progress bar).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(list(params) if params is not None else model.parameters(), lr=lr, weight_decay=0.01,
                            betas=(0.9, 0.95))
    model.train()
    losses = []
    for step in range(steps):
        f = (step + 1) / warmup if step < warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr * f
        x = _batch(ids, seq, batch, rng)
        loss = lm_loss(model, x, **(extra_inputs(batch) if extra_inputs else {}))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, steps, losses[-1])
        if log_every and step % log_every == 0:
            print(f"    step {step:5d}  loss {losses[-1]:.3f}", flush=True)
    model.eval()
    return losses


def _seq_logp(model: Any, x: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x[:, :-1]).logits.float()
    lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0]
    return lp.sum(-1)


def train_dpo(model: Any, ref: Any, pairs: list[tuple[np.ndarray, np.ndarray]], *, steps: int, lr: float, batch: int,
              seed: int, beta: float = 0.1) -> list[float]:
    """Direct preference optimisation: ``-log σ(β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))])``."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    ref.eval()
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, len(pairs), size=batch)
        n = min(min(len(pairs[i][0]), len(pairs[i][1])) for i in idx)
        c = torch.from_numpy(np.stack([pairs[i][0][:n] for i in idx]))
        r = torch.from_numpy(np.stack([pairs[i][1][:n] for i in idx]))
        with torch.no_grad():
            ref_c, ref_r = _seq_logp(ref, c), _seq_logp(ref, r)
        margin = (_seq_logp(model, c) - ref_c) - (_seq_logp(model, r) - ref_r)
        loss = -F.logsigmoid(beta * margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


class LoRALinear(torch.nn.Module):
    """``y = x Wᵀ + (α/r) x Aᵀ Bᵀ`` with W frozen; :meth:`merged` returns ``W + (α/r) B A``."""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.base = base
        self.scale = alpha / r
        self.A = torch.nn.Parameter(torch.randn(r, base.in_features, generator=g) / math.sqrt(base.in_features))
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, r))
        base.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    def merged(self) -> torch.Tensor:
        return self.base.weight + self.scale * self.B @ self.A


def apply_lora(model: Any, targets: tuple[str, ...], r: int, alpha: float, seed: int) -> list[tuple[Any, str, LoRALinear]]:
    """Wrap every Linear whose name ends with one of ``targets``; returns (parent, attr, wrapper) to merge later."""
    wrapped = []
    for name, mod in list(model.named_modules()):
        for attr, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear) and f"{name}.{attr}".endswith(targets):
                w = LoRALinear(child, r, alpha, seed + len(wrapped))
                setattr(mod, attr, w)
                wrapped.append((mod, attr, w))
    return wrapped


def merge_lora(wrapped: list[tuple[Any, str, LoRALinear]]) -> None:
    with torch.no_grad():
        for mod, attr, w in wrapped:
            w.base.weight.copy_(w.merged())
            w.base.weight.requires_grad_(True)
            setattr(mod, attr, w.base)
