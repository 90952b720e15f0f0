"""The embedded store's change log and the batched reads an incremental alerts evaluation needs.

Every write that can change a finding leaves the model it concerns in ``touched`` (key, wall-clock ms),
by trigger, so no write path can forget it: a model row written, its family membership set or removed,
a detected or declared edge out of it written or deleted, an exact-copy pair it is part of, a family
record whose root it is. :func:`touched_since` reads that log through its index on ``ms``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from graph.records import FamilyRecord
from graph.store import EdgeRow

#: now in epoch milliseconds, in SQL (SQLite 3.40 has no unixepoch('subsec'))
_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


def _trigger(table: str, event: str, keys: tuple[str, ...]) -> str:
    row = "OLD" if event == "DELETE" else "NEW"
    ins = "\n  ".join(f"INSERT INTO touched VALUES ({row}.{k}, {_NOW}) ON CONFLICT(key) DO UPDATE SET ms = excluded.ms;"
                      for k in keys)
    return f"CREATE TRIGGER IF NOT EXISTS touch_{table}_{event.lower()} AFTER {event} ON {table}\nBEGIN\n  {ins}\nEND;"


_TRIGGERS = [("model", ("key",)), ("in_family", ("model_key",)), ("derived_from", ("src",)),
             ("declares_base", ("src",)), ("same_weights", ("a", "b"))]
DDL = "\n".join([
    "CREATE TABLE IF NOT EXISTS touched (key TEXT PRIMARY KEY, ms INTEGER NOT NULL) WITHOUT ROWID;",
    "CREATE INDEX IF NOT EXISTS touched_ms ON touched(ms);",
    *(_trigger(t, ev, keys) for t, keys in _TRIGGERS for ev in ("INSERT", "UPDATE", "DELETE")),
    # a family's licence or root is its root's concern (its members are found from the root)
    "CREATE TRIGGER IF NOT EXISTS touch_family_insert AFTER INSERT ON family WHEN NEW.root_key IS NOT NULL\n"
    f"BEGIN\n  INSERT INTO touched VALUES (NEW.root_key, {_NOW}) ON CONFLICT(key) DO UPDATE SET ms = excluded.ms;\nEND;",
    "CREATE TRIGGER IF NOT EXISTS touch_family_update AFTER UPDATE ON family WHEN NEW.root_key IS NOT NULL\n"
    f"BEGIN\n  INSERT INTO touched VALUES (NEW.root_key, {_NOW}) ON CONFLICT(key) DO UPDATE SET ms = excluded.ms;\nEND;",
])


def _each(keys: Sequence[str]) -> tuple[str, tuple[str]]:
    return "(SELECT value FROM json_each(?))", (json.dumps(sorted(set(keys))),)


def touched_since(db: sqlite3.Connection, ms: int) -> list[str]:
    return [k for (k,) in db.execute("SELECT key FROM touched WHERE ms >= ? ORDER BY key", (ms,))]


def families_of(db: sqlite3.Connection, keys: Sequence[str]) -> dict[str, FamilyRecord]:
    sel, arg = _each(keys)
    rows = db.execute("SELECT i.model_key, f.name, f.root_key, f.display_name, f.license FROM in_family i "
                      f"JOIN family f ON f.name = i.family WHERE i.model_key IN {sel}", arg)
    return {k: FamilyRecord(*rest) for k, *rest in rows}


def detected_from(db: sqlite3.Connection, srcs: Sequence[str]) -> list[EdgeRow]:
    sel, arg = _each(srcs)
    return [EdgeRow(*r) for r in db.execute(
        f"SELECT src, dst, 'DERIVED_FROM', score, verdict, relation, z FROM derived_from WHERE src IN {sel}", arg)]


def children_of(db: sqlite3.Connection, dsts: Sequence[str]) -> list[str]:
    sel, arg = _each(dsts)
    return [k for (k,) in db.execute(f"SELECT DISTINCT src FROM derived_from WHERE dst IN {sel} ORDER BY src", arg)]


def declarers_of(db: sqlite3.Connection, dsts: Sequence[str]) -> list[str]:
    sel, arg = _each(dsts)
    return [k for (k,) in db.execute(f"SELECT DISTINCT src FROM declares_base WHERE dst IN {sel} ORDER BY src", arg)]


def copies_among(db: sqlite3.Connection, keys: Sequence[str]) -> list[EdgeRow]:
    sel, arg = _each(keys)
    return [EdgeRow(a, b, "SAME_WEIGHTS") for a, b in db.execute(
        f"SELECT a, b FROM same_weights WHERE a IN {sel} UNION SELECT a, b FROM same_weights WHERE b IN {sel} "
        "ORDER BY 1, 2", arg * 2)]
