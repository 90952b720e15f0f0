"""The delivery job: fan outbox events out to subscriptions, send them at least once, retry, dead-letter.

For each subscription: events written after it was first seen become ``pending`` deliveries (or
``skipped`` when its filters or a mute say so); a subscription seen for the first time starts with the
latest event of every open finding, not the whole history. Pending deliveries are sent one message per
event, or one digest per ``digest_seconds`` window; subscriptions are served concurrently. A failure that
may pass (5xx, 408, 429, timeouts, refused connections) is retried with exponential backoff and jitter,
``delay = base · 2^k · U(0.75, 1.25)``, up to ``attempts_per_run`` times now, then left for the next run
until ``max_attempts``; and that opens the subscription's circuit: its other events wait for the next run
without using an attempt (a sink that is down costs one batch's tries per run, not every event's). A
refusal of one event (other 4xx) sends it to the dead letters at once. A configuration error of the
subscription (a malformed URL, a private address without ``allow_private``, refused credentials, a TLS
misconfiguration, 401/403/404/410) is no event's fault: it is reported once per run, logged when it first
appears, and every event waits for the fix. Dead letters go back in the
queue with ``lineage alerts retry`` (``AlertStore.retry_dead``), and by themselves when the subscription's
configuration changes (:func:`config_digest`): the failure may be what was fixed.

A delivery is marked ``sent`` only after its sink returned: a crash in between sends it again on the next
run with the same idempotency key (the event id), which the receiver dedupes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    return state.fan_out(sub.name, lambda e: sub.filters.accepts(e.type, e.finding)
                         and (e.type == "test" or not is_muted(e.finding, mutes)), config=config_digest(sub))


def config_digest(sub: Subscription) -> str:
    """A digest of everything that decides where and how ``sub`` delivers (its filters aside): a change of
    it re-arms the subscription's dead letters."""
    doc = sub.model_dump(mode="json", exclude={"name", "filters", "digest_seconds"})
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


def deliver(state: AlertStore, subs: list[Subscription], *, now: int | None = None,
            sleep: Callable[[float], None] = time.sleep, attempts_per_run: int = 6, max_attempts: int = 12,
            base_delay: float = 0.5, sinks: dict[str, Callable[[Subscription, list[Event]], None]] | None = None,
            workers: int = 8) -> Report:
    """One delivery run over every subscription (see module docstring), the subscriptions concurrently:
    one slow or dead sink does not hold back the others. Each runs on a connection of its own to the
    alerts state (``state.path``)."""
    report = Report()
    if not subs:
        return report

    def one(sub: Subscription) -> Report:
        own = AlertStore(state.path)
        try:
            return _deliver_one(own, sub, now, sleep, attempts_per_run, max_attempts, base_delay, sinks or SINKS)
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(subs))), thread_name_prefix="deliver") as pool:
        for r in pool.map(one, subs):
            report.counts.update(r.counts)
            report.errors += r.errors
    return report


def _deliver_one(state: AlertStore, sub: Subscription, now: int | None, sleep: Callable[[float], None],
                 attempts_per_run: int, max_attempts: int, base_delay: float,
                 send: dict[str, Callable[[Subscription, list[Event]], None]]) -> Report:
    """One subscription's share of a run. Its first batch that keeps failing after ``attempts_per_run``
    tries opens the circuit: the rest wait for the next run without using an attempt. A configuration
    error stops the run at once, leaves every event queued (none uses an attempt or dies) and is reported
    once, as one line, and logged when it first appears."""
    report = Report()
    fan_out(state, sub)
    t = now_ms() if now is None else now
    pending = state.due(sub.name, t)
    if not pending:
        return report
    if sub.digest_seconds > 0:
        if t - min(e.created_ms for e, _ in pending) < sub.digest_seconds * 1000:
            report.add(sub.name, "held for digest", len(pending))
            return report
        batches = [pending]
    else:
        batches = [[p] for p in pending]
    for i, batch in enumerate(batches):
        events = [ev for ev, _ in batch]
        ids = [ev.id for ev in events]
        done = max(n for _, n in batch)
        for k in range(attempts_per_run):
            try:
                send[sub.sink](sub, events)
            except DeliveryError as e:
                if e.config:
                    waiting = sum(len(b) for b in batches[i:])
                    report.add(sub.name, "waiting for a configuration fix", waiting)
                    report.errors.append(f"{sub.name}: configuration error: {e}")
                    if state.note_error(sub.name, str(e)):
                        LOG.warning("%s: configuration error: %s (%d deliveries wait for a fix)", sub.name, e, waiting)
                    return report
                done += 1
                if e.permanent or done >= max_attempts:
                    state.mark(sub.name, ids, "dead", done, str(e))
                    report.add(sub.name, "dead", len(events))
                    report.errors.append(f"{sub.name}: {e}")
                    break
                if k == attempts_per_run - 1:  # the circuit opens: this batch later, the rest next run
                    state.mark(sub.name, ids, "pending", done, str(e),
                               now_ms() + int(1000 * _delay(base_delay, done)))
                    report.add(sub.name, "retry", len(events))
                    rest = sum(len(b) for b in batches[i + 1:])
                    if rest:
                        report.add(sub.name, "waiting for the next run", rest)
                    LOG.warning("%s: %s (will retry; %d more wait for the next run)", sub.name, e, rest)
                    return report
                sleep(_delay(base_delay, k))
            else:
                state.mark(sub.name, ids, "sent", done + 1, None)
                report.add(sub.name, "sent", len(events))
                state.note_error(sub.name, None)
                break
    return report


def _delay(base: float, attempt: int) -> float:
    return float(min(300.0, base * 2**attempt) * random.uniform(0.75, 1.25))


def send_test(sub: Subscription, *, sinks: dict[str, Callable[[Subscription, list[Event]], None]] | None = None,
              now: int | None = None) -> dict[str, object]:
    """Send one synthetic, clearly marked test event through ``sub``'s sink, once, now, and report the
    sink's answer: ``{subscription, sent, event_id, error, permanent, configuration}``.

    The event is never written to the outbox: no other subscription receives it, and it neither sends
    nor marks any finding (a subscription's first delivery starts with every open finding; a test must
    not be that delivery)."""
    t = now_ms() if now is None else now
    event = Event(0, uuid.uuid4().hex, "test", "test",
                  {"kind": "test", "test": True, "model_id": "model-lineage/test", "severity": "info",
                   "reason": "lineage alerts test: a test event, not a finding"}, t)
    try:
        (sinks or SINKS)[sub.sink](sub, [event])
    except DeliveryError as e:
        return {"subscription": sub.name, "sent": False, "event_id": event.id, "error": str(e),
                "permanent": e.permanent, "configuration": e.config}
    return {"subscription": sub.name, "sent": True, "event_id": event.id, "error": None, "permanent": None,
            "configuration": None}
