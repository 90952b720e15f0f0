"""Where the similarity math runs: one process-wide torch device, chosen once at start-up.

``auto`` is CUDA when torch sees a GPU, else the CPU. The comparison code moves its inputs to
:func:`current` and brings scalars back; on the CPU nothing is moved, so CPU results are bit-for-bit
those of code that never heard of devices.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fingerprint.errors import DeviceError

if TYPE_CHECKING:
    import torch

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
# None is the CPU: the numpy paths ask is_cpu() and never import torch (224 MB, 1.5 s) to do it.
_current: torch.device | None = None


def resolve(spec: str) -> torch.device:
    """The device ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` names on this machine.

    Raises:
        DeviceError: a malformed spec, or CUDA asked for where torch sees none (or not that many).
    """
    s = spec.strip().lower()
    if not _SPEC.match(s):
        raise DeviceError(spec, "use auto, cpu, cuda or cuda:N")
    import torch

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
    if _current is None:
        import torch

        return torch.device("cpu")
    return _current


def is_cpu() -> bool:
    """Whether comparisons run on the CPU (without importing torch when nothing chose a device)."""
    return _current is None or _current.type == "cpu"


def use(spec: str | torch.device) -> torch.device:
    """Make ``spec`` the process's compute device; returns it."""
    global _current
    _current = resolve(spec) if isinstance(spec, str) else spec
    return _current


@contextmanager
def using(spec: str | torch.device) -> Iterator[torch.device]:
    """Run a block on ``spec``, then restore the previous device."""
    global _current
    before = _current
    try:
        yield use(spec)
    finally:
        _current = before
