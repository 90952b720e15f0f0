"""Screenshots of the web UI over a home's graph (the README's pictures), in Debian's headless Chromium.

    LINEAGE_HOME=~/.lineage python docs/screenshots.py FAMILY MODEL_ID [--out docs/img]

Run it after ``lineage demo``; it serves the home's store on a free loopback port for the captures.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from fingerprint.index import Index
    from lineage.pictures import HomePictures
    from lineage.settings import Settings
    from lineage.store import open_store
    from web.app import create_app

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("family")
    p.add_argument("model")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "img")
    a = p.parse_args()
    s = Settings.from_env()
    store = open_store(s)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(store, s.home / "alerts.sqlite", pictures=HomePictures(s.home, Index(s.home / "index"))), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    a.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/")
        page.screenshot(path=str(a.out / "home.png"), full_page=False)
        page.goto(base + "/model/" + quote(a.model, safe="/"))
        page.screenshot(path=str(a.out / "model.png"), full_page=True)
        page.goto(base + "/family/" + quote(a.family, safe="/"))
        page.wait_for_selector("#tree[data-ready='1']")
        page.hover("#tree")
        page.screenshot(path=str(a.out / "family.png"), full_page=False)
        b.close()
    server.should_exit = True
    t.join(10)
    store.close()
    print(f"wrote {', '.join(str(a.out / n) for n in ('home.png', 'model.png', 'family.png'))}")


if __name__ == "__main__":
    main()
