"""A loopback Hugging Face Hub stand-in: a real HTTP server for the contract the crawler relies on.

It implements the routes of ``hub-crawling.md`` §4.2, verified against the real ``huggingface_hub``,
with the real Hub's behaviour where ``hub-fidelity.md`` has evidence of it: paged ``/api/models``
(keyset cursor in a ``Link`` header; sort by ``createdAt``/``lastModified``/``trendingScore``; ``gated=``),
``/api/models/{id}[/revision/{rev}]`` at any commit, short sha or ``refs/pr/N``, ``expand`` checked per
endpoint (400), expand-only fields left out of default payloads, ``/resolve`` (small files by a relative
307 to ``/api/resolve-cache``, LFS files by a 302 to a second origin, the "CDN", whose signed URLs
expire; suffix ranges; ``If-None-Match`` answered 304 by the resolve cache), renamed, case-mismatched and
legacy single-segment ids answered by a relative 307, ``refs``, ``commits/{rev}``, ``POST paths-info``, trees
(a missing path is 404 EntryNotFound; ``.gitattributes`` is listed like any file), the Hub's token semantics
(anonymous misses 401, authenticated misses 404, invalid tokens 401 everywhere), ``RateLimit`` headers
on every response, ``X-Error-Code`` errors and gated repos. Faults are injected on request or at
random (:class:`~hubsim.hub.Chaos`), and every byte served is counted per file.

Only loopback addresses are bound. Example::

    with HubSim() as hub:
        hub.add(SimRepo("org/model", files_of(path), created_at=t, last_modified=t))
        HfApi(endpoint=hub.endpoint).model_info("org/model")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from hubsim.hub import EXPAND_INFO, URL_TTL_S, ExpandError, Fault, HubState, check_expand
from hubsim.repos import SimFile, SimRepo, iso

INVALID_TOKEN = "Invalid credentials in Authorization header"  # the message huggingface_hub keys on


class HubSim(HubState):
    """The stand-in: :class:`~hubsim.hub.HubState` behind two loopback HTTP origins (API and CDN).

    ``tokens``: the valid tokens (None: any token is a real account's); ``accepted_tokens`` are valid
    and may read gated repos. ``url_ttl_s``: how long a signed CDN URL lasts.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0,
                 accepted_tokens: frozenset[str] = frozenset(), tokens: frozenset[str] | None = None,
                 page_size: int = 100, delay_s: float = 0.0, url_ttl_s: float = URL_TTL_S,
                 tls: ssl.SSLContext | None = None) -> None:
        """``tls``: serve both origins over HTTPS with this server context (the client's mapping of an
        anonymous 401 to RepositoryNotFoundError, among others, applies to ``https://`` URLs only)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the Hub stand-in binds loopback addresses only, not {host!r}")
        super().__init__(accepted_tokens, tokens, page_size, delay_s, url_ttl_s)
        self._api = ThreadingHTTPServer((host, port), _handler(self, cdn=False))
        self._cdn = ThreadingHTTPServer((host, cdn_port), _handler(self, cdn=True))
        self._api.daemon_threads = self._cdn.daemon_threads = True
        self.scheme = "https" if tls is not None else "http"
        if tls is not None:
            for srv in (self._api, self._cdn):
                srv.socket = tls.wrap_socket(srv.socket, server_side=True)
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._api.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._cdn.server_address[1]}"

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


def _handler(sim: HubSim, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lineage-hubsim"
        # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
        # delayed ACK (40 ms on Linux), which made every ranged read of a keep-alive connection 35 ms.
        disable_nagle_algorithm = True
        rate: dict[str, str]  # RateLimit headers of this request, set before any answer
        truncate = False  # a truncate fault is due: the body writer sends half

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read sim.log instead
            pass

        # -- plumbing ---------------------------------------------------------------------------
        def _head(self, status: int, headers: dict[str, str], length: int) -> None:
            self.send_response(status)
            for k, v in {**self.rate, **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  length: int | None = None, truncate: bool = False) -> None:
            self._head(status, headers or {}, len(body) if length is None else length)
            if self.command != "HEAD" and body:
                self.wfile.write(body[:len(body) // 2] if truncate else body)
            with sim.lock:
                sim.log.append((self.command, self.path, status))
            if truncate:
                self.close_connection = True

        def _json(self, obj: Any, headers: dict[str, str] | None = None, truncate: bool = False) -> None:
            self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})},
                       truncate=truncate)

        def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, body, headers)

        def _redirect(self, status: int, location: str, extra: dict[str, str] | None = None) -> None:
            self._send(status, b"", {"Location": location, **(extra or {})})

        def _fault(self, where: str) -> Fault | None:
            """Answer with a failure if one is due; a ``truncate`` fault is returned unanswered (the body
            writer cuts the body)."""
            f = sim.take_fault(where)
            if f is None:
                return None
            with sim.lock:
                sim.requests["fault"] += 1
                sim.requests[f"fault:{f.kind}"] += 1
            if f.kind == "429":
                with sim.lock:
                    sim.requests["429"] += 1
                bucket = "api" if where == "api" else "resolvers"
                self._error(429, "RateLimited", "rate limited", {
                    "RateLimit": f'"{bucket}";r=0;t={f.retry_after}',
                    "RateLimit-Policy": f'"fixed window";"{bucket}";q=500;w=300',
                    "Retry-After": str(f.retry_after)})
            elif f.kind == "timeout":
                time.sleep(f.hang_s)
                self.close_connection = True
            elif f.kind == "reset":  # an RST instead of an answer
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
            elif f.kind != "truncate":
                self._error(f.status, "ServerError", f"injected {f.status}")
            return f

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth.removeprefix("Bearer ").strip() or None if auth.startswith("Bearer ") else None

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                (self._cdn_get if cdn else self._api_get)()

        # -- the CDN origin ---------------------------------------------------------------------
        def _cdn_get(self) -> None:
            self.rate = {}
            with sim.lock:
                sim.requests["cdn"] += 1
            if sim.delay_s:
                time.sleep(sim.delay_s)
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            repo_id, filename = q.get("repo", ""), q.get("file", "")
            with sim.lock:
                r = sim.repos.get(repo_id)
                f = None
                if r is not None:
                    f = next((x for files in (r.files, *r.history.values(), *r.prs) for n, x in files.items()
                              if n == filename and x.sha256 == parts.path.strip("/")), None)
            why = "signature does not match" if f is None else sim.check_signature(
                f"{parts.path}|{repo_id}|{filename}", q.get("Expires", ""), q.get("Signature", ""))
            if why is not None or f is None:  # S3/CloudFront style: 403, an XML body, no X-Error-Code
                self._send(403, f"<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>".encode(),
                           {"Content-Type": "application/xml"})
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
                if ok and not a and b.isdigit() and int(b) > 0:  # a suffix range: the last b bytes
                    a, b = str(max(0, size - int(b))), str(size - 1)
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
            self._head(status, headers, length)
            send = length // 2 if truncate else length
            with open(f.path, "rb") as fh:
                self.wfile.flush()
                # sendfile(2): the kernel copies file to socket (a CDN does not spend Python's time either;
                # TLS sockets fall back to plain sends inside socket.sendfile)
                sent = self.connection.sendfile(fh, start, send) if send else 0
                left = send - sent
            with sim.lock:
                sim.bytes_served[(repo_id, f.name)] += send - left
                sim.log.append((self.command, self.path, status))
            if truncate:
                self.close_connection = True
                self.wfile.flush()

        # -- the API origin ---------------------------------------------------------------------
        def _api_get(self) -> None:
            parts = urlsplit(self.path)
            raw = parts.path.lstrip("/").split("/")
            segs = [unquote(s) for s in raw]
            q = parse_qs(parts.query)
            api = segs[0] == "api" and segs[1:2] != ["resolve-cache"]
            where = "api" if api else "resolve"
            with sim.lock:
                sim.requests[where] += 1
            self.rate, over = sim.rate_headers("api" if api else "resolvers", self._token())
            if over:
                with sim.lock:
                    sim.requests["429"] += 1
                t = self.rate["RateLimit"].rsplit("t=", 1)[1]
                self._error(429, "RateLimited", f"rate limit of the {'api' if api else 'resolvers'} bucket reached; "
                            f"it resets in {t} s", {"Retry-After": t})
                return
            fault = self._fault(where)
            if fault is not None and fault.kind != "truncate":
                return
            self.truncate = fault is not None
            if sim.token_state(self._token()) == "invalid":  # on every request (#35)
                self._error(401, None, INVALID_TOKEN)
                return
            if segs[:2] == ["api", "models"] and len(segs) == 2:
                try:
                    items, nxt = sim.listing(q)
                except ExpandError as e:
                    self._error(400, None, str(e))
                    return
                headers = {}
                if nxt is not None:
                    others = [(k, v) for k, vs in q.items() if k != "cursor" for v in vs]
                    qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in [*others, ("cursor", nxt)])
                    headers["Link"] = f'<{sim.endpoint}/api/models?{qs}>; rel="next"'
                self._json(items, headers, truncate=self.truncate)
            elif segs[:2] == ["api", "models"] and (len(segs) == 3 or (len(segs) == 5 and segs[3] == "revision")):
                self._legacy(segs[2], raw, 2)  # a single-segment (legacy) id: /api/models/gpt2[/revision/x]
            elif segs[:2] == ["api", "models"] and len(segs) >= 4:
                self._model_api(segs[2:], raw[2:], q)
            elif len(segs) >= 4 and segs[1] == "resolve":
                self._legacy(segs[0], raw, 0)  # /gpt2/resolve/main/config.json
            elif segs[:3] == ["api", "resolve-cache", "models"] and len(segs) >= 7:
                self._resolve_cache(segs, raw)
            elif len(segs) >= 5 and segs[2] == "resolve":
                self._resolve(segs, raw)
            else:
                self._error(404, "NotFound", f"no route {unquote(parts.path)[:200]}")

        def _repo(self, repo_id: str, rev: str | None, raw: list[str], at: int) -> tuple[SimRepo, str] | None:
            """The repo at ``rev``, or None after answering: a 307 to its canonical id, the miss the
            token decides (#29, #30), or RevisionNotFound."""
            with sim.lock:
                r = sim.repos.get(repo_id)
            if r is None:
                canon = sim.canonical(repo_id)
                if canon is not None:
                    ns, name = canon.split("/")
                    path = "/" + "/".join([*raw[:at], quote(ns), quote(name), *raw[at + 2:]])
                    query = urlsplit(self.path).query
                    self._redirect(307, path + (f"?{query}" if query else ""))
                    return None
            if r is None or r.private:
                self._miss()
                return None
            found = sim.at(r, rev)
            if found is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return found

        def _miss(self) -> None:
            """A repo that is not there, or private: 404 to a valid token, 401 to anyone else (#29, #30)."""
            if sim.token_state(self._token()) == "valid":
                self._error(404, "RepoNotFound", "Repository not found")
            else:
                self._error(401, None, "Invalid username or password.",
                            {"WWW-Authenticate": 'Bearer realm="Authentication required", charset="UTF-8"'})

        def _legacy(self, name: str, raw: list[str], at: int) -> None:
            """A single-segment id at ``raw[at]``: a relative 307 to its canonical ``namespace/name`` (as the
            Hub answers ``bert-base-uncased``), else the miss the token decides."""
            canon = sim.canonical(name)
            if canon is None or "/" not in canon:
                self._miss()
                return
            ns, rest = canon.split("/")
            query = urlsplit(self.path).query
            path = "/" + "/".join([*raw[:at], quote(ns), quote(rest), *raw[at + 1:]])
            self._redirect(307, path + (f"?{query}" if query else ""))

        def _model_api(self, segs: list[str], raw: list[str], q: dict[str, list[str]]) -> None:
            repo_id, tail = f"{segs[0]}/{segs[1]}", segs[2:]
            if not tail or (tail[0] == "revision" and len(tail) == 2):
                try:
                    expand = check_expand(q.get("expand", []), EXPAND_INFO, "model")
                except ExpandError as e:
                    self._error(400, None, str(e))
                    return
                found = self._repo(repo_id, tail[1] if tail else None, ["api", "models", *raw], 2)
                if found is not None:
                    blobs = (q.get("blobs") or ["false"])[0].lower() in ("true", "1")
                    self._json(sim.shape(found[0], expand, blobs=blobs), truncate=self.truncate)
                return
            if tail[0] == "tree" and len(tail) >= 2:
                found = self._repo(repo_id, tail[1], ["api", "models", *raw], 2)
                if found is None:
                    return
                prefix = "/".join(tail[2:]).strip("/")
                recursive = (q.get("recursive") or ["false"])[0].lower() in ("true", "1")
                if prefix and not any(n.startswith(prefix + "/") for n in found[0].files):
                    self._error(404, "EntryNotFound", f"{prefix} does not exist on \"{tail[1]}\"")
                    return
                self._json(_tree(found[0], prefix, recursive), truncate=self.truncate)
                return
            if tail == ["refs"]:
                found = self._repo(repo_id, None, ["api", "models", *raw], 2)
                if found is not None:
                    self._json(_refs(found[0], (q.get("include_prs") or ["0"])[0] in ("1", "true")))
                return
            if tail[0] == "commits" and len(tail) == 2:
                found = self._repo(repo_id, tail[1], ["api", "models", *raw], 2)
                if found is not None:
                    self._json(_commits(sim.repos.get(repo_id) or found[0], found[1]))
                return
            self._error(404, "NotFound", "no such route")

        def do_POST(self) -> None:
            """``paths-info`` only (the one POST a reader of the Hub makes)."""
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                parts = urlsplit(self.path)
                raw = parts.path.lstrip("/").split("/")
                segs = [unquote(x) for x in raw]
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                self.rate, _ = sim.rate_headers("api", self._token())
                if cdn or segs[:2] != ["api", "models"] or len(segs) < 6 or segs[4] != "paths-info":
                    self._error(404, "NotFound", f"no route {unquote(parts.path)[:200]}")
                    return
                found = self._repo(f"{segs[2]}/{segs[3]}", "/".join(segs[5:]), raw, 2)
                if found is not None:
                    self._json(_paths_info(found[0], form.get("paths", [])))

        def _gate(self, r: SimRepo) -> bool:
            """False after answering GatedRepo: anonymous 401, a token without access 403 (§2.3)."""
            token = self._token()
            if r.gated and token not in sim.accepted_tokens:
                # the Hub's texts: anonymous, then a token whose account has not accepted the terms
                self._error(403 if token else 401, "GatedRepo",
                            f"Access to model {r.repo_id} is restricted and you are not in the authorized list. "
                            f"Visit https://huggingface.co/{r.repo_id} to ask for access." if token else
                            f"Access to model {r.repo_id} is restricted. You must have access to it and be "
                            "authenticated to access it. Please log in.")
                return False
            return True

        def _resolve(self, segs: list[str], raw: list[str]) -> None:
            repo_id, rev, filename = f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:])
            found = self._repo(repo_id, rev, raw, 0)
            if found is None or not self._gate(found[0]):
                return
            r, sha = found
            commit = {"X-Repo-Commit": sha}
            if rev not in ("main", sha) and not rev.startswith("refs/"):  # a short sha: 307 to the full one
                self._redirect(307, "/" + "/".join([*raw[:3], sha, *raw[4:]]), commit)
                return
            f = r.files.get(filename)
            if f is None:
                self._error(404, "EntryNotFound", "Entry not found", commit)
                return
            if f.lfs:
                path = f"/{f.sha256}"
                sig = sim.cdn_query(f"{path}|{r.repo_id}|{filename}")
                location = f"{sim.cdn}{path}?repo={quote(r.repo_id)}&file={quote(filename)}&{sig}"
                self._redirect(302, location, {**commit, "X-Linked-Etag": f'"{f.sha256}"',
                                               "X-Linked-Size": str(f.size), "ETag": f'"{f.sha1}"'})
                return
            # a small git file: a relative 307 to the resolve cache, which serves it (#25)
            cache = f"/api/resolve-cache/models/{quote(r.repo_id)}/{sha}/{quote(filename)}?etag={f.sha1}"
            self._redirect(307, cache, {**commit, "ETag": f'"{f.sha1}"'})

        def _resolve_cache(self, segs: list[str], raw: list[str]) -> None:
            repo_id, sha, filename = f"{segs[3]}/{segs[4]}", segs[5], "/".join(segs[6:])
            found = self._repo(repo_id, sha, raw, 3)
            if found is None or not self._gate(found[0]):
                return
            f = found[0].files.get(filename)
            if f is None:
                self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": found[1]})
                return
            if self.headers.get("If-None-Match") == f'"{f.sha1}"':  # the client's copy is current
                self._send(304, b"", {"X-Repo-Commit": found[1], "ETag": f'"{f.sha1}"'})
                return
            self._serve_file(found[0].repo_id, f, {"X-Repo-Commit": found[1], "ETag": f'"{f.sha1}"'}, self.truncate)

    return Handler


def _refs(r: SimRepo, prs: bool) -> dict[str, Any]:
    """``/api/models/{id}/refs``: ``main`` (no tags, no converts), and with ``include_prs`` the PR heads."""
    out: dict[str, Any] = {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": r.sha}],
                           "converts": [], "tags": []}
    if prs:
        out["pullRequests"] = [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}",
                                "targetCommit": replace(r, files=files).sha} for n, files in enumerate(r.prs, 1)]
    return out


def _commits(r: SimRepo, sha: str) -> list[dict[str, Any]]:
    """``/api/models/{id}/commits/{rev}``: the commits of ``main`` from ``sha`` back, newest first (a PR
    head first, then ``main``'s). The stand-in keeps no commit times: the newest carries the last
    modification, the older ones the creation."""
    line = [r.sha, *reversed(list(r.history))]
    chain = line[line.index(sha):] if sha in line else [sha, *line]
    return [{"id": c, "title": "Upload" if i == len(chain) - 1 else "Update", "message": "",
             "authors": [{"user": r.author}], "date": iso(r.last_modified if i == 0 else r.created_at)}
            for i, c in enumerate(chain)]


def _paths_info(r: SimRepo, paths: list[str]) -> list[dict[str, Any]]:
    """``POST paths-info``: each asked path that is a file or a folder (missing ones are left out)."""
    entries = {e["path"]: e for e in _tree(r, "", recursive=True)}
    out = []
    for p in dict.fromkeys(x.strip("/") for x in paths[:1000]):
        if p in entries:
            out.append(entries[p])
        elif p and any(n.startswith(p + "/") for n in r.files):
            out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
    return out


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
