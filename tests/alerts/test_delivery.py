"""alerts.delivery and alerts.sinks against real receivers on loopback: a webhook server that checks the
Standard Webhooks signature, a Slack-shaped receiver, an SMTP server (aiosmtpd) with STARTTLS and AUTH,
a JSONL file, and a delivery process killed between sending and marking sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alerts.delivery import deliver
from alerts.findings import Finding
from alerts.outbox import AlertStore
from alerts.subscriptions import Subscription

ROOT = Path(__file__).parents[2]
SECRET = "whsec_" + base64.b64encode(b"test-secret-0123456789").decode()
EVIL = "<!channel> <script>x</script> *bold* `code`\r\nBcc: victim@example.org"


class Receiver:
    """A loopback HTTP server that records every request and answers from a script of statuses."""

    def __init__(self, statuses: list[int] | None = None, secret: str | None = None) -> None:
        self.statuses = list(statuses or [])
        self.secret = secret
        self.requests: list[dict[str, Any]] = []
        self.kill_pid: int | None = None
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                h = {k.lower(): v for k, v in self.headers.items()}
                ok_sig = None
                if rec.secret and "webhook-signature" in h:
                    key = base64.b64decode(rec.secret[6:])
                    mac = hmac.new(key, f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + body, hashlib.sha256)
                    ok_sig = h["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()
                rec.requests.append({"headers": h, "body": json.loads(body), "signature_ok": ok_sig})
                if rec.kill_pid is not None:  # the sender dies after the receiver has the message
                    os.kill(rec.kill_pid, signal.SIGKILL)
                    rec.kill_pid = None
                    time.sleep(0.5)
                status = rec.statuses.pop(0) if rec.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered_ids(self) -> set[str]:
        return {r["headers"]["webhook-id"] for r in self.requests}

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(secret=SECRET)
    yield r
    r.close()


def finding(model: str = "frank/llama-a-moe", kind: str = "license_conflict", severity: str = "high",
            license: str = "apache-2.0") -> Finding:
    return Finding(kind, severity, f"key-{model}", model, model.split("/")[0], "key-base", "meta/llama-a",  # type: ignore[arg-type]
                   "llama-a", license, f"licensed {license}; the base's llama2 requires its own terms",
                   {"rule": "llama-2", "clause": "§1.b.i", "score": 0.97})


def hook(receiver: Receiver, **kw: Any) -> Subscription:
    return Subscription(name=kw.pop("name", "hook"), sink=kw.pop("sink", "webhook"), url=receiver.url, secret=SECRET,
                        allow_private=True, **kw)


def test_signed_delivery_and_five_503s_then_200_is_one_delivery(tmp_path: Path, receiver: Receiver) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync([finding()])
    receiver.statuses = [503] * 5
    report = deliver(state, [hook(receiver)], base_delay=0.001)
    assert report.counts["hook"] == {"sent": 1}
    assert len(receiver.requests) == 6 and len(receiver.delivered_ids()) == 1
    assert all(r["signature_ok"] for r in receiver.requests)
    env = receiver.requests[-1]["body"]
    assert env["type"] == "lineage.finding.opened" and env["data"]["kind"] == "license_conflict"
    assert env["id"] == receiver.requests[-1]["headers"]["webhook-id"]
    assert deliver(state, [hook(receiver)]).counts == {}  # sent is sent
    assert len(receiver.requests) == 6
    state.close()


def test_a_400_is_a_dead_letter_and_never_retried(tmp_path: Path, receiver: Receiver) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync([finding()])
    receiver.statuses = [400]
    report = deliver(state, [hook(receiver)], base_delay=0.001)
    assert report.counts["hook"] == {"dead": 1} and "HTTP 400" in report.errors[0]
    deliver(state, [hook(receiver)], base_delay=0.001)
    assert len(receiver.requests) == 1
    assert state.dead_letters()[0]["error"].endswith("HTTP 400")
    state.close()


def test_private_and_loopback_targets_are_refused_unless_allowed(tmp_path: Path, receiver: Receiver) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync([finding()])
    subs = [Subscription(name="loop", sink="webhook", url=receiver.url),
            Subscription(name="lan", sink="slack", url="http://10.1.2.3/hook"),
            Subscription(name="meta", sink="webhook", url="http://169.254.169.254/latest")]
    report = deliver(state, subs)
    # a configuration error of the subscription: the finding waits for a fix instead of dying
    assert {k: dict(v) for k, v in report.counts.items()} == {s.name: {"waiting for a configuration fix": 1} for s in subs}
    assert all("configuration error" in e and "private or loopback" in e for e in report.errors)
    assert receiver.requests == [] and state.dead_letters() == []
    state.close()


def test_killed_between_sending_and_marking_sent_redelivers_the_same_key(tmp_path: Path, receiver: Receiver) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync([finding(), finding("mallory/x", "undeclared_base", "medium", "mit")])
    state.close()
    sub = hook(receiver)
    code = ("import sys; from alerts.outbox import AlertStore; from alerts.delivery import deliver; "
            "from alerts.subscriptions import Subscription; "
            "deliver(AlertStore(sys.argv[1]), [Subscription.model_validate_json(sys.argv[2])])")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "alerts.sqlite"), sub.model_dump_json()],
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    receiver.kill_pid = p.pid
    p.wait(60)
    assert p.returncode == -signal.SIGKILL and len(receiver.requests) == 1  # killed while the first was in flight
    state = AlertStore(tmp_path / "alerts.sqlite")  # restart: nothing lost, the first one sent again
    report = deliver(state, [sub], base_delay=0.001)
    assert report.counts["hook"] == {"sent": 2}
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(ids) == 3 and ids[0] == ids[1] and len(set(ids)) == 2  # the receiver dedupes on webhook-id: 2 alerts
    state.close()


def test_next_pass_sends_nothing_and_a_fix_sends_one_resolved(tmp_path: Path, receiver: Receiver) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    sub = hook(receiver)
    state.sync([finding()])
    deliver(state, [sub])
    state.sync([finding()])
    assert deliver(state, [sub]).counts == {} and len(receiver.requests) == 1
    state.sync([])  # the card was fixed: the finding is gone
    assert deliver(state, [sub]).counts["hook"] == {"sent": 1}
    assert [r["body"]["type"] for r in receiver.requests] == ["lineage.finding.opened", "lineage.finding.resolved"]
    state.close()


def test_filters_mutes_and_digests(tmp_path: Path, receiver: Receiver) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    subs = [hook(receiver, name="high", filters={"min_severity": "high"}),
            hook(receiver, name="digest", digest_seconds=3600)]
    deliver(state, subs)  # both subscriptions are known before the first finding
    state.mute("organization", "mallory")
    state.sync([finding(), finding("mallory/x", "undeclared_base", "medium", "mit"), finding("judy/y", "undeclared_base",
                                                                                            "medium", "llama2")])
    report = deliver(state, subs)
    assert report.counts["high"] == {"sent": 1} and report.counts["digest"] == {"held for digest": 2}
    report = deliver(state, subs, now=int(time.time() * 1000) + 3_601_000)
    digest = receiver.requests[-1]["body"]
    assert report.counts["digest"] == {"sent": 2} and digest["type"] == "lineage.digest"
    assert {e["data"]["model_id"] for e in digest["events"]} == {"frank/llama-a-moe", "judy/y"}  # mallory is muted
    assert receiver.requests[-1]["signature_ok"] and len(receiver.requests) == 2
    state.close()


def test_slack_payload_has_blocks_and_escapes_mrkdwn(tmp_path: Path) -> None:
    slack = Receiver()
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync([finding(license=f"other ({EVIL})")])
    assert deliver(state, [Subscription(name="chat", sink="slack", url=slack.url, allow_private=True)]).counts[
        "chat"] == {"sent": 1}
    doc = slack.requests[0]["body"]
    assert isinstance(doc["text"], str) and 0 < len(doc["text"]) <= 3000
    assert [b["type"] for b in doc["blocks"]] == ["header", "section"]
    section = doc["blocks"][1]["text"]
    assert section["type"] == "mrkdwn" and "&lt;!channel&gt;" in section["text"] and "<!channel>" not in section["text"]
    assert "<script>" not in json.dumps(doc)
    slack.close()
    state.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_email_over_starttls_with_auth(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"lineage" and data.password == b"pw"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    port = _free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     authenticator=auth, auth_require_tls=True)
    ctl.start()
    try:
        base = {"name": "mail", "sink": "email", "smtp_host": "127.0.0.1", "smtp_port": port, "ca_file": str(tmp_path / "ca.pem"),
                "username": "lineage", "sender": "lineage@example.org", "to": ["legal@example.org"]}
        state = AlertStore(tmp_path / "alerts.sqlite")
        state.sync([finding(model="evil/x", license=f"other ({EVIL})")])
        bad = deliver(state, [Subscription.model_validate({**base, "name": "badpw", "password": "nope"})])
        assert bad.counts["badpw"] == {"waiting for a configuration fix": 1} and "authentication failed" in bad.errors[0]
        report = deliver(state, [Subscription.model_validate({**base, "password": "pw"})])
        assert report.counts["mail"] == {"sent": 1}, report.errors
        rcpt, msg = got[0]
        assert rcpt == ["legal@example.org"] and "victim" not in str(rcpt)
        # the hostile licence's "\r\nBcc:" stays inside the subject (folded per RFC 5322, never a header of its own)
        assert msg["Bcc"] is None and msg.keys() == ["From", "To", "Subject", "Message-ID", "Content-Type",
                                                     "Content-Transfer-Encoding", "MIME-Version"]
        assert "evil/x" in msg["Subject"] and "Bcc: victim" in " ".join(msg["Subject"].split())
        assert msg["Message-ID"].startswith("<") and "license_conflict" in msg.get_payload()
        state.close()
    finally:
        ctl.stop()


def test_jsonl_sink_appends_one_envelope_per_event(tmp_path: Path) -> None:
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync([finding(), finding("judy/y", "undeclared_base", "medium", "llama2")])
    out = tmp_path / "out" / "alerts.jsonl"
    sub = Subscription(name="log", sink="jsonl", path=str(out))
    assert deliver(state, [sub]).counts["log"] == {"sent": 2}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["data"]["model_id"] for x in lines] == ["frank/llama-a-moe", "judy/y"] and len({x["id"] for x in lines}) == 2
    state.close()


def test_a_hostile_card_is_bounded_and_escaped_in_every_sink(tmp_path: Path, receiver: Receiver) -> None:
    from alerts.findings import evaluate
    from graph.records import DerivedEdge, FamilyRecord, InFamily, ModelRecord
    from graph.sqlite import SqliteStore

    g = SqliteStore(tmp_path / "graph.sqlite")
    g.ensure_schema()
    g.upsert_models([ModelRecord(key="b", id="meta/base", license="llama2"),
                     ModelRecord(key="e", id="evil/x", license="other", license_name=(EVIL + "\x1b[2J\u202e") * 5000,
                                 license_link="javascript:alert(1)//" + "y" * 50_000)], 1)
    g.upsert_families([FamilyRecord("base", "b", "base", "llama2")], 1)
    g.set_families([InFamily("b", "base", "root"), InFamily("e", "base", "matched")], 1)
    g.upsert_derived([DerivedEdge("e", "b", 0.99, 40.0)], 1)
    state = AlertStore(tmp_path / "alerts.sqlite")
    state.sync(evaluate(g))
    g.close()
    slack, out = Receiver(), tmp_path / "a.jsonl"
    subs = [hook(receiver), Subscription(name="chat", sink="slack", url=slack.url, allow_private=True),
            Subscription(name="log", sink="jsonl", path=str(out))]
    report = deliver(state, subs)
    assert {k: dict(v) for k, v in report.counts.items()} == {"hook": {"sent": 2}, "chat": {"sent": 2}, "log": {"sent": 2}}
    docs = [r["body"]["data"] for r in receiver.requests] + [json.loads(x)["data"] for x in out.read_text().splitlines()]
    for d in docs:
        text = json.dumps(d)
        assert len(text) < 6000  # 250 kB of card fields became a few hundred characters
        for field in (d["license"], *d["evidence"]["card"].values()):  # "other (<name>)": the name is cut at 200
            assert len(field) <= 210 and not any(c in field for c in "\r\n\x1b\u202e")
    for r in slack.requests:
        body = json.dumps(r["body"])
        assert "<!channel>" not in body and "<script>" not in body and "&lt;!channel&gt;" in body
    slack.close()
    state.close()


def test_a_dead_sink_opens_its_circuit_and_does_not_delay_the_others(tmp_path: Path) -> None:
    # the SMTP-server-down case of a new user: each event retried 6 times with backoff before the next,
    # 617 s for 42 events, every other subscription waiting behind it
    state = AlertStore(tmp_path / "alerts.sqlite")
    out = tmp_path / "log.jsonl"
    dead = Subscription(name="down", sink="webhook", url=f"http://127.0.0.1:{_free_port()}/hook", allow_private=True,
                        timeout=2)
    log = Subscription(name="log", sink="jsonl", path=str(out))
    deliver(state, [dead, log])  # both known before the findings
    state.sync([finding(f"m/model-{i}") for i in range(5)])
    sleeps: list[float] = []
    report = deliver(state, [dead, log], sleep=sleeps.append, base_delay=0.001)
    assert report.counts["log"] == {"sent": 5} and len(out.read_text().splitlines()) == 5
    # one batch used its 6 tries (5 backoff sleeps); the other 4 wait without using an attempt
    assert report.counts["down"] == {"retry": 1, "waiting for the next run": 4} and len(sleeps) == 5
    attempts = sorted(n for (n,) in state.db.execute("SELECT attempts FROM delivery WHERE subscription='down'"))
    assert attempts == [0, 0, 0, 0, 6]
    state.close()


def test_a_configuration_error_is_reported_once_and_every_event_waits_for_the_fix(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the default "starttls": true against a mail server without TLS: retried as transient for 10+
    # minutes, then dead-lettered event by event
    from aiosmtpd.controller import Controller

    got: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append(envelope.rcpt_tos)
            return "250 OK"

    port = _free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)  # plain SMTP: no STARTTLS offered
    ctl.start()
    try:
        base = {"name": "mail", "sink": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
                "sender": "lineage@example.org", "to": ["legal@example.org"]}
        state = AlertStore(tmp_path / "alerts.sqlite")
        state.sync([finding(f"m/model-{i}") for i in range(5)])
        sleeps: list[float] = []
        for _ in range(2):
            report = deliver(state, [Subscription.model_validate(base)], sleep=sleeps.append)
            assert report.counts["mail"] == {"waiting for a configuration fix": 5}
            assert len(report.errors) == 1 and "configuration error" in report.errors[0] and "STARTTLS" in report.errors[0]
        assert sleeps == [] and state.dead_letters() == []  # no retries, no attempts, nothing dead
        assert [r.message for r in caplog.records if "configuration error" in r.message].__len__() == 1  # logged once
        fixed = deliver(state, [Subscription.model_validate({**base, "starttls": False})])
        assert fixed.counts["mail"] == {"sent": 5} and len(got) == 5 and fixed.errors == []
        state.close()
    finally:
        ctl.stop()
