"""Who is told what: subscriptions from ``$LINEAGE_HOME/alerts.json``, each a sink with filters.

    {"subscriptions": [
      {"name": "sec", "sink": "webhook", "url": "https://hooks.example/lineage", "secret": "whsec_…",
       "filters": {"kinds": ["license_conflict"], "min_severity": "medium", "families": ["llama-2"]}},
      {"name": "chat", "sink": "slack", "url": "https://hooks.slack.com/services/…", "digest_seconds": 3600},
      {"name": "mail", "sink": "email", "smtp_host": "smtp.example", "smtp_port": 587, "starttls": true,
       "username": "lineage", "password": "…", "sender": "lineage@example", "to": ["legal@example"]},
      {"name": "log", "sink": "jsonl", "path": "/var/log/lineage-alerts.jsonl"}]}

A webhook or Slack URL that points at a private, loopback or link-local address is refused unless the
subscription sets ``"allow_private": true`` (a crawler's alerts must not become a way into its network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.errors import SubscriptionError
from alerts.findings import KINDS, at_least
from alerts.rules import Severity

SinkName = Literal["webhook", "slack", "email", "jsonl"]


class Filters(BaseModel):
    """What a subscription wants: empty lists mean everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    families: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    min_severity: Severity = "low"
    events: tuple[str, ...] = ("opened", "changed", "resolved", "test")

    def accepts(self, event_type: str, finding: dict[str, Any]) -> bool:
        if event_type not in self.events:
            return False
        if event_type == "test":
            return True
        checks = ((self.families, finding.get("family")), (self.organizations, finding.get("organization")),
                  (self.licenses, finding.get("license")), (self.kinds, finding.get("kind")))
        return all(not want or have in want for want, have in checks) and at_least(
            str(finding.get("severity", "info")), self.min_severity)


class Subscription(BaseModel):
    """One sink and its filters (fields a sink does not use are ignored by it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]{0,63}$")
    sink: SinkName
    filters: Filters = Filters()
    digest_seconds: float = Field(default=0.0, ge=0, le=7 * 86400)
    url: str | None = None
    secret: str | None = None
    allow_private: bool = False
    timeout: float = Field(default=10.0, gt=0, le=120)
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    ca_file: str | None = None  # a CA bundle to trust for STARTTLS (a private mail relay)
    username: str | None = None
    password: str | None = None
    sender: str | None = None
    to: tuple[str, ...] = ()
    path: str | None = None

    def model_post_init(self, _: Any) -> None:
        need = {"webhook": ("url",), "slack": ("url",), "email": ("smtp_host", "sender", "to"), "jsonl": ("path",)}
        missing = [f for f in need[self.sink] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.sink} subscription needs {', '.join(missing)}")
        unknown = set(self.filters.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown finding kinds {sorted(unknown)}; kinds are {', '.join(KINDS)}")


def load(path: Path) -> list[Subscription]:
    """The subscriptions in ``path`` (none when the file does not exist).

    Raises:
        SubscriptionError: unreadable JSON, an invalid entry, or two entries with one name.
    """
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text("utf-8"))
        subs = [Subscription.model_validate(s) for s in doc.get("subscriptions", [])]
    except (OSError, ValueError, AttributeError) as e:
        first = e.errors()[0] if isinstance(e, ValidationError) else None
        why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(e).splitlines()[0]
        raise SubscriptionError(f"{path}: {why}") from e
    names = [s.name for s in subs]
    if len(set(names)) != len(names):
        raise SubscriptionError(f"{path}: subscription names must be unique")
    return subs
