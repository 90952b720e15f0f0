"""One error hierarchy for the lineage store (``GraphError`` at the root)."""

from __future__ import annotations


class GraphError(Exception):
    """Root of every error the graph package raises on purpose."""


class InvalidRecordError(GraphError, ValueError):
    """A record to write is malformed (empty key, score out of range, unknown relation...)."""


class StoreUnavailableError(GraphError):
    """The store cannot be reached (server down, wrong URI, unreadable file)."""


class StoreAuthError(GraphError):
    """The server refused the credentials."""


class UnknownModelError(GraphError, LookupError):
    """A query named a model that is not in the store."""

    def __init__(self, ident: str) -> None:
        super().__init__(f"no model {ident!r} in the lineage store")
        self.ident = ident


class UnknownFamilyNameError(GraphError, LookupError):
    """A query named a family that is not in the store."""

    def __init__(self, name: str, known: list[str]) -> None:
        hint = f" (families: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})" if known else " (the store has no families yet)"
        super().__init__(f"no family {name!r} in the lineage store{hint}")
        self.name = name
