"""fingerprint.device: the similarity math runs where the process's device says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fingerprint import device
from fingerprint.errors import DeviceError
from fingerprint.similarity.lineage import compare_fingerprints
from fingerprint.sketch import Sketch


def _sketch(seed: int, d: int = 32, n: int = 300, layers: int = 2) -> Sketch:
    g = np.random.default_rng(seed)
    keys = [f"t{i}" for i in range(n)]
    q = [g.standard_normal((d, d)) for _ in range(layers)]
    k = [g.standard_normal((d, d)) for _ in range(layers)]
    meta = {"hidden_size": d, "num_layers": layers, "architecture": "llama", "bytes_read": 0}
    return Sketch(meta, keys, g.standard_normal((n, d)), None, q, k, [(0.0, 0.0)] * layers,
                  np.zeros((layers, 2, 16), dtype=np.float32))


def test_specs_resolve_and_bad_ones_are_one_clear_error() -> None:
    assert device.resolve("cpu") == torch.device("cpu")
    assert device.resolve("auto") == (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(DeviceError, match="use auto, cpu, cuda or cuda:N"):
        device.resolve("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch sees no CUDA device"):
            device.resolve("cuda:0")


def test_the_math_runs_on_the_current_device() -> None:
    a, b = _sketch(1), _sketch(2)
    ref = compare_fingerprints(a, b)
    with device.using("cpu"):
        same = compare_fingerprints(a, b)
    assert same.to_dict() | {"seconds": 0} == ref.to_dict() | {"seconds": 0}  # explicit CPU: bit for bit
    # On the meta device tensors hold no data: if the inputs really move there, reading a result back fails.
    with device.using(torch.device("meta")), pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        compare_fingerprints(a, b)
    assert device.current() == torch.device("cpu")  # restored after the block
