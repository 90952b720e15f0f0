"""Where alerts go: a generic webhook, Slack, e-mail over SMTP, a JSONL file. ``SINKS[name](sub, events)``.

Every sink sends one message for a list of events (one event, or a digest) and raises
:class:`~alerts.errors.DeliveryError` with ``permanent`` set when retrying cannot help. Card fields
reach here already bounded and stripped of control characters (:func:`alerts.licenses.clean`); each
sink escapes them for its own format: JSON by the encoder, Slack mrkdwn's ``& < >``, e-mail as
plain text with header values on one line.

Webhook signatures follow Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256(secret,
"<webhook-id>.<webhook-timestamp>.<body>")>``; a ``whsec_``-prefixed secret is base64 after the prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import smtplib
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alerts.errors import DeliveryError
from alerts.outbox import Event
from alerts.subscriptions import Subscription

#: answers that say the endpoint or its credentials are wrong, not this event
CONFIG_STATUSES = frozenset({401, 403, 404, 410})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BODY = 256 * 1024  # a digest is cut to fit (events beyond it wait for the next message)
SLACK_TEXT = 2900  # Slack's section text limit is 3000 characters


def message_id(events: list[Event]) -> str:
    """The idempotency key of one message: the event's id, or a digest of the ids it carries."""
    if len(events) == 1:
        return events[0].id
    return "digest-" + hashlib.sha256(",".join(e.id for e in events).encode()).hexdigest()[:32]


def payload(events: list[Event]) -> dict[str, Any]:
    """The JSON document of a message (one envelope, or a digest of envelopes)."""
    if len(events) == 1:
        return events[0].envelope()
    return {"id": message_id(events), "type": "lineage.digest", "time_ms": events[-1].created_ms,
            "events": [e.envelope() for e in events]}


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _refuse_private(url: str, allow: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"{url[:200]!r}: only http(s) URLs are delivered to", permanent=True, config=True)
    if allow:
        return
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        addrs = ["127.0.0.1"]
    else:
        try:
            addrs = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addrs = [str(a[4][0]) for a in socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)]
            except OSError as e:
                raise DeliveryError(f"{host}: cannot resolve ({e})", permanent=False) from e
    for a in addrs:
        ip = ipaddress.ip_address(a)
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            raise DeliveryError(f"{host} is a private or loopback address ({a}); set allow_private on the "
                                "subscription to deliver there", permanent=True, config=True)


def _post(sub: Subscription, body: bytes, headers: dict[str, str]) -> None:
    assert sub.url is not None
    _refuse_private(sub.url, sub.allow_private)
    req = urllib.request.Request(sub.url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "model-lineage", **headers})
    try:
        with urllib.request.urlopen(req, timeout=sub.timeout) as r:
            r.read(1024)
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"{urlsplit(sub.url).netloc}: HTTP {e.code}", permanent=e.code not in RETRY_STATUSES,
                            config=e.code in CONFIG_STATUSES) from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise DeliveryError(f"{urlsplit(sub.url).netloc}: {reason}", permanent=False,
                            config=isinstance(reason, ssl.SSLError)) from e  # a certificate that does not verify


def send_webhook(sub: Subscription, events: list[Event]) -> None:
    body = json.dumps(payload(events), sort_keys=True, ensure_ascii=True).encode()
    msg_id, ts = message_id(events), int(time.time())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts)}
    if sub.secret:
        headers["webhook-signature"] = sign(sub.secret, msg_id, ts, body)
    _post(sub, body, headers)


def mrkdwn(text: object) -> str:
    """Text safe inside Slack mrkdwn: ``&``, ``<``, ``>`` escaped (no links, mentions or channel pings)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary(e: Event) -> str:
    """One plain line for an event (sinks escape it for their format)."""
    f = e.finding
    if e.type == "test":
        return "test alert from model-lineage: this subscription works"
    verb = {"opened": "suspected", "changed": "changed", "resolved": "resolved"}[e.type]
    return (f"[{f.get('severity')}] {verb} {f.get('kind')}: {f.get('model_id')} "
            f"(base {f.get('base_id') or '?'}, licence {f.get('license')}) — {f.get('reason')}")


def send_slack(sub: Subscription, events: list[Event]) -> None:
    lines = [summary(e) for e in events]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": (
        f"model-lineage: {len(events)} alert(s)")[:150]}}]
    for e, line in list(zip(events, lines))[:45]:
        f = e.finding
        text = mrkdwn(line)[:SLACK_TEXT]
        if f.get("model_id") and e.type != "test":
            text = f"*{mrkdwn(f.get('kind'))}* · {text}"[:SLACK_TEXT]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if len(events) > 45:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {len(events) - 45} more"}]})
    doc = {"text": mrkdwn(lines[0] if len(lines) == 1 else f"{len(lines)} model-lineage alerts")[:SLACK_TEXT],
           "blocks": blocks}
    _post(sub, json.dumps(doc, ensure_ascii=True).encode(), {"webhook-id": message_id(events)})


def _header(text: str) -> str:
    return " ".join(text.split())[:200]


def send_email(sub: Subscription, events: list[Event]) -> None:
    assert sub.smtp_host and sub.sender
    msg = EmailMessage()
    msg["From"] = _header(sub.sender)
    msg["To"] = ", ".join(_header(t) for t in sub.to)
    msg["Subject"] = _header(summary(events[0]) if len(events) == 1 else f"model-lineage: {len(events)} alerts")
    msg["Message-ID"] = f"<{message_id(events)}@model-lineage>"
    body = [summary(e) for e in events] + ["", "Evidence (JSON):", json.dumps(payload(events), indent=1, sort_keys=True)]
    msg.set_content("\n".join(body)[:MAX_BODY])
    try:
        with smtplib.SMTP(sub.smtp_host, sub.smtp_port, timeout=sub.timeout) as s:
            if sub.starttls:
                s.starttls(context=ssl.create_default_context(cafile=sub.ca_file) if sub.ca_file else None)
            if sub.username:
                s.login(sub.username, sub.password or "")
            s.send_message(msg)
    except smtplib.SMTPAuthenticationError as e:
        raise DeliveryError(f"{sub.smtp_host}: authentication failed ({e.smtp_code})", permanent=True, config=True) from e
    except smtplib.SMTPNotSupportedError as e:  # STARTTLS (or AUTH) asked of a server that offers none
        raise DeliveryError(f"{sub.smtp_host}: {e} (check starttls / username in alerts.json)", permanent=True,
                            config=True) from e
    except ssl.SSLError as e:
        raise DeliveryError(f"{sub.smtp_host}: TLS failed ({e}; check ca_file / starttls)", permanent=True,
                            config=True) from e
    except smtplib.SMTPResponseException as e:
        raise DeliveryError(f"{sub.smtp_host}: SMTP {e.smtp_code}", permanent=500 <= e.smtp_code < 600) from e
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(f"{sub.smtp_host}: {e}", permanent=False) from e


def send_jsonl(sub: Subscription, events: list[Event]) -> None:
    assert sub.path
    lines = "".join(json.dumps(e.envelope(), sort_keys=True, ensure_ascii=True) + "\n" for e in events)
    if sub.path == "-":
        sys.stdout.write(lines)
        sys.stdout.flush()
        return
    try:
        Path(sub.path).parent.mkdir(parents=True, exist_ok=True)
        with open(sub.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
    except OSError as e:
        raise DeliveryError(f"{sub.path}: {e}", permanent=False) from e


SINKS: dict[str, Callable[[Subscription, list[Event]], None]] = {
    "webhook": send_webhook, "slack": send_slack, "email": send_email, "jsonl": send_jsonl}
