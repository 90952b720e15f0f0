"""``lineage web``: the web UI over this home's store (read-only unless LINEAGE_WEB_TOKEN is set)."""

from __future__ import annotations

from typing import Any

import click

from lineage.cli.output import handle_errors


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback "
              "unless a proxy with TLS is in front).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--get", "get_path", metavar="PATH", default=None,
              help="Print the page at PATH (or its JSON twin: PATH.json) and exit, without starting a server.")
@click.option("--json", "as_json", is_flag=True, help="With --get: ask for the JSON twin (Accept: application/json).")
@handle_errors
def web(host: str, port: int, get_path: str | None, as_json: bool) -> None:
    """Browse the lineage graph: family trees, model pages with their evidence, suspects, alerts.

    Every page has a JSON twin (the same URL plus .json). Acknowledging and muting alerts needs
    LINEAGE_WEB_TOKEN (sent as the form's token field or an Authorization: Bearer header).

    Example:

        lineage web --port 8080      # then open http://127.0.0.1:8080/

        lineage web --get /family/llama-a.json     # one page's JSON twin on stdout, no server
    """
    import uvicorn

    from lineage.errors import LineageError
    from lineage.pictures import HomePictures
    from lineage.settings import Settings
    from lineage.store import open_store
    from web.app import create_app, get

    s = Settings.from_env()
    store = open_store(s, read_only=True)  # the graph is only read here (alerts state is its own file)
    try:
        pictures = HomePictures(s.home, s.index())
        app = create_app(store, s.home / "alerts.sqlite", s.web_token, pictures=pictures)
        if get_path is not None:
            if not get_path.startswith("/"):
                raise LineageError(f"--get takes a path that starts with '/': {get_path[:200]!r}")
            status, ctype, body = get(app, get_path, accept_json=as_json)
            if status >= 400:
                raise LineageError(f"GET {get_path[:200]} answered {status}: {_reason(ctype, body)}")
            click.echo(body.decode("utf-8", errors="replace"), nl=not body.endswith(b"\n"))
            return
        sock = _listen(host, port)  # bound before the URL is announced: a busy port is one error line
        click.echo(f"lineage web on http://{host}:{port}/ (store: {s.graph}, "
                   f"{'writes need the token' if s.web_token else 'read-only'}); Ctrl-C stops it", err=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        store.close()


def _reason(ctype: str, body: bytes) -> str:
    """The error a page answered, in one line (its JSON ``error``, else the start of its text)."""
    import json

    if "json" in ctype:
        try:
            doc = json.loads(body)
            return str(doc.get("message") or doc.get("error") or doc.get("detail") or doc)[:300]
        except (ValueError, AttributeError):
            pass
    return " ".join(body.decode("utf-8", errors="replace").split())[:300]


def _listen(host: str, port: int) -> Any:
    """A listening socket on ``host:port``, or one clear error (the port is taken, the address is not ours)."""
    import socket

    from lineage.errors import LineageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise LineageError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another server on that port? "
                           "choose one with --port)") from e
    return sock
