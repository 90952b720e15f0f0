"""Crawler benchmark: models/minute and bytes read vs checkpoint bytes against the loopback stand-in.

    python -m bench.crawl [--zoo DIR]          # default: the small zoo

Crawl only (discovery, metadata, ranged reads, fingerprints; no index match, no graph), so the figure
is the crawler's own throughput. The baseline in the same run is a full download of every weight file
through the same stand-in (what AWM-style tools need): bytes and seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx2


def main() -> None:
    from crawler.crawl import Crawler, CrawlOptions
    from hubsim import HubSim
    from lineage.zoohub import populate
    from zoo.build import default_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=default_dir("small"))
    a = p.parse_args()
    with HubSim() as hub, tempfile.TemporaryDirectory() as home:
        repos = populate(hub, a.zoo)
        c = Crawler(CrawlOptions(endpoint=hub.endpoint, home=Path(home)), progress=False)
        t = time.perf_counter()
        s = c.run()
        crawl_s = time.perf_counter() - t
        c.close()
        served = sum(hub.bytes_served.values())
        # baseline: download every weight file whole, following the same redirects
        hub.bytes_served.clear()
        t = time.perf_counter()
        with httpx2.Client(follow_redirects=True) as client:
            for r in repos:
                for name, f in r.files.items():
                    if f.lfs:
                        client.get(f"{hub.endpoint}/{r.repo_id}/resolve/main/{name}").raise_for_status()
        full_s = time.perf_counter() - t
        full = sum(hub.bytes_served.values())
    d = s.as_dict()
    n = d["processed"]
    print(f"zoo {a.zoo}: {n} repos, statuses {d['statuses']}")
    print("\n| | ranged crawl (ours) | full download (baseline) | ratio |\n|---|---|---|---|")
    print(f"| bytes | {served:,} | {full:,} | {served / full:.3f} |")
    print(f"| seconds | {crawl_s:.1f} | {full_s:.1f} (transfer only) | {crawl_s / max(full_s, 1e-9):.1f} |")
    print(f"\n{60 * n / crawl_s:.0f} models/minute (crawl with fingerprinting); phases "
          + ", ".join(f"{k} {v:.1f} s" for k, v in d["phases"].items()))


if __name__ == "__main__":
    main()
