"""Every Cypher statement the Neo4j backend runs, in one place, with ``$parameters`` only.

Written in the subset that is valid in both Cypher 5 (Neo4j 5.x) and Cypher 25 (Neo4j 2025.06+) and runs
on the ArcadeDB Bolt server used in CI: no ``exists(n.p)``, no temporal functions (times are epoch-ms
parameters), no ``CALL {}`` subqueries, no ``IN TRANSACTIONS``, no ``elementId``/``id``, separate
``MATCH`` per endpoint. ``tests/test_cypher_static.py`` enforces this on the strings below. Traversals
expand one hop per statement from a frontier of keys (no variable-length patterns), so their cost is
the number of edges reached, and a cycle in bad data ends at the visited set and the depth bound.
"""

from __future__ import annotations

# -- schema (each statement idempotent; a server that rejects one is noted and skipped) -----------
SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT model_key IF NOT EXISTS FOR (m:Model) REQUIRE m.key IS UNIQUE",
    "CREATE CONSTRAINT family_name IF NOT EXISTS FOR (f:Family) REQUIRE f.name IS UNIQUE",
    "CREATE CONSTRAINT org_name IF NOT EXISTS FOR (o:Organization) REQUIRE o.name IS UNIQUE",
    "CREATE CONSTRAINT license_id IF NOT EXISTS FOR (l:License) REQUIRE l.id IS UNIQUE",
    "CREATE INDEX model_id IF NOT EXISTS FOR (m:Model) ON (m.id)",
    "CREATE INDEX model_license IF NOT EXISTS FOR (m:Model) ON (m.license)",
    "CREATE INDEX model_id_lower IF NOT EXISTS FOR (m:Model) ON (m.id_lower)",
    "CREATE INDEX derived_detected IF NOT EXISTS FOR ()-[r:DERIVED_FROM]-() ON (r.detected_at_ms)",
    "CREATE INDEX model_touched IF NOT EXISTS FOR (m:Model) ON (m.touched_ms)",
)

# -- writes (UNWIND $rows; MERGE on stable keys; full property SET so a re-run changes nothing) ----
UPSERT_MODELS = """
UNWIND $rows AS row
MERGE (m:Model {key: row.key})
ON CREATE SET m.first_seen_ms = $now
SET m += row, m.id_lower = toLower(row.id), m.updated_at_ms = $now, m.touched_ms = $touch
RETURN count(m) AS n
"""

LINK_PUBLISHERS = """
UNWIND $rows AS row
MATCH (m:Model {key: row.key})
OPTIONAL MATCH (m)-[old:PUBLISHED_BY]->(o0:Organization)
WHERE o0.name <> row.author
DELETE old
WITH DISTINCT m, row
MERGE (o:Organization {name: row.author})
MERGE (m)-[:PUBLISHED_BY]->(o)
RETURN count(m) AS n
"""

LINK_LICENSES = """
UNWIND $rows AS row
MATCH (m:Model {key: row.key})
OPTIONAL MATCH (m)-[old:HAS_LICENSE]->(l0:License)
WHERE l0.id <> row.license
DELETE old
WITH DISTINCT m, row
MERGE (l:License {id: row.license})
MERGE (m)-[:HAS_LICENSE]->(l)
RETURN count(m) AS n
"""

UPSERT_FAMILIES = """
UNWIND $rows AS row
MERGE (f:Family {name: row.name})
ON CREATE SET f.first_seen_ms = $now
SET f += row, f.updated_at_ms = $now
RETURN count(f) AS n
"""

SET_FAMILIES = """
UNWIND $rows AS row
MATCH (m:Model {key: row.model_key})
MERGE (f:Family {name: row.family})
ON CREATE SET f.first_seen_ms = $now, f.updated_at_ms = $now
WITH m, f, row
OPTIONAL MATCH (m)-[old:IN_FAMILY]->(f0:Family)
WHERE f0.name <> row.family
DELETE old
WITH DISTINCT m, f, row
MERGE (m)-[r:IN_FAMILY]->(f)
SET r.via = row.via, r.updated_at_ms = $now, m.touched_ms = $touch
RETURN count(r) AS n
"""

DROP_OTHER_PARENTS = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})-[r:DERIVED_FROM]->(b:Model)
WHERE NOT b.key IN row.dsts
SET a.touched_ms = $touch
DELETE r
RETURN count(*) AS n
"""

DROP_PARENTS = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})-[r:DERIVED_FROM]->(:Model)
SET a.touched_ms = $touch
DELETE r
RETURN count(*) AS n
"""

# clear_placement: one relationship type per statement (each MATCH finds only what it deletes)
LEAVE_FAMILIES = """
UNWIND $rows AS row
MATCH (m:Model {key: row.key})-[r:IN_FAMILY]->(:Family)
SET m.touched_ms = $touch
DELETE r
RETURN count(*) AS n
"""

DROP_SHARED_INIT_OF = """
UNWIND $rows AS row
MATCH (:Model {key: row.key})-[r:SHARES_INIT]->(:Model)
DELETE r
RETURN count(*) AS n
"""

CLEAR_CANDIDATE_FLAG = """
UNWIND $rows AS row
MATCH (m:Model {key: row.key})
WHERE m.candidate_family = true
SET m.candidate_family = false, m.updated_at_ms = $now
RETURN count(m) AS n
"""

DROP_COPIES_FROM = """
UNWIND $rows AS row
MATCH (a:Model {key: row.key})-[r:SAME_WEIGHTS]->(b:Model)
SET a.touched_ms = $touch, b.touched_ms = $touch
DELETE r
RETURN count(*) AS n
"""

DROP_COPIES_TO = """
UNWIND $rows AS row
MATCH (b:Model {key: row.key})<-[r:SAME_WEIGHTS]-(a:Model)
SET a.touched_ms = $touch, b.touched_ms = $touch
DELETE r
RETURN count(*) AS n
"""

DROP_EMPTY_FAMILIES = """
UNWIND $rows AS row
MATCH (f:Family {name: row.name})
OPTIONAL MATCH (m:Model)-[:IN_FAMILY]->(f)
WITH f, count(m) AS members
WHERE members = 0
DETACH DELETE f
RETURN count(*) AS n
"""

UPSERT_DERIVED = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})
MATCH (b:Model {key: row.dst})
MERGE (a)-[r:DERIVED_FROM]->(b)
ON CREATE SET r.created_at_ms = $now
SET r.score = row.score, r.z = row.z, r.verdict = row.verdict, r.method = row.method,
    r.method_version = row.method_version, r.detected_at_ms = row.detected_at_ms, r.evidence = row.evidence,
    r.relation_detail = coalesce(row.relation_detail, r.relation_detail),
    r.relation = coalesce(row.relation, r.relation),
    r.updated_at_ms = $now, a.touched_ms = $touch
RETURN count(r) AS n
"""

UPSERT_DECLARED = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})
MATCH (b:Model {key: row.dst})
MERGE (a)-[r:DECLARES_BASE]->(b)
SET r.relation = row.relation, r.source = row.source, r.updated_at_ms = $now, a.touched_ms = $touch
RETURN count(r) AS n
"""

UPSERT_SAME_WEIGHTS = """
UNWIND $rows AS row
MATCH (a:Model {key: row.a})
MATCH (b:Model {key: row.b})
MERGE (a)-[r:SAME_WEIGHTS]->(b)
SET r.sha256 = row.sha256, r.updated_at_ms = $now, a.touched_ms = $touch, b.touched_ms = $touch
RETURN count(r) AS n
"""

DROP_OTHER_SHARED_INIT = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})-[r:SHARES_INIT]->(b:Model)
WHERE NOT b.key IN row.dsts
DELETE r
RETURN count(*) AS n
"""

UPSERT_SHARED_INIT = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})
MATCH (b:Model {key: row.dst})
MERGE (a)-[r:SHARES_INIT]->(b)
SET r.score = row.score, r.z = row.z, r.method_version = row.method_version,
    r.detected_at_ms = row.detected_at_ms, r.updated_at_ms = $now
RETURN count(r) AS n
"""

# -- reads ----------------------------------------------------------------------------------------
_MODEL_FIELDS = ("key", "id", "sha", "author", "created_at_ms", "last_modified_ms", "license", "license_name",
                 "license_link", "gated", "architecture", "hidden_size", "num_layers", "vocab_size", "num_params",
                 "fingerprint_version", "pipeline_tag", "library", "candidate_family", "claims")
_MODEL_PROJECTION = ", ".join(f"m.{f} AS {f}" for f in _MODEL_FIELDS)

# Two statements, not one "key = x OR id = x": the OR defeats the index on both servers we measured.
GET_MODELS_BY_KEY = f"""
UNWIND $idents AS ident
MATCH (m:Model {{key: ident}})
RETURN {_MODEL_PROJECTION}
"""

GET_MODELS_BY_ID = f"""
UNWIND $idents AS ident
MATCH (m:Model {{id: ident}})
RETURN {_MODEL_PROJECTION}
"""

LABELS = """
UNWIND $keys AS k
MATCH (m:Model {key: k})
RETURN m.key AS key, m.id AS id, m.license AS license
"""

_TYPES = {"detected": "DERIVED_FROM", "declared": "DECLARES_BASE", "both": "DERIVED_FROM|DECLARES_BASE"}


def _expand(types: str, upward: bool) -> str:
    pattern = (f"(s:Model {{key: k}})-[r:{types}]->(t:Model)" if upward
               else f"(s:Model {{key: k}})<-[r:{types}]-(t:Model)")
    src, dst = ("s", "t") if upward else ("t", "s")
    return f"""
UNWIND $keys AS k
MATCH {pattern}
WHERE type(r) = 'DECLARES_BASE' OR r.score >= $min_score
RETURN {src}.key AS src, {dst}.key AS dst, type(r) AS kind, r.score AS score, r.verdict AS verdict,
       r.relation AS relation
"""


# One hop from a frontier of keys; the backend walks hop by hop. (A variable-length pattern enumerates
# every path before filtering: 215 s for a 20k-node tree on the ArcadeDB server, 0.5 s hop by hop.)
EXPAND: dict[tuple[str, bool], str] = {(mode, up): _expand(t, up) for mode, t in _TYPES.items() for up in (False, True)}

FAMILY_OF = """
MATCH (m:Model {key: $key})-[:IN_FAMILY]->(f:Family)
RETURN f.name AS name, f.root_key AS root_key, f.display_name AS display_name, f.license AS license
"""

FAMILY_MEMBERS = """
MATCH (m:Model)-[:IN_FAMILY]->(f:Family {name: $name})
RETURN m.key AS key ORDER BY key
"""

DETECTED_ALL = """
MATCH (a:Model)-[r:DERIVED_FROM]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.score AS score, r.verdict AS verdict, r.z AS z, r.relation AS relation
"""

DETECTED_IN_FAMILY = """
MATCH (a:Model)-[:IN_FAMILY]->(f:Family {name: $family})
MATCH (a)-[r:DERIVED_FROM]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.score AS score, r.verdict AS verdict, r.z AS z, r.relation AS relation
"""

DECLARED_FROM = """
UNWIND $srcs AS k
MATCH (a:Model {key: k})-[r:DECLARES_BASE]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.relation AS relation
"""

FAMILIES = """
MATCH (f:Family)
OPTIONAL MATCH (m:Model)-[:IN_FAMILY]->(f)
RETURN f.name AS name, f.root_key AS root_key, f.display_name AS display_name, f.license AS license,
       count(m) AS members
ORDER BY name
"""

CREATED_PER_DAY = """
MATCH (m:Model)
WHERE m.created_at_ms IS NOT NULL
RETURN m.created_at_ms / 86400000 AS day, count(*) AS n
ORDER BY day
"""

DECLARED_RELATIONS = """
MATCH ()-[r:DECLARES_BASE]->()
RETURN r.relation AS k, count(*) AS n
"""

DETECTED_VERDICTS = """
MATCH ()-[r:DERIVED_FROM]->()
RETURN r.verdict AS k, count(*) AS n
"""

COUNT_LABEL = {label: f"MATCH (n:{label}) RETURN count(n) AS n" for label in ("Model", "Family")}
# Organizations and licences count while something points at them (a rename can leave an old one behind).
COUNT_LABEL["Organization"] = "MATCH (n:Organization) WHERE (n)<-[:PUBLISHED_BY]-() RETURN count(n) AS n"
COUNT_LABEL["License"] = "MATCH (n:License) WHERE (n)<-[:HAS_LICENSE]-() RETURN count(n) AS n"
COUNT_TYPE = {t: f"MATCH ()-[r:{t}]->() RETURN count(r) AS n"
              for t in ("IN_FAMILY", "DERIVED_FROM", "DECLARES_BASE", "SAME_WEIGHTS", "SHARES_INIT", "PUBLISHED_BY",
                        "HAS_LICENSE")}

DUMP_MODELS = f"MATCH (m:Model) RETURN {_MODEL_PROJECTION} ORDER BY key"
DUMP_FAMILIES = ("MATCH (f:Family) RETURN f.name AS name, f.root_key AS root_key, f.display_name AS display_name, "
                 "f.license AS license ORDER BY name")
DUMP_IN_FAMILY = ("MATCH (m:Model)-[r:IN_FAMILY]->(f:Family) RETURN m.key AS src, f.name AS dst, r.via AS via "
                  "ORDER BY src")
DUMP_DERIVED = """
MATCH (a:Model)-[r:DERIVED_FROM]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.score AS score, r.z AS z, r.verdict AS verdict, r.method AS method,
       r.method_version AS method_version, r.detected_at_ms AS detected_at_ms, r.evidence AS evidence,
       r.relation AS relation, r.relation_detail AS relation_detail
ORDER BY src, dst
"""
DUMP_DECLARED = """
MATCH (a:Model)-[r:DECLARES_BASE]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.relation AS relation, r.source AS source
ORDER BY src, dst
"""
DUMP_SAME = """
MATCH (a:Model)-[r:SAME_WEIGHTS]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.sha256 AS sha256
ORDER BY src, dst
"""

DUMP_SHARED_INIT = """
MATCH (a:Model)-[r:SHARES_INIT]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.score AS score, r.z AS z, r.method_version AS method_version,
       r.detected_at_ms AS detected_at_ms
ORDER BY src, dst
"""
SHARED_INIT_OF = """
MATCH (a:Model {key: $key})-[r:SHARES_INIT]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.score AS score, r.z AS z
UNION
MATCH (a:Model)-[r:SHARES_INIT]->(b:Model {key: $key})
RETURN a.key AS src, b.key AS dst, r.score AS score, r.z AS z
"""


def all_statements() -> list[str]:
    """Every statement above, for the static Neo4j 5 / 25 check."""
    out: list[str] = [*SCHEMA, *EXPAND.values(), *COUNT_LABEL.values(), *COUNT_TYPE.values()]
    out += [v for k, v in globals().items() if k.isupper() and not k.startswith("_") and isinstance(v, str)]
    return out

# -- the web UI's lookups -------------------------------------------------------------------------
SEARCH_PREFIX = f"""
MATCH (m:Model)
WHERE m.id_lower STARTS WITH $prefix
RETURN {_MODEL_PROJECTION}
ORDER BY m.id_lower
LIMIT $limit
"""

_DERIVED_PROJECTION = """a.key AS src, b.key AS dst, r.score AS score, r.z AS z, r.verdict AS verdict, r.method AS method,
       r.method_version AS method_version, r.detected_at_ms AS detected_at_ms, r.evidence AS evidence,
       r.relation AS relation, r.relation_detail AS relation_detail"""

SET_RELATIONS = """
UNWIND $rows AS row
MATCH (a:Model {key: row.src})-[r:DERIVED_FROM]->(b:Model {key: row.dst})
SET r.relation = row.relation, r.relation_detail = row.relation_detail, r.typed_at_ms = $now, a.touched_ms = $touch
RETURN count(r) AS n
"""

UNTYPED_DERIVED = """
MATCH (a:Model)-[r:DERIVED_FROM]->(b:Model)
WHERE r.verdict = $verdict AND r.relation IS NULL
RETURN a.key AS src, b.key AS dst
ORDER BY r.detected_at_ms, src
LIMIT $limit
"""

RECENT_DERIVED = f"""
MATCH (a:Model)-[r:DERIVED_FROM]->(b:Model)
RETURN {_DERIVED_PROJECTION}
ORDER BY r.detected_at_ms DESC, src
LIMIT $limit
"""

PARENT_EDGES = f"""
MATCH (a:Model {{key: $key}})-[r:DERIVED_FROM]->(b:Model)
RETURN {_DERIVED_PROJECTION}
ORDER BY score DESC
"""

FAMILY_BY_NAME = """
MATCH (f:Family {name: $name})
RETURN f.name AS name, f.root_key AS root_key, f.display_name AS display_name, f.license AS license
"""

COPIES_OF = """
MATCH (a:Model {key: $key})-[:SAME_WEIGHTS]-(b:Model)
RETURN DISTINCT b.key AS key
ORDER BY key
"""


# -- the change log and batched reads of the alerts' incremental evaluation ------------------------
# Every write that can change a finding stamps the models it concerns with $touch (the wall clock, passed
# with every write: there are no triggers), deletions included, in the statement that writes; TOUCH
# stamps what no statement reaches (a family record's root).
TOUCH = """
UNWIND $rows AS row
MATCH (m:Model {key: row.key})
SET m.touched_ms = $now
RETURN count(m) AS n
"""

TOUCHED_SINCE = """
MATCH (m:Model)
WHERE m.touched_ms >= $since
RETURN m.key AS key
ORDER BY key
"""

FAMILIES_OF = """
UNWIND $keys AS k
MATCH (m:Model {key: k})-[:IN_FAMILY]->(f:Family)
RETURN m.key AS key, f.name AS name, f.root_key AS root_key, f.display_name AS display_name, f.license AS license
"""

DETECTED_FROM = """
UNWIND $keys AS k
MATCH (a:Model {key: k})-[r:DERIVED_FROM]->(b:Model)
RETURN a.key AS src, b.key AS dst, r.score AS score, r.verdict AS verdict, r.z AS z, r.relation AS relation
"""

# anchored on the indexed end: "(a:Model)-[...]->(b:Model {key: k})" scans every model on ArcadeDB
DECLARERS_OF = """
UNWIND $keys AS k
MATCH (b:Model {key: k})<-[:DECLARES_BASE]-(a:Model)
RETURN DISTINCT a.key AS key
"""

CHILDREN_OF = """
UNWIND $keys AS k
MATCH (b:Model {key: k})<-[:DERIVED_FROM]-(a:Model)
RETURN DISTINCT a.key AS key
"""

COPIES_FROM = """
UNWIND $keys AS k
MATCH (a:Model {key: k})-[:SAME_WEIGHTS]->(b:Model)
RETURN a.key AS src, b.key AS dst
"""

COPIES_TO = """
UNWIND $keys AS k
MATCH (b:Model {key: k})<-[:SAME_WEIGHTS]-(a:Model)
RETURN a.key AS src, b.key AS dst
"""
