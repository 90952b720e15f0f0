"""HTTP for the crawler: one retry policy, and byte sources that read tensors by ranged requests.

The ``huggingface_hub`` client retries its listings, but not ``model_info`` nor ranged reads (see
``hub-crawling.md`` §1.5), so :func:`with_retries` wraps those. :class:`HttpFileSource` is the
checkpoint reader's byte source over HTTP: it asks ``/resolve`` once per file without following the
redirect, keeps the CDN ``Location``, and sends every range straight there (one resolver hit per file).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError as HfGatedRepoError
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers, get_session  # type: ignore[attr-defined]  # public (in __all__), stubs lack re-export

from crawler.errors import (
    EndpointError,
    GatedRepoError,
    HubAuthError,
    HubRequestError,
    HubUnreachableError,
    RangeNotHonouredError,
    RepoNotFoundError,
)
from fingerprint.io.source import MAX_SMALL_FILE_BYTES, CountingSource, check_range, safe_relative_name

LOG = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_HOPS = 5  # same-origin hops before the CDN (the Hub uses one: resolve-cache, or a rename)
_RATELIMIT_T = re.compile(r";\s*t=(\d+)")


_FOR_URL = re.compile(r" for url '[^']*'")


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` without a trailing slash, if it is an ``http(s)://host[:port][/path]`` URL.

    Raises:
        EndpointError: another scheme, no host, a query or a fragment.
    """
    try:
        u = urlsplit(endpoint.strip())
        u.port  # noqa: B018 (parses the port: a bad one raises ValueError)
    except ValueError as e:
        raise EndpointError(endpoint, str(e)) from None
    if u.scheme not in ("http", "https"):
        raise EndpointError(endpoint, "use an http:// or https:// URL")
    if not u.hostname:
        raise EndpointError(endpoint, "no host name")
    if u.query or u.fragment:
        raise EndpointError(endpoint, "no query or fragment")
    return endpoint.strip().rstrip("/")


def short(e: BaseException) -> str:
    """An error's first line without the long ``for url '...'`` tail httpx adds."""
    return _FOR_URL.sub("", str(e).splitlines()[0] if str(e) else type(e).__name__)[:300]


def pin_endpoint(endpoint: str) -> None:
    """Point ``huggingface_hub``'s global endpoint at ours.

    ``HfApi(endpoint=...)`` covers the API calls, but the client also builds some URLs from the
    import-time ``HF_ENDPOINT`` (its once-a-day agent-registry fetch among them): without this, a crawl
    of a loopback stand-in would still contact huggingface.co.
    """
    constants.ENDPOINT = endpoint.rstrip("/")
    constants.HUGGINGFACE_CO_URL_TEMPLATE = constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"


def retry_delay(status: int | None, headers: Any, attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based).

    On 429: the ``RateLimit`` header's ``t`` (seconds to reset) plus ``base`` (the reset is rounded to
    whole seconds), else ``Retry-After``; otherwise capped exponential backoff ``min(cap, base·2^attempt)``
    with ±25% jitter.
    """
    if status == 429 and headers is not None:
        m = _RATELIMIT_T.search(headers.get("RateLimit", "") or "")
        if m:
            return min(cap, int(m.group(1)) + base)
        ra = str(headers.get("Retry-After") or "")
        if ra and ra.strip().isdigit():
            return min(cap, float(ra))
    return float(min(cap, base * 2**attempt) * random.uniform(0.75, 1.25))


def with_retries(call: Callable[[], T], what: str, attempts: int = 6, sleep: Callable[[float], None] | None = None,
                 base: float = 0.5, repo_id: str | None = None) -> T:
    """Run ``call``, retrying on 408/429/5xx, timeouts and dropped connections.

    Raises:
        HubAuthError: a 401 to a request that carried a token (the token is refused).
        RepoNotFoundError: a 401 to an anonymous request about ``repo_id`` that the client did not map
            itself (it maps only on https:// endpoints; the Hub's anonymous miss has no ``X-Error-Code``).
        HubRequestError: after ``attempts`` failures, or at once for other HTTP errors.
    """
    for attempt in range(attempts):
        status: int | None = None
        headers: Any = None
        try:
            return call()
        except (RepositoryNotFoundError, HfGatedRepoError):
            raise  # not transient; the caller maps these
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            headers = e.response.headers if e.response is not None else None
            if status == 401 and e.response is not None:
                raise unauthorized(e.response, repo_id or what) from e
            if status not in RETRY_STATUSES:
                raise HubRequestError(what, status, short(e)) from e
            err: Exception = e
        except HubRequestError as e:
            if (e.status is not None and e.status not in RETRY_STATUSES) or isinstance(e, RangeNotHonouredError):
                raise
            status, headers, err = e.status, getattr(e, "headers", None), e
        except (httpx2.TransportError, httpx2.TimeoutException) as e:
            err = e
        if attempt == attempts - 1:
            if status is None and not isinstance(err, HubRequestError):
                raise HubUnreachableError(what, None, f"cannot reach the Hub (gave up after {attempts} attempts): "
                                                      f"{short(err)}") from err
            raise HubRequestError(what, status, f"gave up after {attempts} attempts: {short(err)}") from err
        delay = retry_delay(status, headers, attempt, base)
        LOG.info("retrying %s in %.1fs (%s)", what, delay, status or type(err).__name__)
        (sleep or time.sleep)(delay)  # looked up per call, not bound at import
    raise AssertionError("unreachable")


class _StatusError(HubRequestError):
    """A retryable HTTP status seen on a raw request; keeps the headers for :func:`retry_delay`."""

    def __init__(self, url: str, status: int, headers: Any) -> None:
        super().__init__(url, status, "server error")
        self.headers = headers


def unauthorized(r: httpx2.Response, repo_id: str) -> HubAuthError | RepoNotFoundError:
    """What a 401 without ``X-Error-Code`` means: with a token, the token was refused (the Hub says
    "Invalid credentials in Authorization header" on every request); anonymous, the repo is missing or
    private (the Hub will not say which)."""
    if r.request is not None and r.request.headers.get("Authorization"):
        return HubAuthError(str(r.request.url)[:300], r.headers.get("X-Error-Message") or "HTTP 401")
    return RepoNotFoundError(repo_id)


def _check(r: httpx2.Response, url: str, repo_id: str, token: str | None) -> None:
    """Map a raw response to our errors (the Hub's ``X-Error-Code`` first, then the status)."""
    code = r.headers.get("X-Error-Code", "")
    if code == "GatedRepo":
        raise GatedRepoError(repo_id, with_token=bool(token))
    if code == "RepoNotFound":
        raise RepoNotFoundError(repo_id)
    if r.status_code == 401:
        raise unauthorized(r, repo_id)
    if r.status_code in RETRY_STATUSES:
        raise _StatusError(url, r.status_code, r.headers)
    if r.status_code >= 400:
        raise HubRequestError(url, r.status_code, r.headers.get("X-Error-Message") or code or "request failed")


class HttpFileSource(CountingSource):
    """A :class:`fingerprint.io.source.ByteSource` over one Hub file, read by ``Range`` requests.

    Every response must be 206 with ``Content-Range: bytes a-b/size`` for exactly the bytes asked for;
    anything else raises :class:`RangeNotHonouredError` rather than reading a whole file. ``headers``
    (the token) go with every request: they are only given for a URL on the Hub's own origin. A 403
    without ``X-Error-Code`` from another origin is a signed CDN URL that expired (about an hour on the
    Hub): ``relocate`` asks ``/resolve`` for a fresh one, and the range is asked again there.
    """

    #: Over HTTP a round trip costs more than bytes: the first read takes 100 kB, which holds 97% of
    #: safetensors headers (huggingface_hub's own choice), so the header usually costs one request.
    header_prefetch = 100_000
    #: Scattered rows (a fingerprint's anchor rows) are read through gaps up to 1 MiB: a request's round
    #: trip to a CDN (tens of ms) costs as much as a megabyte at its bandwidth, and a 128k-token
    #: vocabulary's 4,000 anchors would otherwise be ~3,000 requests per model.
    gap_bytes = 1 << 20

    def __init__(self, client: httpx2.Client, url: str, size: int, repo_id: str, name: str,
                 token: str | None = None, timeout: float = 30.0, attempts: int = 6, base: float = 0.5,
                 headers: dict[str, str] | None = None, relocate: Callable[[], str] | None = None) -> None:
        super().__init__(name, size)
        self.client, self.url = client, url
        self.repo_id, self.token = repo_id, token
        self.timeout, self.attempts, self.base = timeout, attempts, base
        self.headers, self.relocate = headers or {}, relocate
        self.requests = 0
        self.relocations = 0

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.name, self._size, offset, length)
        if length == 0:
            return b""
        return self._count(with_retries(lambda: self._get(offset, length), f"{self.repo_id}/{self.name}",
                                        self.attempts, base=self.base))

    def _get(self, offset: int, length: int) -> bytes:
        end = offset + length - 1
        headers = {**self.headers, "Range": f"bytes={offset}-{end}", "Accept-Encoding": "identity"}
        with self._lock:
            self.requests += 1
        r = self.client.get(self.url, headers=headers, timeout=self.timeout, follow_redirects=False)
        if r.status_code == 403 and "X-Error-Code" not in r.headers and self.relocate is not None:
            with self._lock:
                self.relocations += 1
                self.requests += 1
            self.url = self.relocate()  # an expired signed URL: one fresh one, then that answer stands
            r = self.client.get(self.url, headers=headers, timeout=self.timeout, follow_redirects=False)
        _check(r, self.url, self.repo_id, self.token)
        want = f"bytes {offset}-{end}/{self._size}"
        if r.status_code != 206 or r.headers.get("Content-Range") != want:
            raise RangeNotHonouredError(self.url, r.status_code,
                                        f"expected 206 with Content-Range {want!r}, got {r.headers.get('Content-Range')!r}")
        if len(r.content) != length:  # a connection cut mid-body: retry the range
            raise _StatusError(self.url, 503, r.headers)
        return r.content


class HttpRepo:
    """A :class:`fingerprint.io.source.Repo` over one Hub repo at a fixed commit.

    Small files (config, tokenizer, index) are read whole through ``/resolve``; weight files get an
    :class:`HttpFileSource` on the redirect target. ``sizes`` (from ``model_info(files_metadata=True)``)
    bounds what we agree to read before any request is made.
    """

    def __init__(self, endpoint: str, repo_id: str, revision: str, sizes: dict[str, int],
                 token: str | None = None, timeout: float = 30.0, attempts: int = 6, base: float = 0.5) -> None:
        self.endpoint, self.repo_id, self.revision = endpoint.rstrip("/"), repo_id, revision
        self.name = repo_id
        self.sizes = {safe_relative_name(k, repo_id): v for k, v in sizes.items()}
        self.token, self.timeout, self.attempts, self.base = token, timeout, attempts, base
        self.client = get_session()
        self._sources: dict[str, HttpFileSource] = {}
        self._small: dict[str, bytes] = {}  # the commit is fixed, so a small file is fetched once
        self.small_bytes_read = 0
        self.resolver_requests = 0

    def url(self, filename: str) -> str:
        return f"{self.endpoint}/{self.repo_id}/resolve/{quote(self.revision, safe='')}/{quote(filename)}"

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.endpoint)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def _headers(self, url: str) -> dict[str, str]:
        # the token goes to the Hub origin only, never to the CDN (as huggingface_hub does cross-origin)
        return build_hf_headers(token=self.token) if self.token and self._same_origin(url) else {}

    def exists(self, filename: str) -> bool:
        return safe_relative_name(filename, self.repo_id) in self.sizes

    def files(self) -> list[str]:
        return sorted(self.sizes)

    def read_bytes(self, filename: str, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
        size = self.sizes.get(safe_relative_name(filename, self.repo_id))
        if size is None:
            raise HubRequestError(self.url(filename), 404, f"{filename} is not in {self.repo_id}")
        if filename in self._small:
            return self._small[filename]
        if size > max_bytes:
            raise HubRequestError(self.url(filename), None, f"file of {size} bytes exceeds the {max_bytes}-byte limit")

        def get() -> bytes:
            url = self.url(filename)
            self.resolver_requests += 1
            r = self.client.get(url, headers=self._headers(url), timeout=self.timeout, follow_redirects=True)
            _check(r, url, self.repo_id, self.token)
            if len(r.content) != size:
                raise _StatusError(url, 503, r.headers)
            return r.content

        data = with_retries(get, f"{self.repo_id}/{filename}", self.attempts, base=self.base)
        self.small_bytes_read += len(data)
        self._small[filename] = data
        return data

    def source(self, filename: str) -> HttpFileSource:
        if filename not in self._sources:
            size = self.sizes.get(safe_relative_name(filename, self.repo_id))
            if size is None:
                raise HubRequestError(self.url(filename), 404, f"{filename} is not in {self.repo_id}")
            def locate() -> str:
                return with_retries(lambda: self._locate(filename), f"{self.repo_id}/{filename}", self.attempts,
                                    base=self.base)

            location = locate()
            self._sources[filename] = HttpFileSource(self.client, location, size, self.repo_id, filename,
                                                     self.token, self.timeout, self.attempts, self.base,
                                                     self._headers(location), locate)
        return self._sources[filename]

    def _locate(self, filename: str) -> str:
        """The URL every range of ``filename`` goes to: ``HEAD /resolve``, following redirects on the
        Hub's own origin (a renamed repo, the resolve cache of a small file) with the token, up to the
        first one to another origin (the CDN's signed URL, which gets no token), as huggingface_hub
        does."""
        url = self.url(filename)
        for _ in range(MAX_HOPS):
            self.resolver_requests += 1
            r = self.client.head(url, headers=self._headers(url), timeout=self.timeout, follow_redirects=False)
            if r.status_code not in REDIRECTS:
                _check(r, url, self.repo_id, self.token)
                return url  # served by the Hub origin itself
            loc = r.headers.get("Location", "")
            target = urljoin(url, loc)
            if not loc or urlsplit(target).scheme not in ("http", "https"):
                raise HubRequestError(url, r.status_code, f"redirect to an unusable Location {loc[:100]!r}")
            if not self._same_origin(target):
                return target
            url = target
        raise HubRequestError(url, None, f"more than {MAX_HOPS} redirects on the Hub's origin")

    @property
    def weight_bytes_read(self) -> int:
        return sum(s.bytes_read for s in self._sources.values())

    @property
    def range_requests(self) -> int:
        return sum(s.requests for s in self._sources.values())
