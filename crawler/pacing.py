"""Pace requests to the Hub's rate-limit windows, so that a pass within the limits never meets a 429.

The Hub sets ``RateLimit: "api";r=R;t=T`` and ``RateLimit-Policy: "fixed window";"api";q=Q;w=W`` on every
response (hub-fidelity #36): R requests are left in the current window of the ``api`` (or ``resolvers``)
bucket, and it resets in T seconds. The server counts for the client (its address or token), so the
latest answer is the budget every thread and every worker process of this client shares: no local
count can know better. :class:`Pacer` keeps, per origin and bucket, what the last response said, counts
the requests sent since, and holds a request whose bucket is spent until the window resets. It hooks into
the HTTP client every Hub request of the process goes through (``huggingface_hub``'s session: listings,
``model_info``, our ranged reads), so the crawl, the sweep and the cards job share one budget.

A 429 that still happens (another client on the same address) is retried after ``t`` (crawler.http).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_RATELIMIT = re.compile(r'"(?P<bucket>[^"]+)"\s*;\s*r=(?P<r>\d+)\s*;\s*t=(?P<t>\d+)')
#: requests kept in hand per bucket: other threads' requests already sent when the last answer came
RESERVE = 2
#: seconds added to a reset (the Hub rounds ``t`` to whole seconds)
MARGIN_S = 1.0


def bucket_of(url: str) -> str:
    """The Hub's bucket for a request: ``resolvers`` for file downloads, ``api`` for the rest."""
    path = urlsplit(url).path
    return "resolvers" if "/resolve/" in path or path.startswith("/api/resolve-cache/") else "api"


@dataclass
class _Budget:
    left: int  # what the last response said was left
    reset_at: float  # when the window resets (this clock)
    sent: int = 0  # requests sent since that response


class Pacer:
    """One process's view of the Hub's windows (see module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 reserve: int = RESERVE) -> None:
        self.clock, self.sleep, self.reserve = clock, sleep, reserve
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._lock = threading.Lock()
        #: seconds spent waiting for windows, for the crawl summary
        self.waited_s = 0.0

    def before(self, url: str) -> None:
        """Wait, if the bucket of ``url`` has nothing left in its window, until the window resets."""
        key = (urlsplit(url).netloc, bucket_of(url))
        while True:
            with self._lock:
                b = self._budgets.get(key)
                now = self.clock()
                if b is None or now >= b.reset_at:
                    if b is not None:  # a new window: the next answer says how much
                        del self._budgets[key]
                    return
                if b.left - b.sent > self.reserve:
                    b.sent += 1
                    return
                wait = b.reset_at - now
            self.waited_s += wait
            self.sleep(wait)

    def after(self, url: str, headers: Any) -> None:
        """Record what a response's ``RateLimit`` header says of its bucket."""
        m = _RATELIMIT.search(str(headers.get("RateLimit", "") or ""))
        if m is None:
            return  # the CDN, or a server that does not say: nothing to pace
        key = (urlsplit(url).netloc, m.group("bucket"))
        with self._lock:
            self._budgets[key] = _Budget(int(m.group("r")), self.clock() + int(m.group("t")) + MARGIN_S)

    # -- httpx event hooks ---------------------------------------------------------------------------
    def on_request(self, request: Any) -> None:
        self.before(str(request.url))

    def on_response(self, response: Any) -> None:
        self.after(str(response.request.url), response.headers)


#: the process's pacer (every Hub request of the process shares it)
PACER = Pacer()


def _factory() -> Any:
    """huggingface_hub's default client, with the pacer's hooks after its own."""
    from huggingface_hub.utils import _http

    client = _http.default_client_factory()
    hooks = client.event_hooks
    client.event_hooks = {"request": [*hooks.get("request", []), PACER.on_request],
                          "response": [*hooks.get("response", []), PACER.on_response]}
    return client


def install() -> None:
    """Route every request of ``huggingface_hub``'s session (and so ours) through :data:`PACER`. Cheap
    when already installed; a client factory a caller set (a test's TLS client) is left alone."""
    from huggingface_hub.utils import _http

    current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if current is _factory or current not in (None, _http.default_client_factory):
        return
    _http.set_client_factory(_factory)
