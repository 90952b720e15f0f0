"""The lineage graph: one store interface, an embedded SQLite backend and a Neo4j backend."""
