"""Persisted crawl state: watermarks, the work queue and the results, in one SQLite file.

Why SQLite: every step commits atomically, so a crawler killed at any instant (SIGKILL included)
restarts from what was committed: a model is either queued, or done with its result, never half.
Keys are the Hub's ``(_id, sha)``: a new commit of a repo is new work, the same commit is not.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crawler.errors import CrawlStateError
from crawler.records import HubModel, Outcome, WorkItem
from fingerprint.errors import FingerprintFileError, FingerprintIndexError
from fingerprint.io.source import MemorySource
from fingerprint.sketch import Sketch, read_sketch
from fingerprint.store import FingerprintStore, content_key
from graph.sqlitedb import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS watermark (endpoint TEXT, name TEXT, value TEXT, PRIMARY KEY (endpoint, name));
CREATE TABLE IF NOT EXISTS queue (
    endpoint TEXT, key TEXT, sha TEXT, id TEXT, created_at TEXT, last_modified TEXT,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, seq INTEGER,
    PRIMARY KEY (endpoint, key, sha));
CREATE INDEX IF NOT EXISTS queue_pending ON queue (endpoint, status, seq);
CREATE TABLE IF NOT EXISTS result (
    endpoint TEXT, key TEXT, sha TEXT, id TEXT, status TEXT, reason TEXT, record TEXT,
    processed_at TEXT, weights_digest TEXT, PRIMARY KEY (endpoint, key, sha));
CREATE INDEX IF NOT EXISTS result_weights ON result (endpoint, weights_digest, status);
"""


class CrawlState:
    """The crawl state of one endpoint in ``path`` (see module docstring)."""

    def __init__(self, path: str | Path, endpoint: str) -> None:
        self.path = Path(path)
        self.endpoint = endpoint.rstrip("/")
        try:
            self.db = connect(self.path, SCHEMA)
            # a claim still open belongs to a process that died mid-item: the item is queued again
            # (its attempt stays counted, so a model that kills its worker every time ends `failed`)
            self.db.execute("UPDATE queue SET status='pending' WHERE endpoint=? AND status='claimed'", (self.endpoint,))
        except sqlite3.Error as e:
            raise CrawlStateError(f"cannot open crawl state {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """One atomic step."""
        return transaction(self.db)

    # -- watermarks -------------------------------------------------------------------------
    def watermark(self, name: str) -> datetime | None:
        row = self.db.execute("SELECT value FROM watermark WHERE endpoint=? AND name=?", (self.endpoint, name)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def set_watermark(self, con: sqlite3.Connection, name: str, value: datetime) -> None:
        con.execute("INSERT INTO watermark VALUES (?,?,?) ON CONFLICT DO UPDATE SET value=excluded.value "
                    "WHERE excluded.value > watermark.value", (self.endpoint, name, value.isoformat()))

    # -- queue ------------------------------------------------------------------------------
    def next_seq(self, con: sqlite3.Connection) -> int:
        """The first free queue position; a discovery numbers its items from here in one transaction."""
        return int(con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM queue WHERE endpoint=?",
                               (self.endpoint,)).fetchone()[0])

    def enqueue(self, con: sqlite3.Connection, key: str, sha: str, repo_id: str,
                created_at: datetime | None, last_modified: datetime | None, seq: int) -> bool:
        """Queue ``(key, sha)`` at position ``seq`` unless it is queued or done already; True if new work."""
        cur = con.execute(
            "INSERT OR IGNORE INTO queue (endpoint, key, sha, id, created_at, last_modified, seq) VALUES (?,?,?,?,?,?,?)",
            (self.endpoint, key, sha, repo_id, _iso(created_at), _iso(last_modified), seq))
        return cur.rowcount == 1

    def known(self, key: str, sha: str) -> bool:
        return self.db.execute("SELECT 1 FROM queue WHERE endpoint=? AND key=? AND sha=?",
                               (self.endpoint, key, sha)).fetchone() is not None

    def pending(self, limit: int | None = None) -> list[tuple[str, str, str]]:
        """``(key, sha, id)`` of queued work, oldest first (parents were usually published first)."""
        rows = self.db.execute(
            "SELECT key, sha, id FROM queue WHERE endpoint=? AND status='pending' ORDER BY created_at, seq LIMIT ?",
            (self.endpoint, -1 if limit is None else limit)).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def pending_count(self) -> int:
        """Queued items not yet done (claimed ones included)."""
        return int(self.db.execute("SELECT COUNT(*) FROM queue WHERE endpoint=? AND status IN ('pending','claimed')",
                                   (self.endpoint,)).fetchone()[0])

    def claim(self, limit: int | None = None) -> list[WorkItem]:
        """Mark up to ``limit`` pending items claimed, oldest first, and count an attempt for each, in one
        transaction; a claim is closed by :meth:`finish` or :meth:`release`."""
        with self.tx() as con:
            rows = con.execute(
                "SELECT key, sha, id, attempts FROM queue WHERE endpoint=? AND status='pending' "
                "ORDER BY created_at, seq LIMIT ?", (self.endpoint, -1 if limit is None else limit)).fetchall()
            con.executemany("UPDATE queue SET status='claimed', attempts = attempts + 1 WHERE endpoint=? AND key=? "
                            "AND sha=?", [(self.endpoint, k, s) for k, s, _, _ in rows])
        return [WorkItem(str(k), str(s), str(i), int(n) + 1) for k, s, i, n in rows]

    def requeue(self, con: sqlite3.Connection, key: str, sha: str) -> bool:
        """Put a done ``(key, sha)`` back in the queue (what settled it changed: a gated repo opened up)."""
        return con.execute("UPDATE queue SET status='pending', attempts=0 WHERE endpoint=? AND key=? AND sha=? "
                           "AND status='done'", (self.endpoint, key, sha)).rowcount == 1

    def release(self, key: str, sha: str) -> None:
        """Put a claimed item back in the queue (a transient failure: the next run tries it again)."""
        with self.tx() as con:
            con.execute("UPDATE queue SET status='pending' WHERE endpoint=? AND key=? AND sha=? AND status='claimed'",
                        (self.endpoint, key, sha))

    def finish(self, key: str, sha: str, repo_id: str, status: str, reason: str | None,
               record: dict[str, Any]) -> None:
        """Store the result and mark the item done, in one transaction (exactly once per ``(key, sha)``)."""
        with self.tx() as con:
            con.execute("INSERT OR REPLACE INTO result VALUES (?,?,?,?,?,?,?,?,?)",
                        (self.endpoint, key, sha, repo_id, status, reason, json.dumps(record, sort_keys=True),
                         datetime.now(timezone.utc).isoformat(), record.get("weights_digest")))
            con.execute("UPDATE queue SET status='done' WHERE endpoint=? AND key=? AND sha=?", (self.endpoint, key, sha))

    def results(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT key, sha, id, status, reason, record FROM result WHERE endpoint=? "
                               "ORDER BY processed_at", (self.endpoint,)).fetchall()
        return [{"key": k, "sha": s, "id": i, "status": st, "reason": r, **json.loads(rec)}
                for k, s, i, st, r, rec in rows]

    def fingerprinted(self, store: FingerprintStore | None = None,
                      skip: set[str] | frozenset[str] = frozenset()) -> list[Outcome]:
        """Every model this state recorded as fingerprinted whose fingerprint is still in ``store`` (or,
        recorded by an earlier version, on disk), as the :class:`~crawler.records.Outcome` the pipeline
        took (oldest first; keys in ``skip`` left out).

        The one way code outside :mod:`crawler` learns what the crawl fingerprinted (``App.rematch``)."""
        return [o for r in self.results() if r["key"] not in skip
                and (o := _replayed(r, store)) is not None and o.status == "fingerprinted"]

    def counts(self) -> dict[str, int]:
        q = self.db.execute("SELECT status, COUNT(*) FROM queue WHERE endpoint=? GROUP BY status", (self.endpoint,))
        return {str(s): int(n) for s, n in q.fetchall()}

    def lfs_owner(self, sha256s: list[str]) -> tuple[str, str] | None:
        """``(key, id)`` of an already-processed model whose weight files have exactly these LFS hashes."""
        if not sha256s:
            return None
        digest = ",".join(sorted(sha256s))
        # an indexed column, not json_extract over every result: this runs once per crawled model
        row = self.db.execute("SELECT key, id FROM result WHERE endpoint=? AND weights_digest = ? AND "
                              "status='fingerprinted' ORDER BY processed_at LIMIT 1",
                              (self.endpoint, digest)).fetchone()
        return (str(row[0]), str(row[1])) if row else None


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d else None


def fingerprint_of(path: str | Path, repo_id: str) -> tuple[Path | None, str | None]:
    """The newest fingerprint the crawl state at ``path`` records for ``repo_id`` (any endpoint), read
    without writing (a web server looks pictures up while a crawler owns the file): ``(file, sha256)``,
    the file as recorded (None in a store that is not a local directory), the SHA-256 its store key
    derives from (None in a record from before the shared store)."""
    p = Path(path)
    if not p.exists():
        return None, None
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT record FROM result WHERE id=? AND status='fingerprinted' "
                             "ORDER BY processed_at DESC LIMIT 1", (repo_id,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise CrawlStateError(f"cannot read crawl state {p}: {e}") from e
    if row is None:
        return None, None
    rec = json.loads(row[0])
    fp, sha = rec.get("fingerprint"), rec.get("fingerprint_sha256")
    return (Path(fp) if isinstance(fp, str) and fp else None), (sha if isinstance(sha, str) and sha else None)


def read_stored(store: FingerprintStore, sha: str) -> Sketch:
    """The fingerprint whose bytes hash to ``sha``, read from ``store`` and checked.

    Raises:
        FingerprintIndexError: missing or unreadable; FingerprintFileError: altered or not a fingerprint.
    """
    key = content_key(sha)
    data = store.get(key)
    where = f"{store.describe()}/{key}"
    if hashlib.sha256(data).hexdigest() != sha:
        raise FingerprintFileError(where, "content does not match the SHA-256 the crawl recorded (tampered?)")
    return read_sketch(MemorySource(where, data), where)


def _replayed(r: dict[str, Any], store: FingerprintStore | None) -> Outcome | None:
    """The outcome a stored result records, as the pipeline took it: a fingerprinted model whose file is
    still in ``store`` (or, in a record from before the shared store, on disk), read back; an exact
    copy; None for anything else."""
    from fingerprint.sketch import load

    if not r.get("model"):
        return None
    m, bases = HubModel.from_record(r["model"]), dict(r.get("base_keys") or {})
    if r["status"] == "duplicate" and r.get("duplicate_of"):
        owner = r["duplicate_of"]
        return Outcome(m, "duplicate", r.get("reason"), duplicate_of=(str(owner[0]), str(owner[1])), base_keys=bases)
    if r["status"] != "fingerprinted":
        return None
    sha = r.get("fingerprint_sha256")
    if isinstance(sha, str) and store is not None:
        try:
            sk = read_stored(store, sha)
        except (FingerprintIndexError, FingerprintFileError):
            return None
        return Outcome(m, "fingerprinted", fingerprint=store.local_path(content_key(sha)), fingerprint_sha=sha,
                       sketch=sk, base_keys=bases)
    path = Path(r["fingerprint"]) if r.get("fingerprint") else None
    if path is None or not path.is_file():
        return None
    return Outcome(m, "fingerprinted", fingerprint=path, sketch=load(path), base_keys=bases)


def placed_outcomes(path: str | Path, store: FingerprintStore | None = None) -> list[Outcome]:
    """Every outcome placement reads, of every endpoint the crawl state at ``path`` holds: fingerprinted
    models (whose files are still in ``store``, or on disk) and exact copies, in the order they were processed. Read
    without writing (``lineage repair``).

    Raises:
        CrawlStateError: the state cannot be read.
    """
    p = Path(path)
    if not p.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT key, sha, id, status, reason, record FROM result "
                              "WHERE status IN ('fingerprinted', 'duplicate') ORDER BY processed_at").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise CrawlStateError(f"cannot read crawl state {p}: {e}") from e
    out = []
    for k, sha, i, st, reason, rec in rows:
        o = _replayed({"key": k, "sha": sha, "id": i, **json.loads(rec), "status": st, "reason": reason}, store)
        if o is not None:
            out.append(o)
    return out
