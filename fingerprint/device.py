"""Where the similarity math runs: one process-wide torch device, chosen once at start-up.

``auto`` is CUDA when torch sees a GPU, else the CPU. The comparison code moves its inputs to
:func:`current` and brings scalars back; on the CPU nothing is moved, so CPU results are bit-for-bit
those of code that never heard of devices.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fingerprint.errors import DeviceError

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
_current = torch.device("cpu")


def resolve(spec: str) -> torch.device:
    """The device ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` names on this machine.

    Raises:
        DeviceError: a malformed spec, or CUDA asked for where torch sees none (or not that many).
    """
    s = spec.strip().lower()
    if not _SPEC.match(s):
        raise DeviceError(spec, "use auto, cpu, cuda or cuda:N")
    if s == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(spec, "torch sees no CUDA device here (a CPU build of torch, or no GPU); use cpu or auto")
    dev = torch.device(s)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(spec, f"torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev


def current() -> torch.device:
    """The device comparisons run on (the CPU until :func:`use` says otherwise)."""
    return _current


def use(spec: str | torch.device) -> torch.device:
    """Make ``spec`` the process's compute device; returns it."""
    global _current
    _current = spec if isinstance(spec, torch.device) else resolve(spec)
    return _current


@contextmanager
def using(spec: str | torch.device) -> Iterator[torch.device]:
    """Run a block on ``spec``, then restore the previous device."""
    before = _current
    try:
        yield use(spec)
    finally:
        use(before)
