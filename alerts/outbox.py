"""The alerts state: findings as last evaluated, an outbox of events, deliveries, acks and mutes.

One SQLite file (``$LINEAGE_HOME/alerts.sqlite``). :meth:`AlertStore.sync` compares a fresh evaluation
with the stored findings and, **in one transaction**, records every change and the outbox event that
announces it (``opened``, ``changed`` when the finding's material digest moves, ``resolved`` when it is
no longer found). The same evaluation twice writes nothing; a crash before the commit leaves the state
as it was, and the next evaluation derives the same changes again, so no event is lost or doubled.

Deliveries are at least once: an event's ``id`` (its idempotency key, sent as ``webhook-id``) is fixed
when the event is written, so a redelivery after a crash carries the same key and a receiver dedupes on it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alerts.errors import AlertStateError, UnknownFindingError
from alerts.findings import Finding
from graph.sqlitedb import connect, transaction

EventType = Literal["opened", "changed", "resolved", "test"]
DeliveryStatus = Literal["pending", "sent", "dead", "skipped"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS finding (
    dedup_key TEXT PRIMARY KEY, kind TEXT NOT NULL, severity TEXT NOT NULL, model_key TEXT NOT NULL,
    model_id TEXT NOT NULL, organization TEXT NOT NULL, family TEXT, license TEXT, digest TEXT NOT NULL,
    doc TEXT NOT NULL, status TEXT NOT NULL, first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
    resolved_ms INTEGER, acked_ms INTEGER);
CREATE INDEX IF NOT EXISTS finding_model ON finding (model_id);
CREATE INDEX IF NOT EXISTS finding_family ON finding (family);
CREATE INDEX IF NOT EXISTS finding_model_key ON finding (model_key, status);
CREATE TABLE IF NOT EXISTS watermark (
    graph TEXT PRIMARY KEY, ms INTEGER NOT NULL, rules TEXT NOT NULL, full_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, dedup_key TEXT NOT NULL, type TEXT NOT NULL,
    doc TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS delivery (
    event_id TEXT NOT NULL, subscription TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL DEFAULT 0, last_error TEXT, sent_ms INTEGER, PRIMARY KEY (event_id, subscription));
CREATE INDEX IF NOT EXISTS delivery_pending ON delivery (subscription, status, next_ms);
CREATE TABLE IF NOT EXISTS subscription (name TEXT PRIMARY KEY, since_seq INTEGER NOT NULL, config TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS mute (scope TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (scope, value));
"""
MUTE_SCOPES = ("model", "organization", "family", "kind")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Event:
    """An outbox row: ``id`` is the idempotency key; ``finding`` the finding's document at that moment."""

    seq: int
    id: str
    dedup_key: str
    type: EventType
    finding: dict[str, Any]
    created_ms: int

    def envelope(self) -> dict[str, Any]:
        """The JSON document every sink serialises (a CloudEvents-like envelope)."""
        return {"id": self.id, "type": f"lineage.finding.{self.type}", "time_ms": self.created_ms,
                "dedup_key": self.dedup_key, "data": self.finding}


@dataclass(frozen=True)
class Mark:
    """An evaluation's watermark: the graph it read (the ``LINEAGE_GRAPH`` it was opened with), the time
    it started (what it saw was written before), the rule table's version, and the last full one."""

    graph: str
    ms: int
    rules: str
    full_ms: int


@dataclass(frozen=True)
class SyncResult:
    opened: int
    changed: int
    resolved: int
    unchanged: int


class AlertStore:
    """The alerts state in ``path`` (see module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = connect(self.path, SCHEMA, synchronous="FULL")  # an outbox row must survive a power cut
            have = {r[1] for r in self.db.execute("PRAGMA table_info(subscription)")}
            for col in ("config", "error"):  # a state written before these columns
                if col not in have:
                    self.db.execute(f"ALTER TABLE subscription ADD COLUMN {col} TEXT")
        except (sqlite3.Error, OSError) as e:
            raise AlertStateError(f"cannot open the alerts state {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.db)

    # -- findings and the outbox ------------------------------------------------------------------
    def watermark(self, graph: str) -> Mark | None:
        """Where the last evaluation of the graph ``graph`` (its settings' name) left off."""
        row = self.db.execute("SELECT ms, rules, full_ms FROM watermark WHERE graph = ?", (graph,)).fetchone()
        return None if row is None else Mark(graph, int(row[0]), str(row[1]), int(row[2]))

    def open_counts(self) -> dict[str, int]:
        """Open findings by kind (acknowledged ones included: they are still found)."""
        return {str(k): int(n) for k, n in self.db.execute(
            "SELECT kind, COUNT(*) FROM finding WHERE status = 'open' GROUP BY kind ORDER BY kind")}

    def sync(self, findings: list[Finding], now: int | None = None, *, scope: set[str] | None = None,
             mark: Mark | None = None) -> SyncResult:
        """Store this evaluation; write an event for each opened, changed or resolved finding (one transaction).

        ``scope``: the evaluation covered only these models (an incremental one), so only their stored
        findings can be resolved by it; ``mark``: the watermark it reached, recorded in the same
        transaction (a crash before the commit repeats the whole evaluation, never half of it).
        """
        t = now_ms() if now is None else now
        fresh = {f.dedup_key: f for f in findings}
        opened = changed = resolved = unchanged = 0
        with self.tx() as con:
            q = "SELECT dedup_key, digest, status, acked_ms FROM finding"
            rows = con.execute(q) if scope is None else con.execute(
                q + " WHERE model_key IN (SELECT value FROM json_each(?))", (json.dumps(sorted(scope)),))
            old = {k: (d, s, a) for k, d, s, a in rows}
            for key, f in fresh.items():
                doc = json.dumps(f.to_dict(), sort_keys=True)
                prev = old.get(key)
                if prev is None or prev[1] == "resolved":
                    con.execute("INSERT INTO finding VALUES (?,?,?,?,?,?,?,?,?,?,'open',?,?,NULL,NULL) ON CONFLICT(dedup_key) "
                                "DO UPDATE SET digest=excluded.digest, doc=excluded.doc, severity=excluded.severity, "
                                "status='open', last_seen_ms=excluded.last_seen_ms, resolved_ms=NULL, acked_ms=NULL",
                                (key, f.kind, f.severity, f.model_key, f.model_id, f.organization, f.family, f.license,
                                 f.digest, doc, t, t))
                    self._event(con, key, "opened", doc, t)
                    opened += 1
                elif prev[0] != f.digest:
                    con.execute("UPDATE finding SET digest=?, doc=?, severity=?, last_seen_ms=? WHERE dedup_key=?",
                                (f.digest, doc, f.severity, t, key))
                    if prev[2] is None:
                        self._event(con, key, "changed", doc, t)  # an acknowledged finding changes quietly
                    changed += 1
                else:
                    con.execute("UPDATE finding SET last_seen_ms=? WHERE dedup_key=?", (t, key))
                    unchanged += 1
            for key, (_, status, _) in old.items():
                if key not in fresh and status == "open":
                    doc = con.execute("SELECT doc FROM finding WHERE dedup_key=?", (key,)).fetchone()[0]
                    con.execute("UPDATE finding SET status='resolved', resolved_ms=? WHERE dedup_key=?", (t, key))
                    self._event(con, key, "resolved", doc, t)
                    resolved += 1
            if mark is not None:
                con.execute("INSERT INTO watermark VALUES (?, ?, ?, ?) ON CONFLICT(graph) DO UPDATE SET ms = excluded.ms, "
                            "rules = excluded.rules, full_ms = excluded.full_ms", (mark.graph, mark.ms, mark.rules, mark.full_ms))
        return SyncResult(opened, changed, resolved, unchanged)

    @staticmethod
    def _event(con: sqlite3.Connection, key: str, kind: EventType, doc: str, t: int) -> None:
        con.execute("INSERT INTO event (id, dedup_key, type, doc, created_ms) VALUES (?,?,?,?,?)",
                    (uuid.uuid4().hex, key, kind, doc, t))

    _EVENT = "SELECT seq, id, dedup_key, type, doc, created_ms FROM event"

    @staticmethod
    def _events(rows: list[Any]) -> list[Event]:
        return [Event(int(s), str(i), str(k), t, json.loads(d), int(c)) for s, i, k, t, d, c in rows]

    def events_after(self, seq: int, limit: int = 10_000) -> list[Event]:
        return self._events(self.db.execute(f"{self._EVENT} WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall())

    def events_at(self, seqs: list[int]) -> list[Event]:
        """The events with these sequence numbers, in order (one query per 900)."""
        out: list[Event] = []
        for i in range(0, len(seqs), 900):
            part = seqs[i : i + 900]
            out += self._events(self.db.execute(f"{self._EVENT} WHERE seq IN ({', '.join('?' * len(part))})",
                                                part).fetchall())
        return sorted(out, key=lambda e: e.seq)

    def event(self, event_id: str) -> Event:
        row = self.db.execute(f"{self._EVENT} WHERE id=?", (event_id,)).fetchone()
        if row is None:
            raise UnknownFindingError(event_id)
        return self._events([row])[0]

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM event").fetchone()[0])

    # -- deliveries ------------------------------------------------------------------------------
    def fan_out(self, subscription: str, accepts: Callable[[Event], bool], config: str | None = None) -> int:
        """Create ``subscription``'s deliveries for the events it has not seen (``pending`` if ``accepts``
        the event, else ``skipped``); returns how many are pending. A subscription seen for the first time
        starts with the latest event of every open finding, not the whole history. ``config`` is a digest of
        the subscription's configuration: when it differs from the one stored, the dead letters of the
        subscription are re-armed (the failure that killed them may be what was fixed)."""
        with self.tx() as con:
            row = con.execute("SELECT since_seq, config FROM subscription WHERE name=?", (subscription,)).fetchone()
            last = int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM event").fetchone()[0])
            if row is None:  # first sight: the current state, not the history
                seqs = [int(s) for (s,) in con.execute(
                    "SELECT MAX(e.seq) FROM event e JOIN finding f ON f.dedup_key = e.dedup_key "
                    "WHERE f.status='open' GROUP BY e.dedup_key")]
                con.execute("INSERT INTO subscription (name, since_seq, config) VALUES (?, ?, ?)",
                            (subscription, last, config))
            else:
                seqs = [int(s) for (s,) in con.execute("SELECT seq FROM event WHERE seq > ?", (int(row[0]),))]
                con.execute("UPDATE subscription SET since_seq=?, config=COALESCE(?, config) WHERE name=?",
                            (last, config, subscription))
                if config is not None and row[1] is not None and row[1] != config:
                    self._rearm(con, subscription)
        events = self.events_at(sorted(seqs))
        with self.tx() as con:
            con.executemany("INSERT OR IGNORE INTO delivery (event_id, subscription, status) VALUES (?, ?, ?)",
                            [(e.id, subscription, "pending" if accepts(e) else "skipped") for e in events])
        return int(self.db.execute("SELECT COUNT(*) FROM delivery WHERE subscription=? AND status='pending'",
                                   (subscription,)).fetchone()[0])

    def due(self, subscription: str, now: int) -> list[tuple[Event, int]]:
        """``subscription``'s pending deliveries whose next try is due at ``now``: (event, attempts so far)."""
        rows = self.db.execute("SELECT e.seq, d.attempts FROM delivery d JOIN event e ON e.id = d.event_id "
                               "WHERE d.subscription=? AND d.status='pending' AND d.next_ms <= ? ORDER BY e.seq",
                               (subscription, now)).fetchall()
        attempts = {int(s): int(n) for s, n in rows}
        return [(e, attempts[e.seq]) for e in self.events_at(list(attempts))]

    def mark(self, subscription: str, event_ids: list[str], status: DeliveryStatus, attempts: int,
             error: str | None, next_ms: int = 0) -> None:
        """Record the outcome of one try of these deliveries (one transaction)."""
        with self.tx() as con:
            con.executemany("UPDATE delivery SET status=?, attempts=?, last_error=?, next_ms=?, sent_ms=? "
                            "WHERE event_id=? AND subscription=?",
                            [(status, attempts, error, next_ms, now_ms() if status == "sent" else None, i,
                              subscription) for i in event_ids])

    def note_error(self, subscription: str, error: str | None) -> bool:
        """Record the subscription's standing configuration error (None: it delivers again); True when that
        changed what was recorded (a new error is worth a log line, the same one every run is not)."""
        with self.tx() as con:
            row = con.execute("SELECT error FROM subscription WHERE name=?", (subscription,)).fetchone()
            if row is None or row[0] == error:
                return False
            con.execute("UPDATE subscription SET error=? WHERE name=?", (error, subscription))
            return True

    @staticmethod
    def _rearm(con: sqlite3.Connection, subscription: str | None) -> int:
        q = ("UPDATE delivery SET status='pending', attempts=0, next_ms=0, last_error=NULL WHERE status='dead'"
             + (" AND subscription=?" if subscription is not None else ""))
        return int(con.execute(q, (subscription,) if subscription is not None else ()).rowcount)

    def retry_dead(self, subscription: str | None = None) -> int:
        """Put the dead letters of ``subscription`` (None: of every subscription) back in the queue with
        their attempts reset; returns how many. The next delivery run sends them."""
        with self.tx() as con:
            return self._rearm(con, subscription)

    def dead_letters(self) -> list[dict[str, object]]:
        """Deliveries given up on, oldest event first."""
        rows = self.db.execute("SELECT d.subscription, d.event_id, e.type, e.dedup_key, d.attempts, d.last_error "
                               "FROM delivery d JOIN event e ON e.id = d.event_id WHERE d.status='dead' ORDER BY e.seq")
        return [{"subscription": s, "event_id": i, "type": t, "dedup_key": k, "attempts": n, "error": err}
                for s, i, t, k, n, err in rows]

    # -- reading, acks and mutes ------------------------------------------------------------------
    def findings(self, *, status: str = "open", kind: str | None = None, family: str | None = None,
                 model: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q, args = "SELECT doc, status, acked_ms, first_seen_ms, resolved_ms FROM finding WHERE 1=1", []
        for col, v in (("status", None if status == "all" else status), ("kind", kind), ("family", family),
                       ("model_id", model)):
            if v is not None:
                q += f" AND {col} = ?"
                args.append(v)
        q += " ORDER BY model_id, kind LIMIT ?"
        mutes = set(self.mutes())
        return [self._row(row, mutes) for row in self.db.execute(q, [*args, limit]).fetchall()]

    @staticmethod
    def _row(row: tuple[Any, ...], mutes: set[tuple[str, str]]) -> dict[str, Any]:
        d, s, a, f, r = row
        doc = json.loads(d)
        return {**doc, "status": s, "acked": a is not None, "first_seen_ms": f, "resolved_ms": r,
                "muted": is_muted(doc, mutes)}

    def finding(self, key: str) -> dict[str, Any]:
        """A finding by dedup key (a unique prefix of at least 6 characters works)."""
        rows = self.db.execute("SELECT dedup_key FROM finding WHERE dedup_key LIKE ? LIMIT 2",
                               (key.replace("%", "").replace("_", "") + "%",)).fetchall() if len(key) >= 6 else []
        if len(rows) != 1:
            raise UnknownFindingError(key)
        full = str(rows[0][0])
        found = self._row(self.db.execute("SELECT doc, status, acked_ms, first_seen_ms, resolved_ms FROM finding "
                                          "WHERE dedup_key=?", (full,)).fetchone(), set(self.mutes()))
        events = self.db.execute("SELECT id, type, created_ms FROM event WHERE dedup_key=? ORDER BY seq", (full,))
        found["events"] = [{"id": i, "type": t, "created_ms": c} for i, t, c in events]
        return found

    def ack(self, key: str) -> str:
        full = self.finding(key)["dedup_key"]
        with self.tx() as con:
            con.execute("UPDATE finding SET acked_ms=? WHERE dedup_key=?", (now_ms(), full))
        return str(full)

    def mute(self, scope: str, value: str, on: bool = True) -> None:
        if scope not in MUTE_SCOPES:
            raise ValueError(f"mute scope {scope!r}: use one of {', '.join(MUTE_SCOPES)}")
        with self.tx() as con:
            if on:
                con.execute("INSERT OR IGNORE INTO mute VALUES (?, ?)", (scope, value))
            else:
                con.execute("DELETE FROM mute WHERE scope=? AND value=?", (scope, value))

    def mutes(self) -> list[tuple[str, str]]:
        return [(str(s), str(v)) for s, v in self.db.execute("SELECT scope, value FROM mute ORDER BY scope, value")]

    def muted(self, finding: dict[str, Any]) -> bool:
        return is_muted(finding, set(self.mutes()))


def is_muted(finding: dict[str, Any], mutes: set[tuple[str, str]]) -> bool:
    """Whether a mute covers the finding's model, organisation, family or kind."""
    return bool(mutes & {("model", finding.get("model_id")), ("organization", finding.get("organization")),
                         ("family", finding.get("family")), ("kind", finding.get("kind"))})
