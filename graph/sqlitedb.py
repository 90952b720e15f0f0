"""A small SQLite state file: WAL, autocommit outside explicit transactions, and one way to run one.

Shared by the stores that keep their own state beside the graph (the crawl state, the alerts state):
every step is one ``BEGIN IMMEDIATE`` transaction, so a process killed at any instant leaves the file
as it was before that step or after it, never in between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: Path, schema: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (creating the folder and the tables) a state file; raises ``sqlite3.Error`` or ``OSError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic step: committed when the block ends, rolled back if it raises (or is interrupted)."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
