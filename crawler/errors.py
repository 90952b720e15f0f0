"""One error hierarchy for the crawler (``CrawlerError`` at the root).

Errors carry fields (repo id, URL, status) and subclass the built-in they resemble.
"""

from __future__ import annotations


class CrawlerError(Exception):
    """Root of every error the crawler raises on purpose."""


class HubRequestError(CrawlerError, OSError):
    """A Hub request failed after the retries it was allowed.

    Attributes:
        url: what was requested.
        status: the last HTTP status (None for a network error or timeout).
    """

    def __init__(self, url: str, status: int | None, reason: str) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        super().__init__(f"{url}: {reason}" + (f" (HTTP {status})" if status else ""))


class HubStopError(HubRequestError):
    """A failure every later request to the same endpoint would share: callers stop the pass instead of
    trying each item (and recording none of them as settled)."""


class HubUnreachableError(HubStopError):
    """No HTTP answer at all after the retries (connection refused, DNS failure, timeouts)."""


class HubAuthError(HubStopError, PermissionError):
    """The Hub refused the token itself (401 with a token: invalid, expired or revoked). Nothing is
    "gone": the same request with a valid token would work, so the model stays queued."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, 401, f"the Hub refused the token ({message[:120]}): set HF_TOKEN to a valid "
                                   "token, or unset it to crawl anonymously")


class EndpointError(CrawlerError, ValueError):
    """The endpoint is not an ``http(s)://host[:port]`` URL."""

    def __init__(self, endpoint: str, why: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"bad Hub endpoint {endpoint[:200]!r}: {why}")


class RangeNotHonouredError(HubRequestError):
    """The server answered a ranged read without 206 and the exact ``Content-Range``.

    We never accept a 200 here: it would mean reading a multi-GB body to get a few kilobytes.
    """


class GatedRepoError(CrawlerError, PermissionError):
    """The repo's files need an accepted licence (``gated``); metadata is still readable."""

    def __init__(self, repo_id: str, with_token: bool) -> None:
        self.repo_id = repo_id
        hint = ("the token's account has not accepted the terms: accept them on the model page"
                if with_token else "set HF_TOKEN for an account that accepted the terms on the model page")
        super().__init__(f"{repo_id} is gated: {hint}")


class RepoNotFoundError(CrawlerError, LookupError):
    """The repo does not exist, is private, or was deleted."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        super().__init__(f"{repo_id}: repository not found (missing, private or deleted)")


class CrawlStateError(CrawlerError):
    """The persisted crawl state cannot be read or written."""


class PayloadError(CrawlerError, ValueError):
    """A Hub JSON record that cannot be a model record (wrong types, no id/_id/sha, unsafe names)."""

    def __init__(self, what: str, why: str) -> None:
        self.what = what
        super().__init__(f"invalid Hub record {what[:100]!r}: {why[:300]}")
