"""The stand-in's state and rules: repos and their commits, listings, ``expand``, tokens, signed CDN
URLs, rate-limit windows and injected faults. :mod:`hubsim.server` puts HTTP in front of it.

Each rule follows ``hub-fidelity.md`` (evidence from huggingface_hub's source and tests, hub-docs and
captures of real traffic); the numbers there are cited next to the code that follows them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hubsim.repos import SimFile, SimRepo

PAGE_DEFAULT = 100  # the Hub's own default is not established by any evidence (hub-fidelity #6)
PAGE_MAX = 1000
URL_TTL_S = 3600.0  # signed CDN URLs last about an hour (#24)
RATE_WINDOW_S = 300  # "fixed window";…;w=300 (#36)
#: requests per window, per bucket, for an anonymous client and for a (free) account: the Hub's published
#: limits (hub-docs "Rate limits": 500 / 3,000 anonymous, 1,000 / 5,000 with a free account's token)
RATE_QUOTA = {"anonymous": {"api": 500, "resolvers": 3000}, "account": {"api": 1000, "resolvers": 5000}}

#: Every ``expand`` value huggingface_hub knows for models (``ExpandModelProperty_T``); the Hub answers
#: 400 to anything else (#10).
EXPAND_INFO = frozenset({
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
    "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping", "lastModified",
    "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private", "resourceGroup",
    "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage",
    "widgetData"})
#: Listings refuse the values that cost a lookup per repo (#11, huggingface_hub PR 3182).
EXPAND_LIST = EXPAND_INFO - {"baseModels", "childrenModelCount", "usedStorage"}
#: The keys of a default ``model_info`` body, as in the real recorded payload (#17): no ``baseModels``,
#: no ``childrenModelCount``, no ``downloadsAllTime`` or ``trendingScore`` (those are expand-only).
INFO_DEFAULT = ("_id", "id", "modelId", "author", "sha", "lastModified", "private", "gated", "disabled",
                "downloads", "likes", "tags", "pipeline_tag", "library_name", "cardData", "config", "siblings",
                "spaces", "createdAt", "safetensors", "usedStorage")
#: A bare listing item (#8).
LIST_DEFAULT = ("_id", "id", "modelId", "likes", "trendingScore", "downloads", "private", "tags", "pipeline_tag",
                "library_name", "createdAt")
SORTS = {"createdAt": "created_at", "created_at": "created_at", "lastModified": "last_modified",
         "last_modified": "last_modified", "trendingScore": "trending", "trending_score": "trending",
         "downloads": "downloads", "likes": "likes"}
_HEX = re.compile(r"^[0-9a-f]{7,40}$")
_PR = re.compile(r"^refs/pr/([1-9]\d{0,5})$")


class ExpandError(ValueError):
    """An ``expand`` value the endpoint does not accept (the server answers 400)."""


@dataclass
class Fault:
    """An injected failure: the next ``count`` matching requests fail.

    ``kind`` is ``"429"`` (rate limited, ``RateLimit`` ``t=retry_after``), ``"status"`` (``status``
    code), ``"truncate"`` (headers for the whole body, then half of it, then close), ``"timeout"``
    (no answer for ``hang_s`` seconds, then close) or ``"reset"`` (close the connection unanswered).
    ``where`` is ``"api"`` (``/api/*``), ``"resolve"`` or ``"cdn"``; ``after`` lets that many matching
    requests through first (a failure *mid*-download).
    """

    kind: str
    where: str
    count: int
    status: int = 503
    retry_after: int = 1
    after: int = 0
    hang_s: float = 1.0


@dataclass(frozen=True)
class Chaos:
    """Random faults on every origin: each request fails with probability ``rate``, as one of ``kinds``
    picked uniformly (a seeded generator, so a run can be replayed)."""

    rate: float = 0.2
    seed: int = 0
    kinds: tuple[str, ...] = ("429", "5xx", "timeout", "reset", "truncate")
    hang_s: float = 0.5


class HubState:
    """Repos, counters, faults and the rules the HTTP layer applies (see :class:`hubsim.HubSim`)."""

    def __init__(self, accepted_tokens: frozenset[str] = frozenset(), tokens: frozenset[str] | None = None,
                 page_size: int = PAGE_DEFAULT, delay_s: float = 0.0, url_ttl_s: float = URL_TTL_S) -> None:
        self.repos: dict[str, SimRepo] = {}
        self.moved: dict[str, str] = {}  # old id -> new id, after a rename (the Hub answers a 307)
        #: tokens whose account "accepted the terms" of every gated repo (the operator's, in the demo)
        self.accepted_tokens = accepted_tokens
        #: the valid tokens (``accepted_tokens`` always are); None: any token names a real account
        self.tokens = tokens
        self.revoked: set[str] = set()
        self.page_size = page_size  # listing page size when the client sends no ``limit``
        self.delay_s = delay_s  # added to every CDN response (tests that must interrupt a crawl mid-way)
        self.url_ttl_s = url_ttl_s
        self.clock_skew_s = 0.0  # :meth:`advance` moves the stand-in's clock (URL expiry, rate windows)
        self.bytes_served: Counter[tuple[str, str]] = Counter()  # (repo_id, filename) -> bytes
        self.requests: Counter[str] = Counter()  # "api" / "resolve" / "cdn" / "429" / "fault" / kinds
        self.log: list[tuple[str, str, int]] = []  # (method, path, status), for assertions
        self.faults: list[Fault] = []
        self.chaos: Chaos | None = None
        self._rng = random.Random(0)
        self._secret = random.Random().randbytes(16)
        self._window: tuple[int, Counter[tuple[str, str]]] = (0, Counter())
        #: answer 429 past the quota (off by default: the demo's few hundred requests in seconds would
        #: otherwise wait for windows); ``quota`` and ``window_s`` may shrink them for a test
        self.enforce_limits = False
        self.quota: dict[str, dict[str, int]] = {k: dict(v) for k, v in RATE_QUOTA.items()}
        self.window_s = RATE_WINDOW_S
        self.lock = threading.RLock()

    # -- repos and commits -----------------------------------------------------------------------
    def add(self, repo: SimRepo) -> SimRepo:
        with self.lock:
            self.repos[repo.repo_id] = repo
        return repo

    def commit(self, repo_id: str, files: dict[str, SimFile], when: datetime) -> str:
        """A new commit on ``main``: add or replace files and move ``lastModified``; the old commit stays
        readable by its sha, as on the Hub (#22). Returns the new sha."""
        with self.lock:
            r = self.repos[repo_id]
            r.history[r.sha] = dict(r.files)
            r.files.update(files)
            r.last_modified = when
            return r.sha

    def open_pr(self, repo_id: str, files: dict[str, SimFile]) -> str:
        """A pull request: ``main``'s files with ``files`` on top, at ``refs/pr/N`` (returned); ``main``
        does not move."""
        with self.lock:
            r = self.repos[repo_id]
            r.prs.append({**r.files, **files})
            return f"refs/pr/{len(r.prs)}"

    def rename(self, old: str, new: str) -> None:
        """Move a repo (same ``_id`` and commits); the old id answers with a 307 to the new one (#23)."""
        with self.lock:
            r = self.repos.pop(old)
            r.repo_id = new
            self.repos[new] = r
            self.moved[old] = new

    def legacy(self, name: str, repo_id: str) -> None:
        """Serve ``repo_id`` under its legacy single-segment id too (``gpt2`` for
        ``openai-community/gpt2``): the Hub answers the old id with a relative 307 to the canonical one."""
        with self.lock:
            self.moved[name] = repo_id

    def publish(self, repo_id: str) -> None:
        """Flip a private repo public; its dates stay as they were (the sweep must find it)."""
        with self.lock:
            self.repos[repo_id].private = False

    def canonical(self, repo_id: str) -> str | None:
        """Where a repo id that is not served as spelled lives now: a renamed or case-mismatched id."""
        with self.lock:
            if repo_id in self.moved:
                return self.moved[repo_id]
            low = repo_id.lower()
            return next((k for k in self.repos if k.lower() == low and k != repo_id), None)

    @staticmethod
    def at(r: SimRepo, rev: str | None) -> tuple[SimRepo, str] | None:
        """``r`` at revision ``rev`` and that commit's full sha: ``main``, any commit's full or short
        (≥ 7 hex, unambiguous) sha (a pull request's head included), or ``refs/pr/N`` (#22); None when
        nothing matches."""
        if rev in (None, "main"):
            return r, r.sha
        assert rev is not None
        m = _PR.match(rev)
        if m:
            n = int(m.group(1))
            if n > len(r.prs):
                return None
            view = replace(r, files=r.prs[n - 1])
            return view, view.sha
        if not _HEX.match(rev):
            return None
        # a pull request's head is an ordinary commit on the Hub: readable by its sha too
        heads = {replace(r, files=files).sha: files for files in r.prs}
        commits = {r.sha: r.files, **r.history, **heads}
        hits = [s for s in commits if s.startswith(rev)]
        if len(hits) != 1:
            return None
        sha = hits[0]
        return (r if sha == r.sha else replace(r, files=commits[sha])), sha

    # -- time, tokens, URLs ----------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_skew_s

    def advance(self, seconds: float) -> None:
        """Move the stand-in's clock forward (signed URLs expire, rate windows reset)."""
        self.clock_skew_s += seconds

    def revoke(self, token: str) -> None:
        """From now on ``token`` is invalid on every request (an expired or deleted token)."""
        with self.lock:
            self.revoked.add(token)

    def token_state(self, token: str | None) -> str:
        """``"anonymous"``, ``"valid"`` or ``"invalid"`` for the bearer token of a request."""
        if not token:
            return "anonymous"
        with self.lock:
            if token in self.revoked:
                return "invalid"
            ok = self.tokens is None or token in self.tokens or token in self.accepted_tokens
        return "valid" if ok else "invalid"

    def sign(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}|{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def cdn_query(self, path: str) -> str:
        """``Expires`` and ``Signature`` for a CDN URL, valid for ``url_ttl_s`` from now."""
        expires = int(self.now() + self.url_ttl_s)
        return f"Expires={expires}&Signature={self.sign(path, expires)}"

    def check_signature(self, path: str, expires: str, signature: str) -> str | None:
        """None if the signed URL is valid now, else why not (the CDN answers 403)."""
        if not expires.isdigit() or not hmac.compare_digest(self.sign(path, int(expires)), signature):
            return "signature does not match"
        return "Request has expired" if int(expires) < self.now() else None

    def rate_headers(self, bucket: str, token: str | None = None) -> tuple[dict[str, str], bool]:
        """Count one more request in ``bucket`` for ``token``'s client (anonymous or an account, each
        with its own window): the ``RateLimit``/``RateLimit-Policy`` headers the Hub sets on every
        response (#36; ``r`` is what is left, ``t`` the seconds until the window resets), and whether
        the request is over the quota (answered 429 when :attr:`enforce_limits` is on)."""
        who = "anonymous" if token is None else "account"
        quota = self.quota.get(who, RATE_QUOTA[who])[bucket]
        now = self.now()
        start = int(now) // self.window_s * self.window_s
        with self.lock:
            if self._window[0] != start:
                self._window = (start, Counter())
            used = self._window[1]
            used[(who, bucket)] += 1
            n = used[(who, bucket)]
        reset = max(1, int(start + self.window_s - now))
        return ({"RateLimit": f'"{bucket}";r={max(0, quota - n)};t={reset}',
                 "RateLimit-Policy": f'"fixed window";"{bucket}";q={quota};w={self.window_s}'},
                self.enforce_limits and n > quota)

    # -- faults ----------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def take_fault(self, where: str) -> Fault | None:
        """The fault due for this request: an injected one first, else a chaos draw."""
        with self.lock:
            for f in self.faults:
                if f.where == where and f.count > 0:
                    if f.after > 0:
                        f.after -= 1
                        return None
                    f.count -= 1
                    return f
            c = self.chaos
            if c is None or self._rng.random() >= c.rate:
                return None
            kind = self._rng.choice(c.kinds)
            status = self._rng.choice((500, 502, 503, 504)) if kind == "5xx" else 503
            return Fault("status" if kind == "5xx" else kind, where, 1, status=status, retry_after=0, hang_s=c.hang_s)

    def set_chaos(self, chaos: Chaos | None) -> None:
        with self.lock:
            self.chaos = chaos
            self._rng = random.Random(chaos.seed if chaos else 0)

    def served(self, repo_id: str) -> int:
        """Bytes served for one repo, over both origins."""
        return sum(v for (r, _), v in self.bytes_served.items() if r == repo_id)

    # -- listings and payloads -------------------------------------------------------------------
    def listing(self, q: dict[str, list[str]]) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``/api/models`` and the cursor of the next page (None on the last).

        Raises:
            ExpandError: an ``expand`` value listings do not accept.
        """
        def one(k: str) -> str | None:
            v = q.get(k)
            return v[0] if v else None

        expand = check_expand(q.get("expand", []), EXPAND_LIST, "listing")
        # no sort: trendingScore, the Hub's default (#5); unknown keys fall back to createdAt
        sort = SORTS.get(one("sort") or "trendingScore", "created_at")
        try:
            limit = max(1, min(PAGE_MAX, int(one("limit") or self.page_size)))
        except ValueError:
            raise ExpandError(f"limit must be an integer, not {one('limit')!r}") from None
        with self.lock:
            repos = [r for r in self.repos.values() if not r.private]
        if one("author"):
            repos = [r for r in repos if r.author == one("author")]
        if one("search"):
            repos = [r for r in repos if str(one("search")).lower() in r.repo_id.lower()]
        if one("pipeline_tag"):
            repos = [r for r in repos if r.pipeline_tag == one("pipeline_tag")]
        if one("gated") in ("true", "false"):  # #14
            repos = [r for r in repos if bool(r.gated) == (one("gated") == "true")]
        for tag in q.get("filter", []):
            repos = [r for r in repos if tag in r.tags() or tag == r.repo_id]

        # Always descending by the key, ties by ``_id`` ascending (#3): a keyset cursor on (key, _id),
        # so inserts at the head do not shift later pages.
        def key(r: SimRepo) -> float:
            if sort in ("created_at", "last_modified"):
                return float(getattr(r, sort).timestamp())
            return 0.0  # no trending score, downloads or likes in the stand-in: all tie

        repos.sort(key=lambda r: (-key(r), r._id))
        cursor = one("cursor")
        if cursor:
            try:
                ts, oid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            except ValueError:
                raise ExpandError("invalid cursor") from None
            repos = [r for r in repos if (-key(r), r._id) > (-float(ts), str(oid))]
        page, more = repos[:limit], len(repos) > limit
        full = one("full") in ("true", "True", "1") or one("cardData") in ("true", "True", "1")
        items = [self.shape(r, expand, blobs=False, keys=None if full else LIST_DEFAULT) for r in page]
        if one("config") in ("true", "True", "1"):
            for it, r in zip(items, page, strict=True):
                it["config"] = r.config()
        nxt = base64.urlsafe_b64encode(json.dumps([key(page[-1]), page[-1]._id]).encode()).decode() if more else None
        return items, nxt

    def shape(self, r: SimRepo, expand: list[str], blobs: bool,
              keys: tuple[str, ...] | None = INFO_DEFAULT) -> dict[str, Any]:
        """A payload of ``r``: the ``expand`` keys (plus ``_id``/``id``) if any, else ``keys`` (None: all)."""
        info = r.info(blobs=blobs)
        info["childrenModelCount"] = self.children(r.repo_id)
        if expand:
            return {k: v for k, v in info.items() if k in expand or k in ("id", "_id")}
        return {k: info[k] for k in keys if k in info} if keys is not None else info

    def children(self, repo_id: str) -> dict[str, int]:
        """``childrenModelCount`` as the Hub sends it: one count per relation (#19)."""
        out = {"adapter": 0, "merge": 0, "quantized": 0, "finetune": 0}
        with self.lock:
            repos = list(self.repos.values())
        for r in repos:
            b = r.base_models()
            if b and any(m["id"] == repo_id for m in b["models"]):
                out[b["relation"]] += 1
        return out


def check_expand(values: list[str], allowed: frozenset[str], where: str) -> list[str]:
    """``values`` split on commas, if every one is ``allowed``.

    Raises:
        ExpandError: another value (the Hub answers 400 naming it).
    """
    out = [v for x in values for v in x.split(",") if v]
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ExpandError(f'"expand" must be one of the {where} properties; {bad[0][:80]!r} is not')
    return out
