"""One error hierarchy for the fingerprint package.

Every error carries fields (the file, the tensor, the limit) rather than a message to parse,
and subclasses the built-in it resembles so callers may catch either.
"""

from __future__ import annotations


class FingerprintError(Exception):
    """Root of every error raised by :mod:`fingerprint`."""


class CheckpointFormatError(FingerprintError, ValueError):
    """A checkpoint file is malformed, truncated, or violates a safety bound.

    Attributes:
        path: the file (or shard) concerned.
        reason: what is wrong, in one line.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UnsafePathError(FingerprintError, ValueError):
    """A file name from a checkpoint (e.g. a shard index) escapes its directory."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        super().__init__(f"{where}: refusing unsafe file name {name!r} (path traversal or absolute path)")


class TensorNotFoundError(FingerprintError, KeyError):
    """A tensor the fingerprint needs is not in the checkpoint."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where
        super().__init__(f"{where}: tensor {name!r} not found")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnsupportedDtypeError(FingerprintError, ValueError):
    """A tensor dtype (or GGUF quantization type) that we cannot decode."""

    def __init__(self, dtype: str, where: str) -> None:
        self.dtype = dtype
        self.where = where
        super().__init__(f"{where}: unsupported dtype {dtype}")


class UnknownArchitectureError(FingerprintError, LookupError):
    """The model's architecture has no data file under ``fingerprint/architectures``."""

    def __init__(self, architecture: str, supported: list[str]) -> None:
        self.architecture = architecture
        self.supported = supported
        super().__init__(
            f"unknown architecture {architecture!r}; supported: {', '.join(sorted(supported))}"
        )


class ArchitectureMismatchError(FingerprintError, ValueError):
    """The checkpoint's tensors do not have the shapes its configuration promises."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class TokenizerError(FingerprintError, ValueError):
    """No usable vocabulary could be read (missing, malformed or too large)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class ComparisonError(FingerprintError, ValueError):
    """Two models cannot be compared (no shared tokens, incompatible shapes, ...)."""


class FingerprintFileError(FingerprintError, ValueError):
    """A fingerprint file is corrupt, truncated, tampered with, or of another format version."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: not a usable fingerprint file: {reason}")
        self.path = path
        self.reason = reason


class FingerprintIndexError(FingerprintError):
    """The fingerprint index directory is unusable (a corrupt index.db or row file, missing or altered fingerprint files)."""


class DeviceError(FingerprintError, ValueError):
    """A compute device that is malformed (``cuda:x``) or that torch cannot see (``cuda`` on a CPU box)."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        super().__init__(f"device {spec!r}: {reason}")


class PictureError(FingerprintError, ValueError):
    """A fingerprint picture cannot be made (too few anchor tokens, or a size out of bounds)."""
