"""Canonical view of a checkpoint: tensors by role, fused QKV split by layout, norm gains folded.

Whatever the format (safetensors, sharded, GGUF, fp8) or family, :class:`CanonicalModel` serves
the same fp32 matrices in Hugging Face orientation ``(out, in)`` and HF ``rotate_half`` row order:

* fused QKV is split by its layout (contiguous, per-head interleaved, grouped by KV head), never by
  naive thirds; GPT-2 Conv1D weights are transposed; GGUF's llama-style Q/K row permutation is
  undone;
* the gains of the norm feeding a matrix are folded into its input columns,
  ``W̃ = W · diag(γ + offset)`` (offset 1 for Gemma's ``(1 + γ)``), for Q, K, V (attention-input
  norm), gate and up (MLP-input norm) and lm_head (final norm). After folding, moving gains between
  a norm and its consumers (AWQ/SmoothQuant scaling, attack T5) changes nothing;
* GQA keys keep their ``n_kv · head_dim`` rows (never tiled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fingerprint.architectures import (
    ArchitectureDef,
    FusedQKV,
    gguf_architecture,
    load_wrappers,
    resolve_architecture,
)
from fingerprint.errors import ArchitectureMismatchError, CheckpointFormatError, TensorNotFoundError
from fingerprint.io.gguf import GGUFReader
from fingerprint.io.quant import QuantizedSafetensors
from fingerprint.io.safetensors import SafetensorsReader, parse_json_bounded
from fingerprint.io.source import LocalRepo, Repo, SubRepo
from fingerprint.io.tensors import TensorInfo, TensorReader, gather_rows
from fingerprint.layouts import mla_heads, split_fused_qkv, unpermute_gguf_rows
from fingerprint.tokenizer import Vocab, load_vocab, vocab_from_gguf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Dimensions and conventions of a model, resolved from its config and tensors.

    Attributes:
        architecture: the architecture file used (``llama``, ``gguf``...).
        source_format: ``safetensors`` or ``gguf``.
        declared_architecture: the HF class (or GGUF ``general.architecture``) as declared.
        num_layers, hidden_size, num_heads, num_kv_heads, head_dim: attention geometry.
        vocab_rows: rows of the input embedding.
        intermediate_size: MLP width, when known.
        tied: whether lm_head is the input embedding.
        rope_style: pairing of canonical Q/K rows (``half``, ``interleaved``, ``none``).
        rotary_dim: rotary dimensions per head (0 without RoPE).
        norm_kind: ``rms``, ``layer`` or ``none``.
        has_qk_norm: Q/K normalized per head after projection (Qwen3, OLMo-2, Gemma-3).
        num_experts: MoE experts per layer (0 for dense).
        wrapper: the wrapper class for vision-language checkpoints, if any.
    """

    architecture: str
    source_format: str
    declared_architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_rows: int
    intermediate_size: int | None
    tied: bool
    rope_style: str
    rotary_dim: int
    norm_kind: str
    has_qk_norm: bool
    num_experts: int
    wrapper: str | None


def _first(cfg: dict[str, Any], keys: list[str]) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return None


def _int(cfg: dict[str, Any], keys: list[str], what: str, where: str) -> int:
    v = _first(cfg, keys)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 10_000_000:
        raise ArchitectureMismatchError(where, f"config has no valid {what} (looked for {', '.join(keys)})")
    return v


def _match_when(rule: FusedQKV, cfg: dict[str, Any]) -> bool:
    return all(cfg.get(k) == v for k, v in rule.when.items())


class CanonicalModel:
    """A checkpoint seen through its architecture file. Construct with :func:`open_model`."""

    def __init__(
        self,
        repo: Repo,
        reader: TensorReader,
        arch: ArchitectureDef,
        config: dict[str, Any],
        source_format: str,
        declared: str,
        wrapper: str | None,
    ) -> None:
        self.repo = repo
        self.reader = reader
        self.arch = arch
        self.config = config
        self._names = self._build_lookup(reader.tensors)
        self._cache: dict[str, np.ndarray] = {}
        self._mla = (0, 0, 0, 0)  # (nope, rope, v, kv_rank) of a multi-head latent attention model
        self._layer_map: list[int] | None = None  # a hybrid's attention layers: canonical index → stored index
        self.spec = self._resolve_spec(source_format, declared, wrapper)
        self._vocab: Vocab | None = None

    # -- names ---------------------------------------------------------------------------------
    @staticmethod
    def _build_lookup(tensors: dict[str, TensorInfo]) -> dict[str, str]:
        """Canonical-prefix name → stored name, after dropping towers and stripping wrappers."""
        wr = load_wrappers()
        out: dict[str, str] = {}
        for stored in tensors:
            if any(stored.startswith(p) for p in wr.drop_prefixes):
                continue
            name = stored
            for old, new in wr.rename_prefixes:
                if name.startswith(old):
                    name = new + name[len(old) :]
                    break
            if name in out and out[name] != stored:
                raise CheckpointFormatError(stored, f"two tensors map to {name!r} after removing wrapper prefixes")
            out[name] = stored
        return out

    def _templates(self, role: str) -> list[str]:
        t = self.arch.weights.get(role) or self.arch.layer_weights.get(role)  # type: ignore[call-overload]
        if t is None:
            return []
        return [t] if isinstance(t, str) else list(t)

    def name(self, role: str, layer: int | None = None) -> str | None:
        """The stored tensor name for a role (``None`` if the checkpoint lacks it).

        In a hybrid (``hybrid`` in its architecture file) ``layer`` counts attention layers only.
        """
        if layer is not None and self._layer_map is not None:
            if not 0 <= layer < len(self._layer_map):
                return None
            layer = self._layer_map[layer]
        for tpl in self._templates(role):
            key = tpl.replace("${layer}", str(layer)).replace("${prev}", str(layer - 1)) if layer is not None else tpl
            if key in self._names:
                return self._names[key]
        return None

    def has(self, role: str, layer: int | None = None) -> bool:
        return self.name(role, layer) is not None

    def info(self, role: str, layer: int | None = None) -> TensorInfo:
        n = self.name(role, layer)
        if n is None:
            raise TensorNotFoundError(f"{role}" + (f"[{layer}]" if layer is not None else ""), self.repo.name)
        return self.reader.tensors[n]

    def _read(self, role: str, layer: int | None = None, rows: tuple[int, int] | None = None) -> np.ndarray:
        n = self.name(role, layer)
        if n is None:
            raise TensorNotFoundError(f"{role}" + (f"[{layer}]" if layer is not None else ""), self.repo.name)
        w = self.reader.read(n, rows)
        if role in self.arch.transposed:
            w = np.ascontiguousarray(w.T)
        return w

    # -- spec ----------------------------------------------------------------------------------
    def _resolve_spec(self, source_format: str, declared: str, wrapper: str | None) -> ModelSpec:
        ck, cfg, where = self.arch.config, self.config, self.repo.name
        n_layers = _int(cfg, ck.num_layers, "layer count", where)
        if self.arch.hybrid:  # state-space, convolution or linear-attention layers carry no Q/K: skip them
            self._layer_map = [i for i in range(n_layers) if self.has("q", i) or self.has("qkv", i)]
            if not self._layer_map:
                raise ArchitectureMismatchError(where, f"none of the {n_layers} layers has attention to read")
            n_layers = len(self._layer_map)
        d = _int(cfg, ck.hidden_size, "hidden size", where)
        n_heads = _int(cfg, ck.num_heads, "head count", where)
        kv = _first(cfg, ck.num_kv_heads)
        if self.arch.name == "falcon" and kv is None:
            kv = 1 if cfg.get("multi_query", True) and not cfg.get("new_decoder_architecture") else n_heads
        elif kv is None and _first(cfg, ck.multi_query) is True:
            kv = 1
        n_kv = kv if isinstance(kv, int) and kv > 0 else n_heads
        hd = _first(cfg, ck.head_dim)
        head_dim = hd if isinstance(hd, int) and hd > 0 else d // n_heads
        if self.arch.mla is not None:  # every head has its own (materialised) key: see fingerprint.layouts
            self._mla = self._mla_dims(cfg, where)
            head_dim, n_kv = self._mla[0] + self._mla[1], n_heads
        if n_heads % n_kv:
            raise ArchitectureMismatchError(where, f"{n_heads} heads not divisible by {n_kv} KV heads")
        tie_v = _first(cfg, ck.tie_word_embeddings)
        tied = bool(tie_v) if tie_v is not None else self.arch.tied_default
        if not self.has("lm_head"):
            tied = True
        elif source_format == "safetensors" and tie_v is None and not self.arch.tied_default:
            tied = False
        rope = self.arch.rope.style
        rotary = 0
        if rope != "none":
            rdim = _first(cfg, ck.rotary_dim)
            frac = _first(cfg, ck.rotary_fraction)
            frac = frac if isinstance(frac, (int, float)) and 0 < frac <= 1 else self.arch.rope.default_fraction
            rotary = rdim if isinstance(rdim, int) and 0 < rdim <= head_dim else int(head_dim * frac)
            rotary = self._mla[1] if self.arch.mla is not None else rotary - rotary % 2
        inter = _first(cfg, ck.intermediate_size)
        n_exp = _first(cfg, ck.num_experts)
        embed = self.info("embed")
        spec = ModelSpec(
            architecture=self.arch.name,
            source_format=source_format,
            declared_architecture=declared,
            num_layers=n_layers,
            hidden_size=d,
            num_heads=n_heads,
            num_kv_heads=n_kv,
            head_dim=head_dim,
            vocab_rows=embed.shape[0] if embed.shape else 0,
            intermediate_size=inter if isinstance(inter, int) else None,
            tied=tied,
            rope_style=rope,
            rotary_dim=rotary,
            norm_kind=self.arch.norm.kind,
            has_qk_norm=self.has("q_norm", 0),
            num_experts=n_exp if isinstance(n_exp, int) else 0,
            wrapper=wrapper,
        )
        self._check_shapes(spec)
        return spec

    def _mla_dims(self, cfg: dict[str, Any], where: str) -> tuple[int, int, int, int]:
        """``(nope, rope, v, kv_rank)`` of a multi-head latent attention config."""
        m = self.arch.mla
        assert m is not None
        return (_int(cfg, m.qk_nope_head_dim, "qk_nope_head_dim", where), _int(cfg, m.qk_rope_head_dim, "qk_rope_head_dim", where),
                _int(cfg, m.v_head_dim, "v_head_dim", where), _int(cfg, m.kv_lora_rank, "kv_lora_rank", where))

    def _check_shapes(self, s: ModelSpec) -> None:
        where = self.repo.name
        e = self.info("embed")
        if len(e.shape) != 2 or e.shape[1] != s.hidden_size:
            raise ArchitectureMismatchError(where, f"embedding shape {e.shape} does not match hidden size {s.hidden_size}")
        for layer in (0, s.num_layers - 1):
            if not (self.has("q", layer) or self.has("qkv", layer) or self.has("q_b", layer)):
                raise ArchitectureMismatchError(where, f"layer {layer}: no query projection found")
        for layer in range(s.num_layers, s.num_layers + 1):
            if self.has("q", layer) or self.has("qkv", layer):
                raise ArchitectureMismatchError(where, f"tensors for layer {layer} exist but config says {s.num_layers} layers")
        if self.has("q", 0) and self.has("k", 0):
            q, k = self.info("q", 0), self.info("k", 0)
            qs = q.shape[::-1] if "q" in self.arch.transposed else q.shape
            ks = k.shape[::-1] if "k" in self.arch.transposed else k.shape
            q_rows = s.num_heads * s.head_dim * (2 if self.arch.q_gated else 1)
            if tuple(qs) != (q_rows, s.hidden_size):
                raise ArchitectureMismatchError(where, f"q_proj shape {tuple(qs)} != ({q_rows}, {s.hidden_size})")
            if tuple(ks) != (s.num_kv_heads * s.head_dim, s.hidden_size):
                raise ArchitectureMismatchError(where, f"k_proj shape {tuple(ks)} != ({s.num_kv_heads * s.head_dim}, {s.hidden_size})")

    # -- canonical tensors ---------------------------------------------------------------------
    def gain(self, role: str, layer: int | None = None) -> np.ndarray | None:
        """The effective gain vector of a norm (``γ + offset``), or ``None`` if it has none."""
        if self.spec.norm_kind == "none" or not self.has(role, layer):
            return None
        g = self._read(role, layer)
        offset = self.arch.norm.gain_offset
        if self.spec.source_format == "gguf":
            offset = 0.0  # llama.cpp stores Gemma gains with the +1 already added
        return (g + offset).astype(np.float32) if offset else g

    def _fused_rule(self) -> FusedQKV:
        for rule in self.arch.fused_qkv:
            if _match_when(rule, self.config):
                return rule
        raise ArchitectureMismatchError(self.repo.name, "fused QKV present but no layout rule matches the config")

    def _qkv_raw(self, layer: int, need_v: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        s = self.spec
        if self.arch.mla is not None:
            nope, rope, v_dim, rank = self._mla
            qf = self._read("q", layer) if self.has("q", layer) else (
                self._read("q_a", layer), self.gain("q_a_norm", layer), self._read("q_b", layer))
            try:
                return mla_heads(qf, self._read("kv_a", layer), self.gain("kv_a_norm", layer), self._read("kv_b", layer),
                                 s.num_heads, nope, rope, v_dim, rank)
            except ValueError as e:
                raise ArchitectureMismatchError(self.repo.name, f"layer {layer}: {e}") from e
        if self.has("q", layer):
            q, k = self._read("q", layer), self._read("k", layer)
            v = self._read("v", layer) if need_v else None
            if self.arch.q_gated:  # rows per head are [query | output gate]; the gate never meets a key
                q = q.reshape(s.num_heads, 2, s.head_dim, -1)[:, 0].reshape(s.num_heads * s.head_dim, -1)
        else:
            key = f"qkv{layer}"
            w = self._cache.get(key)
            if w is None:
                w = self._read("qkv", layer)
                rule = self._fused_rule()
                if rule.transposed:
                    w = np.ascontiguousarray(w.T)
                self._cache.clear()
                self._cache[key] = w
            q, k, v = split_fused_qkv(w, self._fused_rule().layout, s.num_heads, s.num_kv_heads, s.head_dim)
        if s.source_format == "gguf" and self._gguf_permuted():
            q = unpermute_gguf_rows(q, s.num_heads)
            k = unpermute_gguf_rows(k, s.num_kv_heads)
        return q, k, v

    def _gguf_permuted(self) -> bool:
        return self.spec.declared_architecture in self.arch.gguf_qk_permuted

    def attention(self, layer: int, fold: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Folded ``(W̃_Q, W̃_K)`` of a layer, ``(H·hd, d)`` and ``(KV·hd, d)`` (raw if ``fold=False``)."""
        q, k, _ = self._qkv_raw(layer, need_v=False)
        g = self.gain("norm_in", layer) if fold else None
        if g is not None:
            q, k = q * g[None, :], k * g[None, :]
        return np.ascontiguousarray(q, dtype=np.float32), np.ascontiguousarray(k, dtype=np.float32)

    def value(self, layer: int, fold: bool = True) -> np.ndarray:
        """Folded ``W̃_V`` of a layer (raw if ``fold=False``)."""
        _, _, v = self._qkv_raw(layer)
        assert v is not None
        g = self.gain("norm_in", layer) if fold else None
        return v * g[None, :] if g is not None else v

    def output(self, layer: int) -> np.ndarray:
        """``W_O`` of a layer, ``(d, H·hd)``."""
        return self._read("o", layer)

    def mlp(self, layer: int, fold: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Folded ``(W̃_gate or None, W̃_up, W_down)`` of a dense layer (raw if ``fold=False``)."""
        gate: np.ndarray | None
        if self.has("gate_up", layer):
            gu = self._read("gate_up", layer)
            half = gu.shape[0] // 2
            gate, up = gu[:half], gu[half:]
        else:
            gate = self._read("gate", layer) if self.has("gate", layer) else None
            up = self._read("up", layer)
        down = self._read("down", layer)
        g = self.gain("norm_mlp", layer) if fold else None
        if g is not None:
            up = up * g[None, :]
            gate = gate * g[None, :] if gate is not None else None
        return gate, up, down

    def embed(self, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Input embedding rows ``(n, d)`` (no folding: the first norm acts after the residual add)."""
        return self._read("embed", None, rows)

    def embed_rows(self, ids: list[int]) -> np.ndarray:
        """Embedding rows for arbitrary token ids, reading nearby rows as single ranges."""
        name = self.name("embed")
        pick = getattr(self.reader, "read_rows", None)
        if name is not None and pick is not None and "embed" not in self.arch.transposed:
            # Decodes only the wanted rows of each range (the rows read through are skipped raw).
            rows: np.ndarray = pick(name, ids)
            return rows
        return _gather_rows(lambda a, b: self._read("embed", None, (a, b)), ids, self.spec.hidden_size)

    def lm_head_rows(self, ids: list[int]) -> np.ndarray | None:
        """Folded ``lm_head · diag(γ_final)`` rows of an untied model, else ``None``."""
        if self.spec.tied or not self.has("lm_head"):
            return None
        name = self.name("lm_head")
        pick = getattr(self.reader, "read_rows", None)
        if name is not None and pick is not None and "lm_head" not in self.arch.transposed:
            w: np.ndarray = pick(name, ids)  # as embed_rows: the source's gap, only the wanted rows decoded
        else:
            w = _gather_rows(lambda a, b: self._read("lm_head", None, (a, b)), ids, self.spec.hidden_size)
        g = self.gain("norm_final")
        return w * g[None, :] if g is not None else w

    def qk_norms(self, layer: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Per-head (or full-width) Q/K norm gains after projection, if the model has them."""
        if not self.has("q_norm", layer):
            return None, None
        off = self.arch.norm.gain_offset if self.spec.source_format != "gguf" else 0.0
        return self._read("q_norm", layer) + off, self._read("k_norm", layer) + off

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def attention_layers(self) -> list[int]:
        """The stored index of each canonical layer: all of them, or a hybrid's attention layers."""
        return list(self._layer_map) if self._layer_map is not None else list(range(self.spec.num_layers))

    def fingerprint_tensors(self, with_lm_head: bool = True) -> list[TensorInfo]:
        """The tensors a weight fingerprint reads: embedding, Q/K (or fused QKV), their norms."""
        roles_global = ["embed"] + (["lm_head", "norm_final"] if with_lm_head and not self.spec.tied else [])
        out = [self.info(r) for r in roles_global if self.has(r)]
        for layer in range(self.spec.num_layers):
            out += self.qk_tensors(layer)
            roles = ["norm_in", "q_norm", "k_norm", "q_bias", "k_bias"]
            out += [self.info(r, layer) for r in roles if self.has(r, layer)]
        return out

    def qk_tensors(self, layer: int) -> list[TensorInfo]:
        """The stored tensors a layer's Q and K come from (a fused QKV, or MLA's factors, whole)."""
        if self.arch.mla is not None:
            roles = ["q", "q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b"]
        else:
            roles = ["q", "k"] if self.has("q", layer) else ["qkv"]
        return [self.info(r, layer) for r in roles if self.has(r, layer)]

    def vocab(self) -> Vocab:
        """The normalized vocabulary (from tokenizer files, or GGUF metadata)."""
        if self._vocab is None:
            if self.spec.source_format == "gguf":
                self._vocab = vocab_from_gguf(self.reader.metadata, self.repo.name)
            else:
                self._vocab = load_vocab(self.repo)
        return self._vocab

    @property
    def bytes_read(self) -> int:
        """Bytes read from weight files (headers and tensors)."""
        return self.reader.bytes_read

    @property
    def total_bytes(self) -> int:
        return self.reader.total_bytes


def _gather_rows(read: Any, ids: list[int], d: int) -> np.ndarray:
    """Rows ``ids`` of a ``(rows, d)`` tensor through ``read(first, last)`` (16-bit rows assumed for the gaps)."""
    return gather_rows(ids, d, 2 * d, lambda first, last, picks: read(first, last)[picks])


def _gguf_config(meta: dict[str, object]) -> tuple[str, dict[str, Any]]:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointFormatError("gguf", "missing general.architecture")
    cfg = {k[len(arch) + 1 :]: v for k, v in meta.items() if k.startswith(arch + ".")}
    toks = meta.get("tokenizer.ggml.tokens")
    if "vocab_size" not in cfg and isinstance(toks, list):
        cfg["vocab_size"] = len(toks)
    return arch, cfg


def open_model(path: str | Path | Repo) -> CanonicalModel:
    """Open a model directory (safetensors + config.json), a ``.gguf`` file, or a :class:`Repo`.

    Only headers, ``config.json`` and the index are read here; tensors are read on demand.

    Raises:
        FingerprintError: subclasses for missing files, hostile headers, unknown architectures.
    """
    if isinstance(path, (str, Path)):
        p = Path(path)
        if p.is_file() and p.suffix == ".gguf":
            repo: Repo = LocalRepo(p.parent)
            return _open_gguf(repo, p.name)
        if not p.is_dir():
            raise CheckpointFormatError(str(p), "not a model directory or .gguf file")
        repo = LocalRepo(p)
    else:
        repo = path
    if not repo.exists("config.json") and repo.exists("modules.json"):
        repo = _sentence_transformers_module(repo)
    if not repo.exists("config.json"):
        ggufs = [f for f in repo.files() if f.endswith(".gguf")]
        if len(ggufs) == 1:
            return _open_gguf(repo, ggufs[0])
        raise CheckpointFormatError(repo.name, "no config.json (and not a single .gguf file)")
    config = parse_json_bounded(repo.read_bytes("config.json", 4 * 1024 * 1024), "config.json")
    if not isinstance(config, dict):
        raise CheckpointFormatError("config.json", "not a JSON object")
    arch, text_cfg, is_wrapper = resolve_architecture(config)
    reader: TensorReader = QuantizedSafetensors(SafetensorsReader.open(repo))
    declared = (config.get("architectures") or [config.get("model_type", "?")])[0]
    return CanonicalModel(repo, reader, arch, text_cfg, "safetensors", str(declared),
                          str(config.get("architectures", ["?"])[0]) if is_wrapper else None)


def _sentence_transformers_module(repo: Repo) -> Repo:
    """The folder of a sentence-transformers repo's Transformer module (``modules.json``), as a repo.

    A repo whose module sits at the root has a ``config.json`` there and never reaches this; older
    ones keep it in ``0_Transformer/``. The path comes from the Hub: it is bounded and must be relative.
    """
    modules = parse_json_bounded(repo.read_bytes("modules.json", 64 * 1024), "modules.json")
    for mod in modules if isinstance(modules, list) else []:
        if isinstance(mod, dict) and str(mod.get("type", "")).endswith(".Transformer"):
            path = mod.get("path")
            if isinstance(path, str) and path.strip("/"):
                return SubRepo(repo, path)
    return repo


def _open_gguf(repo: Repo, filename: str) -> CanonicalModel:
    reader = GGUFReader(repo.source(filename), filename)
    arch_name, cfg = _gguf_config(reader.metadata)
    return CanonicalModel(repo, reader, gguf_architecture(), cfg, "gguf", arch_name, None)


