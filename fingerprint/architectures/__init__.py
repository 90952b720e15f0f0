"""Architectures as data: one JSON file per family maps its tensor names to canonical roles.

Templates hold ``${layer}`` (the layer index) and may hold ``${prev}`` (the index before it, ``-1`` for
layer 0, which no checkpoint has: the next template in the list is then tried, for example the
embedding LayerNorm that feeds layer 0 of a post-LayerNorm encoder).

Each ``*.json`` file beside this module is validated by :class:`ArchitectureDef` (a frozen
pydantic model) and indexed by the Hugging Face ``architectures`` class names and
``model_type`` values it lists. ``_wrappers.json`` lists vision-language wrappers: name
prefixes to strip and towers to drop. Adding a family is adding a file.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fingerprint.errors import UnknownArchitectureError

GlobalRole = Literal["embed", "lm_head", "norm_final"]
LayerRole = Literal[
    "norm_in", "norm_mlp", "norm_attn_out", "norm_mlp_out",
    "q", "k", "v", "o", "gate", "up", "down",
    "q_bias", "k_bias", "v_bias", "q_norm", "k_norm",
    "qkv", "qkv_bias", "gate_up", "router",
    "q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b",
]
ExpertRole = Literal["gate", "up", "down"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigKeys(_Frozen):
    """Names of the ``config.json`` (or GGUF metadata) keys holding each dimension.

    Each entry is a list of candidate keys, first present wins.
    """

    num_layers: list[str]
    hidden_size: list[str]
    num_heads: list[str]
    num_kv_heads: list[str] = Field(default_factory=list)
    head_dim: list[str] = Field(default_factory=list)
    vocab_size: list[str] = Field(default_factory=list)
    intermediate_size: list[str] = Field(default_factory=list)
    tie_word_embeddings: list[str] = Field(default_factory=list)
    rotary_fraction: list[str] = Field(default_factory=list)
    rotary_dim: list[str] = Field(default_factory=list)
    num_experts: list[str] = Field(default_factory=list)
    #: a key whose ``true`` value means one shared key/value head (multi-query attention) when no KV-head count is given
    multi_query: list[str] = Field(default_factory=list)


class NormDef(_Frozen):
    """Normalization: ``rms`` (RMSNorm), ``layer`` (LayerNorm), ``none`` (no gain).

    ``gain_offset`` is 1.0 for Gemma, whose norms multiply by ``(1 + γ)``.
    """

    kind: Literal["rms", "layer", "none"]
    gain_offset: float = 0.0


class RopeDef(_Frozen):
    """Rotary embedding pairing of the *canonical* (HF-ordered) Q/K rows.

    ``half``: HF ``rotate_half``, dim i pairs with i + r/2 inside each head;
    ``interleaved``: (2i, 2i+1); ``none``: no RoPE (learned or ALiBi positions).
    """

    style: Literal["half", "interleaved", "none"]
    default_fraction: float = 1.0


class FusedQKV(_Frozen):
    """A fused QKV tensor and how its rows are laid out.

    ``contiguous``: [q heads | k heads | v heads]; ``per_head``: (H, 3, hd) interleaved
    (GPT-NeoX, Falcon MHA); ``grouped``: (KV, H/KV + 2, hd) (Falcon new decoder).
    ``when`` holds config values that must match for this rule to apply (first match wins).
    """

    layout: Literal["contiguous", "per_head", "grouped"]
    transposed: bool = False
    when: dict[str, Any] = Field(default_factory=dict)


class MLADef(_Frozen):
    """Multi-head latent attention (:func:`fingerprint.layouts.mla_heads`): the config keys of its dimensions.

    Roles ``q_a``/``q_a_norm``/``q_b`` (or a plain ``q``) and ``kv_a``/``kv_a_norm``/``kv_b`` hold the factors.
    """

    kv_lora_rank: list[str]
    qk_nope_head_dim: list[str]
    qk_rope_head_dim: list[str]
    v_head_dim: list[str]


class ExpertsDef(_Frozen):
    """Mixture-of-experts MLP weights, ``${expert}`` in the templates."""

    templates: dict[ExpertRole, str]


class ArchitectureDef(_Frozen):
    """One architecture family, as stored in ``fingerprint/architectures/<name>.json``."""

    name: str
    description: str
    architectures: list[str]
    model_types: list[str] = Field(default_factory=list)
    format: Literal["hf", "gguf"] = "hf"
    config: ConfigKeys
    norm: NormDef
    rope: RopeDef
    tied_default: bool = False
    weights: dict[GlobalRole, str | list[str]]
    layer_weights: dict[LayerRole, str | list[str]]
    optional: list[str] = Field(default_factory=list)
    fused_qkv: list[FusedQKV] = Field(default_factory=list)
    transposed: list[str] = Field(default_factory=list)
    experts: ExpertsDef | None = None
    mla: MLADef | None = None
    gguf_qk_permuted: list[str] = Field(default_factory=list)
    gguf_norm_offset_included: list[str] = Field(default_factory=list)
    #: A bidirectional encoder (BERT, T5's encoder): no output head is fingerprinted, and templates may
    #: name the previous layer as ``${prev}`` (a post-LayerNorm layer reads the output norm of the layer before it).
    encoder: bool = False
    #: Only some layers have attention (Jamba, Bamba, Granite-4 hybrids, Qwen3-Next, LFM2): the fingerprint's
    #: layers are those that do, in depth order; the others (state-space, convolution, linear attention) are skipped.
    hybrid: bool = False
    #: ``q_proj`` rows are ``[query | output gate]`` per head (Qwen3-Next, Qwen3.5): only the query half is read.
    q_gated: bool = False


class WrappersDef(_Frozen):
    """Vision-language and other wrappers around a text model."""

    architectures: dict[str, str | None]
    rename_prefixes: list[tuple[str, str]]
    drop_prefixes: list[str]


@functools.cache
def load_architectures() -> dict[str, ArchitectureDef]:
    """All architecture files, keyed by their ``name``."""
    out: dict[str, ArchitectureDef] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json") and not entry.name.startswith("_"):
            arch = ArchitectureDef.model_validate(json.loads(entry.read_text("utf-8")))
            if entry.name != f"{arch.name}.json":
                raise ValueError(f"{entry.name}: name {arch.name!r} must match the file name")
            out[arch.name] = arch
    return out


@functools.cache
def load_wrappers() -> WrappersDef:
    """The wrapper rules from ``_wrappers.json``."""
    text = resources.files(__package__).joinpath("_wrappers.json").read_text("utf-8")
    return WrappersDef.model_validate(json.loads(text))


def supported_names() -> list[str]:
    """Every HF class name and model type we can read, for error messages."""
    names: set[str] = set()
    for arch in load_architectures().values():
        names.update(arch.architectures)
    names.update(load_wrappers().architectures)
    return sorted(names)


def _by_class_or_type(class_names: list[str], model_type: str | None) -> ArchitectureDef | None:
    archs = load_architectures()
    for cls in class_names:
        for arch in archs.values():
            if arch.format == "hf" and cls in arch.architectures:
                return arch
    if model_type:
        for arch in archs.values():
            if arch.format == "hf" and model_type in arch.model_types:
                return arch
    return None


def resolve_architecture(config: dict[str, Any]) -> tuple[ArchitectureDef, dict[str, Any], bool]:
    """Pick the architecture for a ``config.json``.

    Returns:
        The architecture, the (text) config holding its dimensions, and whether the model is a
        wrapper (vision-language) whose tensor names need prefix rewriting.

    Raises:
        UnknownArchitectureError: naming the architecture and listing the supported ones.
    """
    class_names = [c for c in config.get("architectures") or [] if isinstance(c, str)]
    model_type = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    wrappers = load_wrappers()
    wrapper_hit = [c for c in class_names if c in wrappers.architectures]
    if not wrapper_hit:
        arch = _by_class_or_type(class_names, model_type)
        if arch is not None:
            return arch, config, False
    text_cfg = config.get("text_config")
    if isinstance(text_cfg, dict):
        tc_classes = [c for c in text_cfg.get("architectures") or [] if isinstance(c, str)]
        tc_type = text_cfg.get("model_type") if isinstance(text_cfg.get("model_type"), str) else None
        fallback = wrappers.architectures.get(wrapper_hit[0]) if wrapper_hit else None
        arch = _by_class_or_type(tc_classes, tc_type) or (_by_class_or_type([], fallback) if fallback else None)
        if arch is not None:
            return arch, {**text_cfg, "_wrapper": wrapper_hit[0] if wrapper_hit else model_type}, True
    if wrapper_hit:
        fallback = wrappers.architectures.get(wrapper_hit[0])
        arch = _by_class_or_type([], fallback) if fallback else None
        if arch is not None:
            return arch, config, True
    name = class_names[0] if class_names else (model_type or "<none in config.json>")
    raise UnknownArchitectureError(name, supported_names())


def gguf_architecture() -> ArchitectureDef:
    """The architecture file for GGUF tensor naming."""
    for arch in load_architectures().values():
        if arch.format == "gguf":
            return arch
    raise UnknownArchitectureError("gguf", supported_names())


def architecture_table() -> str:
    """The supported-architectures table (docs/reference/architectures.md), generated from the data files."""
    rows = ["| file | kind | HF classes / format | norm | RoPE | fused QKV | notes |", "|---|---|---|---|---|---|---|"]
    for name, a in load_architectures().items():
        classes = ", ".join(f"`{c}`" for c in a.architectures) or "GGUF (`general.architecture`)"
        kind = "encoder" if a.encoder else "decoder" + (", MoE" if a.experts or a.config.num_experts else "")
        norm = a.norm.kind + (" (1+γ)" if a.norm.gain_offset else "")
        rope = a.rope.style + (f" ({a.rope.default_fraction:g} of head)" if a.rope.default_fraction != 1 else "")
        fused = ", ".join(r.layout + (" transposed" if r.transposed else "") for r in a.fused_qkv) or "-"
        fused = "MLA factors" if a.mla else fused
        rows.append(f"| `{name}.json` | {kind} | {classes} | {norm} | {rope} | {fused} | {a.description} |")
    wr = load_wrappers()
    rows.append(f"| `_wrappers.json` | wrapper | {', '.join(f'`{c}`' for c in wr.architectures)} | - | - | - | "
                "vision-language wrappers: prefixes stripped, vision/audio towers dropped |")
    return "\n".join(rows)
