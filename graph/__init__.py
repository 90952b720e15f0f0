"""The lineage graph: models, families, declared and detected lineage, in SQLite or Neo4j.

Imports nothing else of ours. ``graph.store.LineageStore`` is the interface, ``graph.sqlite.SqliteStore``
the embedded default and ``graph.neo4j.Neo4jStore`` the server backend; ``graph.queries`` holds the
questions users ask and ``graph.export`` the exports.
"""

from graph.errors import GraphError, InvalidRecordError, StoreAuthError, StoreUnavailableError, UnknownModelError
from graph.records import (
    DeclaredEdge,
    DerivedEdge,
    FamilyRecord,
    InFamily,
    Lineage,
    ModelRecord,
    SameWeights,
    SharedInit,
)

__all__ = [
    "DeclaredEdge",
    "DerivedEdge",
    "FamilyRecord",
    "GraphError",
    "InFamily",
    "InvalidRecordError",
    "Lineage",
    "ModelRecord",
    "SameWeights",
    "SharedInit",
    "StoreAuthError",
    "StoreUnavailableError",
    "UnknownModelError",
]
