"""Open the lineage store the settings name (embedded SQLite by default, or Neo4j)."""

from __future__ import annotations

from graph.errors import StoreUnavailableError
from graph.store import LineageStore
from lineage.settings import Settings

NEO4J_SCHEMES = ("neo4j://", "neo4j+s://", "neo4j+ssc://", "bolt://", "bolt+s://", "bolt+ssc://")


def open_store(settings: Settings | None = None, read_only: bool = False) -> LineageStore:
    """The store of ``LINEAGE_GRAPH`` with its schema ensured (``read_only``: checked, never written; for
    queries, which then work on a home this user may only read). Close it when done."""
    s = settings or Settings.from_env()
    if s.graph in ("", "embedded"):
        from graph.sqlite import SqliteStore

        store: LineageStore = SqliteStore(s.home / "graph.sqlite", read_only=read_only)
    elif s.graph.startswith(NEO4J_SCHEMES):
        from graph.neo4j import Neo4jStore, connect

        store = Neo4jStore(connect(s.graph, s.neo4j_user, s.neo4j_password), s.neo4j_database, owns_driver=True)
    else:
        raise StoreUnavailableError(f"LINEAGE_GRAPH={s.graph!r}: use 'embedded' or a Neo4j URI "
                                    f"({', '.join(NEO4J_SCHEMES[:2])}, bolt://...)")
    if not read_only or s.graph in ("", "embedded"):  # a Neo4j schema is the writer's to create
        store.ensure_schema()
    return store
