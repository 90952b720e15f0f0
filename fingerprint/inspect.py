"""What a fingerprint of a checkpoint needs: a report built from headers only."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from fingerprint.canonical import CanonicalModel, open_model
from fingerprint.io.source import Repo


def inspect_model(path: str | Path | Repo) -> dict[str, Any]:
    """Describe a checkpoint and the byte ranges a weight fingerprint reads.

    Only headers (and ``config.json``) are read: ``bytes_read`` in the result proves it.

    Returns:
        A JSON-ready dict: ``spec`` (architecture and dimensions), ``kind`` (:func:`kind_of`),
        ``attention_layers`` (the stored layer of each fingerprinted layer), ``dtypes``, ``files``,
        ``needed`` (one entry per tensor: name, role-ordered, file, byte range), ``bytes_needed``,
        ``total_bytes``, ``share_needed`` and ``bytes_read``.
    """
    m = open_model(path)
    return inspect_canonical(m)


def kind_of(m: CanonicalModel) -> list[str]:
    """What kind of model it is, as far as reading it goes: ``encoder`` or ``decoder``, then ``MoE``,
    ``latent attention`` and ``hybrid`` where they apply."""
    a = m.arch
    kind = ["encoder" if a.encoder else "decoder"]
    if m.spec.num_experts or a.experts is not None:
        kind.append("MoE")
    if a.mla is not None:
        kind.append("latent attention")
    if a.hybrid:
        kind.append("hybrid")
    return kind


def inspect_canonical(m: CanonicalModel) -> dict[str, Any]:
    """:func:`inspect_model` for an already opened model."""
    needed = m.fingerprint_tensors()
    dtypes: dict[str, int] = {}
    for t in m.reader.tensors.values():
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.numel
    bytes_needed = sum(t.nbytes for t in needed)
    return {
        "path": m.repo.name,
        "spec": asdict(m.spec),
        "kind": kind_of(m),
        "attention_layers": m.attention_layers,
        "dtypes": dtypes,
        "files": list(getattr(m.reader, "files", [])),
        "num_tensors": len(m.reader.tensors),
        "needed": [
            {"name": t.name, "file": t.file, "dtype": t.dtype, "shape": list(t.shape), "start": t.start, "end": t.end}
            for t in needed
        ],
        "bytes_needed": bytes_needed,
        "total_bytes": m.total_bytes,
        "share_needed": bytes_needed / m.total_bytes if m.total_bytes else 0.0,
        "bytes_read": m.bytes_read,
    }
