"""``python -m zoo build [--size tiny|small] [--out DIR]``"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zoo.build import Builder, default_dir


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or finish building) a zoo; cached and resumable")
    b.add_argument("--size", choices=["tiny", "small"], default="tiny")
    b.add_argument("--out", type=Path, default=None)
    b.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    t = time.perf_counter()
    out = a.out or default_dir(a.size)
    manifest = Builder(a.size, out, a.quiet).build()
    doc = json.loads(manifest.read_text())
    models = doc["models"]
    size = sum(m["bytes"] for m in models)
    print(f"{len(models)} models in {out} ({size / 1e6:.1f} MB), manifest {manifest}; {time.perf_counter() - t:.0f} s")
    bases = [m for m in models if m["category"] == "base"]
    for m in bases:
        lo = m["losses"]
        print(f"  {m['name']:10s} loss {lo['first']:.3f} -> {lo['last']:.3f} over {lo['steps']} steps")


if __name__ == "__main__":
    main()
