"""``lineage web``: the web UI over this home's store (read-only unless LINEAGE_WEB_TOKEN is set)."""

from __future__ import annotations

import click

from lineage.cli.output import handle_errors


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback "
              "unless a proxy with TLS is in front).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@handle_errors
def web(host: str, port: int) -> None:
    """Browse the lineage graph: family trees, model pages with their evidence, suspects, alerts.

    Every page has a JSON twin (the same URL plus .json). Acknowledging and muting alerts needs
    LINEAGE_WEB_TOKEN (sent as the form's token field or an Authorization: Bearer header).

    Example:

        lineage web --port 8080      # then open http://127.0.0.1:8080/
    """
    import uvicorn

    from lineage.pictures import HomePictures
    from lineage.settings import Settings
    from lineage.store import open_store
    from web.app import create_app

    s = Settings.from_env()
    store = open_store(s, read_only=True)  # the graph is only read here (alerts state is its own file)
    try:
        pictures = HomePictures(s.home, s.index())
        app = create_app(store, s.home / "alerts.sqlite", s.web_token, pictures=pictures)
        click.echo(f"lineage web on http://{host}:{port}/ (store: {s.graph}, "
                   f"{'writes need the token' if s.web_token else 'read-only'}); Ctrl-C stops it", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        store.close()
