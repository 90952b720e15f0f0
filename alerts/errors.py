"""One error hierarchy for the alerts package (``AlertsError`` at the root)."""

from __future__ import annotations


class AlertsError(Exception):
    """Root of every error the alerts package raises on purpose."""


class AlertStateError(AlertsError, OSError):
    """The alerts state file cannot be opened or written."""


class UnknownFindingError(AlertsError, LookupError):
    """No finding (or event) with that key; a prefix must be unique and at least 6 characters."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no finding or event {key[:80]!r} (give a unique prefix of at least 6 characters)")


class SubscriptionError(AlertsError, ValueError):
    """A subscription file or entry that cannot be used (named in the message)."""


class DeliveryError(AlertsError):
    """A sink refused or failed a delivery.

    Attributes:
        permanent: retrying this event cannot help (a 4xx other than 408/429).
        config: the subscription itself is wrong (a malformed URL, a private address without
            ``allow_private``, refused credentials, a TLS misconfiguration, an endpoint that is not
            there): no event can be delivered until ``alerts.json`` changes, so it is reported once per
            run and the events wait, rather than each going to the dead letters.
    """

    def __init__(self, reason: str, permanent: bool, config: bool = False) -> None:
        self.permanent = permanent or config
        self.config = config
        super().__init__(reason)
