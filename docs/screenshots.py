"""Screenshots of every web page over a home's graph, at a desktop width and a phone width, in Debian's
headless Chromium (the pictures in docs/guide/web.md).

    lineage demo && python docs/screenshots.py [--out docs/img/web]

It serves the home's store (``LINEAGE_HOME``) on a free loopback port. The pages are the demo's: run it
after ``lineage demo``, or name other models with ``--model`` and ``--family``.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

#: (name, path) of every page, with the demo's models
PAGES = (
    ("home", "/"),
    ("search", "/?q=alice"),
    ("model", "/model/{model}"),
    ("family", "/family/{family}"),
    ("candidate", "/family/{candidate}"),
    ("suspects", "/suspects"),
    ("alerts", "/alerts"),
    ("not-found", "/model/nobody/nothing"),
)
#: (name, viewport): a desktop at 1400×1000, a phone at 390×844 (an iPhone 12 to 15's CSS pixels)
VIEWPORTS = (("desktop", {"width": 1400, "height": 1000}), ("phone", {"width": 390, "height": 844}))


def main() -> None:
    import uvicorn
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from fingerprint.index import Index
    from lineage.pictures import HomePictures
    from lineage.settings import Settings
    from lineage.store import open_store
    from web.app import create_app

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mallory/llama-a-sft-permute_hidden", help="a model with detected evidence")
    p.add_argument("--family", default="llama-a", help="a family with a tree")
    p.add_argument("--candidate", default="tii-zoo/llama-c", help="a candidate family")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "img" / "web")
    a = p.parse_args()
    s = Settings.from_env()
    store = open_store(s, read_only=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(store, s.home / "alerts.sqlite", pictures=HomePictures(s.home, Index(s.home / "index")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    a.out.mkdir(parents=True, exist_ok=True)
    names = {"model": quote(a.model, safe="/"), "family": quote(a.family, safe="/"),
             "candidate": quote(a.candidate, safe="/")}
    written = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        for vname, viewport in VIEWPORTS:
            page = b.new_page(viewport=viewport)
            for name, path in PAGES:
                page.goto(base + path.format(**names))
                if name in ("family", "candidate"):
                    page.wait_for_selector("#tree[data-ready='1']")
                out = a.out / f"{name}-{vname}.png"
                page.screenshot(path=str(out))  # what the screen shows, as a person first sees the page
                Image.open(out).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)  # a fifth the bytes
                written.append(out)
            page.close()
        b.close()
    server.should_exit = True
    t.join(10)
    store.close()
    print("wrote " + ", ".join(str(w) for w in written))


if __name__ == "__main__":
    main()
