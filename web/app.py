"""``create_app(store)``: the FastAPI application of the web UI (the caller passes the store in).

Every page is one view function (:mod:`web.views`) rendered two ways: HTML (Jinja2, autoescaped) or its
JSON twin, chosen by a ``.json`` suffix on the path or an ``Accept: application/json`` header. Errors go
through the same choice. Pages are read-only; acknowledging and muting alerts need
``LINEAGE_WEB_TOKEN`` (compared in constant time); without a token configured the UI cannot write.

Every response carries a Content-Security-Policy that allows scripts, styles and data only from this
origin (no inline script: pages load their data from their own JSON twin), and no framing.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerts.outbox import MUTE_SCOPES, AlertStore
from graph.store import LineageStore
from web import views
from web.errors import BadRequestError, ForbiddenError, NotFoundError, WebError

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}
STATIC = Path(__file__).parent / "static"
AGGREGATE_TTL = 60.0


class Pictures(Protocol):
    """Fingerprint pictures by model id, supplied by the composition root (the web package reads no
    fingerprints itself)."""

    def available(self, model_id: str) -> bool: ...

    def png(self, model_id: str) -> bytes | None: ...


def _env() -> Environment:
    env = Environment(loader=PackageLoader("web"), autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["q"] = lambda s: quote(str(s), safe="/")  # ids in URLs: percent-encoded, slashes kept
    env.filters["pct"] = lambda x: f"{x:.3f}" if isinstance(x, int | float) and not isinstance(x, bool) else "-"
    return env


def wants_json(request: Request) -> bool:
    if request.url.path.endswith(".json"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def json_url(request: Request) -> str:
    """The JSON twin of this page: the path plus ``.json`` (``/index.json`` for ``/``), same query."""
    path = request.url.path
    twin = "/index.json" if path == "/" else path if path.endswith(".json") else path + ".json"
    return twin + (f"?{request.url.query}" if request.url.query else "")


def _strip(path: str) -> str:
    return path[: -len(".json")] if path.endswith(".json") else path


def create_app(store: LineageStore, alerts_path: Path | None = None, token: str | None = None,
               title: str = "model-lineage", pictures: Pictures | None = None) -> FastAPI:
    """The web UI over ``store`` (not closed here); ``alerts_path``: the alerts state to show (None: no
    alerts panel); ``token``: the write token (None: read-only); ``pictures``: fingerprint pictures for the
    model pages (None: no picture panel)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None,  # the Swagger page loads from a CDN: off
                  description="Lineage graph pages; every page has a JSON twin (same path + .json).")
    env = _env()
    lock = threading.Lock()  # one store connection, FastAPI's thread pool: one request at a time inside it
    cache: dict[str, tuple[float, Any]] = {}

    def aggregates(name: str, compute: Callable[[], Any]) -> Any:
        """Whole-graph counts for the home page, at most ``AGGREGATE_TTL`` seconds old (they scan every
        model: 2 s at 1M models on the embedded store)."""
        hit = cache.get(name)
        if hit is None or time.monotonic() - hit[0] > AGGREGATE_TTL:
            hit = cache[name] = (time.monotonic(), compute())
        return hit[1]

    @contextmanager
    def alerts() -> Iterator[AlertStore | None]:
        if alerts_path is None or not alerts_path.exists():
            yield None
            return
        a = AlertStore(alerts_path)  # SQLite handles are per thread: one per request
        try:
            yield a
        finally:
            a.close()

    def render(request: Request, template: str, doc: dict[str, Any], status: int = 200) -> Response:
        if wants_json(request):
            return JSONResponse(doc, status_code=status, headers=HEADERS)
        html = env.get_template(template).render(doc=doc, writable=token is not None, path=request.url.path,
                                                  title=title, json_url=json_url(request))
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def page(request: Request, template: str, build: Callable[[], dict[str, Any]]) -> Response:
        with lock:
            doc = build()
        return render(request, template, doc)

    def error(request: Request, status: int, message: str) -> Response:
        return render(request, "error.html", {"error": {"status": status, "message": message}}, status)

    @app.exception_handler(WebError)
    def _web_error(request: Request, e: WebError) -> Response:
        return error(request, e.status, str(e))

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, e: StarletteHTTPException) -> Response:
        return error(request, e.status_code, "no such page" if e.status_code == 404 else str(e.detail))

    @app.exception_handler(RequestValidationError)
    def _bad_params(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
        return error(request, 400, f"bad parameter {where}: {first.get('msg', 'invalid')}"[:300])

    @app.exception_handler(Exception)
    def _unexpected(request: Request, e: Exception) -> Response:
        return error(request, 500, "internal error (see the server log)")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.get("/", summary="Home: counts, search, recent detections, candidate families")
    @app.get("/index.json", include_in_schema=False)
    def home(request: Request, q: str | None = None, limit: int | None = None) -> Response:
        return page(request, "home.html", lambda: views.home(store, q, limit, aggregates))

    @app.get("/model/{ident:path}", summary="A model: parents, children, copies, licence, evidence, alerts")
    def model(request: Request, ident: str) -> Response:
        def build() -> dict[str, Any]:
            with alerts() as a:
                doc = views.model(store, a, _strip(ident))
            mid = doc["model"]["id"]
            doc["picture"] = f"/picture/{quote(mid, safe='/')}.png" if pictures and pictures.available(mid) else None
            return doc
        return page(request, "model.html", build)

    @app.get("/picture/{ident:path}", summary="A model's fingerprint picture (PNG, 256×256)")
    def picture(ident: str) -> Response:
        if not ident.endswith(".png") or pictures is None:
            raise NotFoundError("no such picture")
        data = pictures.png(ident[: -len(".png")])  # outside the store lock: it reads a fingerprint file only
        if data is None:
            raise NotFoundError(f"no fingerprint picture for {ident[:-4][:200]!r}")
        return Response(data, media_type="image/png", headers={**HEADERS, "Cache-Control": "max-age=3600"})

    @app.get("/family/{name:path}", summary="A family's tree, one level at a time around a focus")
    def family(request: Request, name: str, focus: str | None = None, expand: str | None = None) -> Response:
        return page(request, "family.html", lambda: views.family(store, _strip(name), focus, expand))

    @app.get("/suspects", summary="Undeclared and misdeclared derivatives")
    @app.get("/suspects.json", include_in_schema=False)
    def suspects(request: Request, reason: str | None = None, family: str | None = None, sort: str = "score",
                 limit: int | None = None) -> Response:
        return page(request, "suspects.html", lambda: views.suspects(store, reason, family, sort, limit))

    @app.get("/alerts", summary="Licence findings from the alerts state")
    @app.get("/alerts.json", include_in_schema=False)
    def alert_list(request: Request, status: str | None = None, kind: str | None = None,
                   limit: int | None = None) -> Response:
        def build() -> dict[str, Any]:
            with alerts() as a:
                return views.alert_list(a, status, kind, limit)
        return page(request, "alerts.html", build)

    @contextmanager
    def writable_alerts(request: Request, given: str) -> Iterator[AlertStore]:
        """The alerts state for a write: the token (form field, else ``Authorization: Bearer``) checked
        first, in constant time."""
        given = given or request.headers.get("authorization", "").removeprefix("Bearer ")
        if token is None:
            raise ForbiddenError("this UI is read-only: start it with LINEAGE_WEB_TOKEN set to allow changes")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ForbiddenError("wrong token")
        with alerts() as a:
            if a is None:
                raise NotFoundError("no alerts state")
            yield a

    def _done(request: Request, doc: dict[str, Any]) -> Response:
        if wants_json(request):
            return JSONResponse(doc, headers=HEADERS)
        return RedirectResponse("/alerts", status_code=303)

    @app.post("/alerts/{key}/ack", summary="Acknowledge a finding (needs the token)")
    def ack(request: Request, key: str, token_: str = Form("", alias="token")) -> Response:
        with writable_alerts(request, token_) as a:
            try:
                full = a.ack(key[:64])
            except LookupError:
                raise NotFoundError(f"no finding {key[:64]!r}") from None
        return _done(request, {"acknowledged": full})

    @app.post("/alerts/mute", summary="Mute a model, organisation, family or kind (needs the token)")
    def mute(request: Request, scope: str = Form(...), value: str = Form(..., max_length=200),
             token_: str = Form("", alias="token")) -> Response:
        with writable_alerts(request, token_) as a:
            if scope not in MUTE_SCOPES:
                raise BadRequestError(f"scope must be one of {', '.join(MUTE_SCOPES)}")
            a.mute(scope, value)
        return _done(request, {"muted": {"scope": scope, "value": value}})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def get(app: Any, path: str, accept_json: bool = False) -> tuple[int, str, bytes]:
    """Answer one ``GET path`` from ``app`` in this process, as a browser would get it over HTTP:
    ``(status, content type, body)``. No server, no socket (``lineage web --get``, after datasette's)."""
    import asyncio
    from urllib.parse import urlsplit

    if not path.startswith("/"):
        raise BadRequestError(f"the path must start with '/': {path[:200]!r}")
    parts = urlsplit(path)
    headers = [(b"host", b"localhost")] + ([(b"accept", b"application/json")] if accept_json else [])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": parts.path, "raw_path": parts.path.encode(), "query_string": parts.query.encode(),
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 0), "server": ("localhost", 80)}
    sent: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    ctype = next((v.decode("latin-1") for k, v in start.get("headers", []) if k.lower() == b"content-type"), "")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), ctype, body
