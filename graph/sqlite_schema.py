"""The embedded store's schema: its tables, and the columns added since the first version.

:class:`graph.sqlite.SqliteStore` creates the tables with :data:`DDL` and adds each of
:data:`ADDED_COLUMNS` a store lacks (``ALTER TABLE ... ADD COLUMN``: no rewrite) when first opened for writing.
"""

from __future__ import annotations

from graph import closure, sqlite_changes
from graph.records import DerivedEdge, ModelRecord

SCHEMA_VERSION = 1
MODEL_COLS = tuple(ModelRecord.__dataclass_fields__)
DERIVED_COLS = tuple(DerivedEdge.__dataclass_fields__)

DDL = f"""
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model (
  key TEXT PRIMARY KEY, id TEXT NOT NULL, sha TEXT, author TEXT, created_at_ms INTEGER, last_modified_ms INTEGER,
  license TEXT, license_name TEXT, license_link TEXT, gated INTEGER NOT NULL DEFAULT 0, architecture TEXT,
  hidden_size INTEGER, num_layers INTEGER, vocab_size INTEGER, num_params INTEGER, fingerprint_version TEXT,
  pipeline_tag TEXT, library TEXT, candidate_family INTEGER NOT NULL DEFAULT 0, claims TEXT,
  first_seen_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS model_id ON model(id);
CREATE INDEX IF NOT EXISTS model_label ON model(key, id, license);  -- covers traversal answers
CREATE INDEX IF NOT EXISTS model_license ON model(license);
CREATE INDEX IF NOT EXISTS model_id_lower ON model(lower(id));  -- case-insensitive prefix search
CREATE TABLE IF NOT EXISTS family (
  name TEXT PRIMARY KEY, root_key TEXT, display_name TEXT, license TEXT,
  first_seen_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS in_family (
  model_key TEXT PRIMARY KEY, family TEXT NOT NULL, via TEXT NOT NULL, updated_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS in_family_family ON in_family(family);
CREATE TABLE IF NOT EXISTS derived_from (
  src TEXT NOT NULL, dst TEXT NOT NULL, score REAL NOT NULL, z REAL, verdict TEXT NOT NULL, method TEXT NOT NULL,
  method_version TEXT NOT NULL, detected_at_ms INTEGER NOT NULL, evidence TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, relation TEXT, relation_detail TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (src, dst)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS derived_dst ON derived_from(dst, score, src, verdict);  -- covers traversals
CREATE INDEX IF NOT EXISTS derived_latest ON derived_from(detected_at_ms DESC, src);  -- the newest detections
CREATE TABLE IF NOT EXISTS declares_base (
  src TEXT NOT NULL, dst TEXT NOT NULL, relation TEXT NOT NULL, source TEXT NOT NULL,
  updated_at_ms INTEGER NOT NULL, PRIMARY KEY (src, dst)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS declares_dst ON declares_base(dst);
CREATE TABLE IF NOT EXISTS same_weights (
  a TEXT NOT NULL, b TEXT NOT NULL, sha256 TEXT NOT NULL, updated_at_ms INTEGER NOT NULL,
  PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS same_weights_b ON same_weights(b);
CREATE TABLE IF NOT EXISTS shares_init (
  src TEXT NOT NULL, dst TEXT NOT NULL, score REAL NOT NULL, z REAL, method_version TEXT NOT NULL,
  detected_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, PRIMARY KEY (src, dst)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shares_init_dst ON shares_init(dst);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
""" + closure.DDL + sqlite_changes.DDL

#: columns added after the first schema: (table, column, declaration)
ADDED_COLUMNS = (("derived_from", "relation", "TEXT"), ("derived_from", "relation_detail", "TEXT NOT NULL DEFAULT ''"),
                 ("model", "claims", "TEXT"))
