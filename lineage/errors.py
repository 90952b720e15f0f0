"""One error hierarchy for the application (``LineageError`` at the root).

The CLI turns these (and the packages' own roots) into one line on stderr and exit status 2.
"""

from __future__ import annotations


class LineageError(Exception):
    """Root of every error the application raises on purpose."""


class SettingsError(LineageError, ValueError):
    """An environment variable holds a value the application cannot use (named in the message)."""

    def __init__(self, env: str, value: str, reason: str) -> None:
        self.env = env
        self.value = value
        super().__init__(f"{env}={value!r}: {reason}")


class InvalidRepoIdError(LineageError, ValueError):
    """Neither an existing path nor a Hub repo id (``namespace/name``)."""

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"{value!r} is neither an existing path nor a Hub repo id (namespace/name)")


class UnknownFamilyError(LineageError, LookupError):
    """A family name the shipped catalog does not list."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"not in the catalog: {', '.join(names)}")


class UnreadableFamilyError(LineageError, ValueError):
    """A catalog family whose checkpoints' architecture the fingerprint reader does not support yet."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"architecture not readable yet (add a data file under fingerprint/architectures): {', '.join(names)}")
