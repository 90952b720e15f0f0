"""The delivery job: fan outbox events out to subscriptions, send them at least once, retry, dead-letter.

For each subscription: events written after it was first seen become ``pending`` deliveries (or
``skipped`` when its filters or a mute say so); a subscription seen for the first time starts with the
latest event of every open finding, not the whole history. Pending deliveries are sent one message per
event, or one digest per ``digest_seconds`` window. A failure that may pass (5xx, 408, 429, timeouts,
refused connections) is retried with exponential backoff and jitter, ``delay = base · 2^k · U(0.75,
1.25)``, up to ``attempts_per_run`` times now, then left for the next run until ``max_attempts``; a
permanent one (other 4xx, a refused address) goes to the dead letters at once.

A delivery is marked ``sent`` only after its sink returned: a crash in between sends it again on the next
run with the same idempotency key (the event id), which the receiver dedupes on.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from alerts.errors import DeliveryError
from alerts.outbox import AlertStore, Event, is_muted, now_ms
from alerts.sinks import SINKS
from alerts.subscriptions import Subscription

LOG = logging.getLogger(__name__)


@dataclass
class Report:
    """What one delivery run did, per subscription: ``sent``, ``retry`` (left pending), ``dead``, ``skipped``."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, sub: str, what: str, n: int = 1) -> None:
        self.counts.setdefault(sub, Counter())[what] += n

    def as_dict(self) -> dict[str, object]:
        return {"subscriptions": {k: dict(v) for k, v in self.counts.items()}, "errors": self.errors}


def fan_out(state: AlertStore, sub: Subscription) -> int:
    """Create this subscription's deliveries for events it has not seen; returns how many are pending."""
    mutes = set(state.mutes())
    with state.tx() as con:
        row = con.execute("SELECT since_seq FROM subscription WHERE name=?", (sub.name,)).fetchone()
        last = int(con.execute("SELECT COALESCE(MAX(seq), 0) FROM event").fetchone()[0])
        if row is None:  # first sight: the current state, not the history
            seqs = [int(s) for (s,) in con.execute(
                "SELECT MAX(e.seq) FROM event e JOIN finding f ON f.dedup_key = e.dedup_key WHERE f.status='open' "
                "GROUP BY e.dedup_key")]
            con.execute("INSERT INTO subscription VALUES (?, ?)", (sub.name, last))
        else:
            seqs = [int(s) for (s,) in con.execute("SELECT seq FROM event WHERE seq > ?", (int(row[0]),))]
            con.execute("UPDATE subscription SET since_seq=? WHERE name=?", (last, sub.name))
    events = state.events_at(sorted(seqs))
    with state.tx() as con:
        for e in events:
            ok = sub.filters.accepts(e.type, e.finding) and (e.type == "test" or not is_muted(e.finding, mutes))
            con.execute("INSERT OR IGNORE INTO delivery (event_id, subscription, status) VALUES (?, ?, ?)",
                        (e.id, sub.name, "pending" if ok else "skipped"))
    return int(state.db.execute("SELECT COUNT(*) FROM delivery WHERE subscription=? AND status='pending'",
                                (sub.name,)).fetchone()[0])


def _pending(state: AlertStore, sub: Subscription, now: int) -> list[tuple[Event, int]]:
    rows = state.db.execute("SELECT e.seq, d.attempts FROM delivery d JOIN event e ON e.id = d.event_id "
                            "WHERE d.subscription=? AND d.status='pending' AND d.next_ms <= ? ORDER BY e.seq",
                            (sub.name, now)).fetchall()
    attempts = {int(s): int(n) for s, n in rows}
    return [(e, attempts[e.seq]) for e in state.events_at(list(attempts))]


def deliver(state: AlertStore, subs: list[Subscription], *, now: int | None = None,
            sleep: Callable[[float], None] = time.sleep, attempts_per_run: int = 6, max_attempts: int = 12,
            base_delay: float = 0.5, sinks: dict[str, Callable[[Subscription, list[Event]], None]] | None = None) -> Report:
    """One delivery run over every subscription (see module docstring)."""
    report = Report()
    send = sinks or SINKS
    for sub in subs:
        fan_out(state, sub)
        t = now_ms() if now is None else now
        pending = _pending(state, sub, t)
        if not pending:
            continue
        if sub.digest_seconds > 0:
            if t - min(e.created_ms for e, _ in pending) < sub.digest_seconds * 1000:
                report.add(sub.name, "held for digest", len(pending))
                continue
            batches = [pending]
        else:
            batches = [[p] for p in pending]
        for batch in batches:
            events = [e for e, _ in batch]
            done = max(n for _, n in batch)
            for k in range(attempts_per_run):
                try:
                    send[sub.sink](sub, events)
                except DeliveryError as e:
                    done += 1
                    if e.permanent or done >= max_attempts:
                        _mark(state, sub, events, "dead", done, str(e))
                        report.add(sub.name, "dead", len(events))
                        report.errors.append(f"{sub.name}: {e}")
                        break
                    if k == attempts_per_run - 1:  # left for the next run, later
                        _mark(state, sub, events, "pending", done, str(e), now_ms() + int(1000 * _delay(base_delay, done)))
                        report.add(sub.name, "retry", len(events))
                        LOG.warning("%s: %s (will retry)", sub.name, e)
                        break
                    sleep(_delay(base_delay, k))
                else:
                    _mark(state, sub, events, "sent", done + 1, None)
                    report.add(sub.name, "sent", len(events))
                    break
    return report


def _delay(base: float, attempt: int) -> float:
    return float(min(300.0, base * 2**attempt) * random.uniform(0.75, 1.25))


def _mark(state: AlertStore, sub: Subscription, events: list[Event], status: str, attempts: int, error: str | None,
          next_ms: int = 0) -> None:
    with state.tx() as con:
        con.executemany("UPDATE delivery SET status=?, attempts=?, last_error=?, next_ms=?, sent_ms=? "
                        "WHERE event_id=? AND subscription=?",
                        [(status, attempts, error, next_ms, now_ms() if status == "sent" else None, e.id, sub.name)
                         for e in events])


def dead_letters(state: AlertStore) -> list[dict[str, object]]:
    rows = state.db.execute("SELECT d.subscription, d.event_id, e.type, e.dedup_key, d.attempts, d.last_error "
                            "FROM delivery d JOIN event e ON e.id = d.event_id WHERE d.status='dead' ORDER BY e.seq")
    return [{"subscription": s, "event_id": i, "type": t, "dedup_key": k, "attempts": n, "error": err}
            for s, i, t, k, n, err in rows]
