"""A loopback Hugging Face Hub stand-in: a real HTTP server for the contract the crawler relies on.

It implements the routes of ``hub-crawling.md`` §4.2, verified against the real ``huggingface_hub``:
paged ``/api/models`` (keyset cursor in a ``Link`` header, sort by ``createdAt``/``lastModified``),
``/api/models/{id}[/revision/{rev}]``, ``/resolve`` (small files directly, LFS files by a 302 to a second
origin, the "CDN"), ``/tree``, ``X-Error-Code`` errors, gated repos, and 429s with ``RateLimit`` headers.
Faults are injected on request, and every byte served is counted per file.

Only loopback addresses are bound. Example::

    with HubSim() as hub:
        hub.add(SimRepo("org/model", files_of(path), created_at=t, last_modified=t))
        HfApi(endpoint=hub.endpoint).model_info("org/model")
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from hubsim.repos import SimFile, SimRepo

PAGE_DEFAULT = 100
PAGE_MAX = 1000
CHUNK = 1 << 16


@dataclass
class Fault:
    """An injected failure: the next ``count`` matching requests fail.

    ``kind`` is ``"429"`` (rate limited, ``RateLimit`` ``t=retry_after``), ``"status"`` (``status``
    code), or ``"truncate"`` (send headers for the whole body, then half of it, then close).
    ``where`` is ``"api"`` (``/api/*``), ``"resolve"`` or ``"cdn"``; ``after`` lets that many matching
    requests through first (a failure *mid*-download).
    """

    kind: str
    where: str
    count: int
    status: int = 503
    retry_after: int = 1
    after: int = 0


class HubSim:
    """The stand-in: repos, counters and faults behind two loopback HTTP origins (API and CDN)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0,
                 accepted_tokens: frozenset[str] = frozenset(), page_size: int = PAGE_DEFAULT,
                 delay_s: float = 0.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the Hub stand-in binds loopback addresses only, not {host!r}")
        self.repos: dict[str, SimRepo] = {}
        #: tokens whose account "accepted the terms" of every gated repo (the operator's, in the demo)
        self.accepted_tokens = accepted_tokens
        self.page_size = page_size  # listing page size when the client sends no ``limit``
        self.delay_s = delay_s  # added to every CDN response (tests that must interrupt a crawl mid-way)
        self.bytes_served: Counter[tuple[str, str]] = Counter()  # (repo_id, filename) -> bytes
        self.requests: Counter[str] = Counter()  # "api" / "resolve" / "cdn" / "429" / "fault"
        self.log: list[tuple[str, str, int]] = []  # (method, path, status), for assertions
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._api = ThreadingHTTPServer((host, port), _handler(self, cdn=False))
        self._cdn = ThreadingHTTPServer((host, cdn_port), _handler(self, cdn=True))
        self._api.daemon_threads = self._cdn.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._api.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def start(self) -> HubSim:
        for srv in (self._api, self._cdn):
            t = threading.Thread(target=srv.serve_forever, name=f"hubsim-{srv.server_address[1]}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._api, self._cdn):
            srv.shutdown()
            srv.server_close()

    def __enter__(self) -> HubSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- repos ----------------------------------------------------------------------------------
    def add(self, repo: SimRepo) -> SimRepo:
        with self.lock:
            self.repos[repo.repo_id] = repo
        return repo

    def commit(self, repo_id: str, files: dict[str, SimFile], when: datetime) -> None:
        """A new commit: add or replace files and move ``lastModified`` (e.g. weights pushed late)."""
        with self.lock:
            r = self.repos[repo_id]
            r.files.update(files)
            r.last_modified = when

    def publish(self, repo_id: str) -> None:
        """Flip a private repo public; its dates stay as they were (the sweep must find it)."""
        with self.lock:
            self.repos[repo_id].private = False

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def served(self, repo_id: str) -> int:
        """Bytes served for one repo, over both origins."""
        return sum(v for (r, _), v in self.bytes_served.items() if r == repo_id)

    def _take_fault(self, where: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.where == where and f.count > 0:
                    if f.after > 0:
                        f.after -= 1
                        return None
                    f.count -= 1
                    return f
        return None

    # -- listing --------------------------------------------------------------------------------
    def listing(self, q: dict[str, list[str]]) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``/api/models`` and the cursor of the next page (None on the last)."""
        def one(k: str) -> str | None:
            v = q.get(k)
            return v[0] if v else None

        sort = {"createdAt": "created_at", "lastModified": "last_modified"}.get(one("sort") or "", "created_at")
        limit = max(1, min(PAGE_MAX, int(one("limit") or self.page_size)))
        with self.lock:
            repos = [r for r in self.repos.values() if not r.private]
        if one("author"):
            repos = [r for r in repos if r.author == one("author")]
        if one("search"):
            repos = [r for r in repos if str(one("search")).lower() in r.repo_id.lower()]
        if one("pipeline_tag"):
            repos = [r for r in repos if r.pipeline_tag == one("pipeline_tag")]
        for tag in q.get("filter", []):
            repos = [r for r in repos if tag in r.tags() or tag == r.repo_id]
        # Always descending, ties by _id: a keyset cursor, so inserts at the head do not shift pages.
        def key(r: SimRepo) -> tuple[float, str]:
            return (getattr(r, sort).timestamp(), r._id)

        repos.sort(key=key, reverse=True)
        cursor = one("cursor")
        if cursor:
            ts, oid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            repos = [r for r in repos if key(r) < (ts, oid)]
        page, more = repos[:limit], len(repos) > limit
        expand = q.get("expand", [])
        full = one("full") in ("true", "True", "1") or one("cardData") in ("true", "True", "1")
        items = [self._shape(r, expand, blobs=False, brief=not full and not expand) for r in page]
        if one("config") in ("true", "True", "1"):
            for it, r in zip(items, page, strict=True):
                it["config"] = r.config()
        nxt = base64.urlsafe_b64encode(json.dumps(list(key(page[-1]))).encode()).decode() if more else None
        return items, nxt

    @staticmethod
    def _shape(r: SimRepo, expand: list[str], blobs: bool, brief: bool = False) -> dict[str, Any]:
        info = r.info(blobs=blobs)
        if expand:
            return {k: v for k, v in info.items() if k in expand or k in ("id", "_id")}
        if brief:  # a bare listing carries a few fields, like the Hub's
            keep = ("_id", "id", "modelId", "likes", "downloads", "private", "tags", "pipeline_tag",
                    "library_name", "createdAt")
            return {k: info[k] for k in keep}
        return info


def _handler(sim: HubSim, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lineage-hubsim"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read sim.log instead
            pass

        # -- plumbing ---------------------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  length: int | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)
            with sim.lock:
                sim.log.append((self.command, self.path, status))

        def _json(self, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                      "X-Error-Message": message, **(extra or {})})

        def _fault(self, where: str) -> Fault | None:
            """Answer with an injected failure if one is due; a ``truncate`` fault is returned unanswered."""
            f = sim._take_fault(where)
            if f is None:
                return None
            with sim.lock:
                sim.requests["fault"] += 1
            if f.kind == "429":
                with sim.lock:
                    sim.requests["429"] += 1
                bucket = {"api": "api", "resolve": "resolvers", "cdn": "resolvers"}[where]
                self._error(429, "RateLimited", "rate limited", {
                    "RateLimit": f'"{bucket}";r=0;t={f.retry_after}',
                    "RateLimit-Policy": f'"fixed window";"{bucket}";q=500;w=300',
                    "Retry-After": str(f.retry_after)})
            elif f.kind != "truncate":  # a truncation is done by the body writer
                self._error(f.status, "ServerError", f"injected {f.status}")
            return f

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                (self._cdn_get if cdn else self._api_get)()

        # -- the CDN origin ---------------------------------------------------------------------
        def _cdn_get(self) -> None:
            with sim.lock:
                sim.requests["cdn"] += 1
            if sim.delay_s:
                time.sleep(sim.delay_s)
            parts = urlsplit(self.path)
            q = parse_qs(parts.query)
            repo_id, filename = (q.get("repo") or [""])[0], (q.get("file") or [""])[0]
            with sim.lock:
                r = sim.repos.get(repo_id)
                f = r.files.get(filename) if r else None
            if f is None or parts.path.strip("/") != f.sha256:
                self._send(403, b"signature does not match")  # an expired/forged signed URL
                return
            fault = self._fault("cdn")
            if fault is not None and fault.kind != "truncate":
                return
            self._serve_file(repo_id, f, {"ETag": f'"{f.sha256}"'}, fault is not None)

        def _serve_file(self, repo_id: str, f: SimFile, headers: dict[str, str], truncate: bool = False) -> None:
            size = f.size
            headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            start, end, status = 0, size - 1, 200
            rng = self.headers.get("Range")
            if rng:
                spec = rng.strip()
                ok = spec.startswith("bytes=") and "," not in spec and "-" in spec
                a, _, b = spec[6:].partition("-") if ok else ("", "", "")
                if not ok or not a.isdigit() or (b and not b.isdigit()) or int(a) >= size or (b and int(b) < int(a)):
                    self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"})
                    return
                start, end = int(a), min(size - 1, int(b)) if b else size - 1
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            length = end - start + 1
            if self.command == "HEAD":
                self._send(status, b"", headers, length=length)
                return
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            send = length // 2 if truncate else length
            with open(f.path, "rb") as fh:
                fh.seek(start)
                left = send
                while left > 0:
                    chunk = fh.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            with sim.lock:
                sim.bytes_served[(repo_id, f.name)] += send - left
                sim.log.append((self.command, self.path, status))
            if truncate:
                self.close_connection = True
                self.wfile.flush()

        # -- the API origin ---------------------------------------------------------------------
        def _api_get(self) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            q = parse_qs(parts.query)
            if path.startswith("/api/"):
                with sim.lock:
                    sim.requests["api"] += 1
                if path in ("/api/whoami-v2", "/api/agent-harnesses"):
                    self._error(404 if "harness" in path else 401, "NotFound", "not served by the stand-in")
                    return
                if self._fault("api") is not None:
                    return
                if path == "/api/models":
                    items, nxt = sim.listing(q)
                    headers = {}
                    if nxt is not None:
                        others = [(k, v) for k, vs in q.items() if k != "cursor" for v in vs]
                        qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in [*others, ("cursor", nxt)])
                        headers["Link"] = f'<{sim.endpoint}/api/models?{qs}>; rel="next"'
                    self._json(items, headers)
                    return
                if path.startswith("/api/models/"):
                    self._model_api(path[len("/api/models/"):], q)
                    return
                self._error(404, "NotFound", f"no route {path}")
                return
            # /{ns}/{name}/resolve/{rev}/{path}
            segs = parts.path.lstrip("/").split("/", 4)
            if len(segs) == 5 and segs[2] == "resolve":
                with sim.lock:
                    sim.requests["resolve"] += 1
                if self._fault("resolve") is not None:
                    return
                self._resolve(f"{unquote(segs[0])}/{unquote(segs[1])}", unquote(segs[3]), unquote(segs[4]))
                return
            self._error(404, "NotFound", f"no route {path}")

        def _repo(self, repo_id: str, rev: str | None) -> SimRepo | None:
            with sim.lock:
                r = sim.repos.get(repo_id)
            if r is None or r.private:
                self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
                return None
            if rev not in (None, "main", r.sha):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return None
            return r

        def _model_api(self, rest: str, q: dict[str, list[str]]) -> None:
            segs = rest.split("/")
            if len(segs) < 2:
                self._error(404, "NotFound", "no such route")
                return
            repo_id, tail = f"{segs[0]}/{segs[1]}", segs[2:]
            if not tail or tail[0] == "revision":
                r = self._repo(repo_id, tail[1] if len(tail) > 1 else None)
                if r is not None:
                    blobs = (q.get("blobs") or ["false"])[0].lower() in ("true", "1")
                    self._json(HubSim._shape(r, q.get("expand", []), blobs=blobs))
                return
            if tail[0] == "tree" and len(tail) >= 2:
                r = self._repo(repo_id, tail[1])
                if r is None:
                    return
                prefix = "/".join(tail[2:]).strip("/")
                recursive = (q.get("recursive") or ["false"])[0].lower() in ("true", "1")
                self._json(_tree(r, prefix, recursive))
                return
            self._error(404, "NotFound", "no such route")

        def _resolve(self, repo_id: str, rev: str, filename: str) -> None:
            r = self._repo(repo_id, rev)
            if r is None:
                return
            auth = self.headers.get("Authorization", "")
            if r.gated and auth.removeprefix("Bearer ").strip() not in sim.accepted_tokens:
                # anonymous: 401; a token whose account did not accept the terms: 403 (§2.3)
                status = 403 if auth else 401
                self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
                return
            f = r.files.get(filename)
            commit = {"X-Repo-Commit": r.sha}
            if f is None:
                self._error(404, "EntryNotFound", f"{filename} does not exist on {rev}", commit)
                return
            if f.lfs:
                location = f"{sim.cdn}/{f.sha256}?repo={quote(repo_id)}&file={quote(filename)}"
                self._send(302, b"", {**commit, "Location": location, "X-Linked-Etag": f'"{f.sha256}"',
                                      "X-Linked-Size": str(f.size), "ETag": f'"{f.sha1}"'})
                return
            self._serve_file(repo_id, f, {**commit, "ETag": f'"{f.sha1}"'})

    return Handler


def _tree(r: SimRepo, prefix: str, recursive: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    dirs: set[str] = set()
    for name in sorted(r.files):
        if prefix and not name.startswith(prefix + "/"):
            continue
        rel = name[len(prefix) + 1:] if prefix else name
        if "/" in rel and not recursive:
            d = (prefix + "/" if prefix else "") + rel.split("/")[0]
            if d not in dirs:
                dirs.add(d)
                out.append({"type": "directory", "oid": "0" * 40, "path": d})
            continue
        f = r.files[name]
        item: dict[str, Any] = {"type": "file", "oid": f.sha1, "size": f.size, "path": name}
        if f.lfs:
            item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        out.append(item)
    return out
