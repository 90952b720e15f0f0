"""Worker scaling: models/minute and bytes read through the app's crawl with 1 and 2 local workers and
with Ray (2 actors), in one run, against the loopback stand-in serving a zoo.

    python -m bench.service [--zoo DIR] [--no-ray]     # default: the small zoo
    python -m bench.service --shape 1B --count 6       # fingerprinting dominates: six 1B-shaped models

With ``--shape``, the stand-in serves ``--count`` synthetic checkpoints of that shape
(:func:`bench.fingerprint.write_shape`, distinct seeds, sparse files of the real size) instead of a zoo:
each costs seconds of fingerprinting and little matching, so the workers' scaling shows without the
driver's share (matching, graph writes) that dominates the small zoo's tiny models.

Each row is a fresh home: the full pass (listing, metadata, ranged reads, sketches on the workers,
matching and graph writes in the driver) timed after the Ray actors are up (their start-up shown apart);
local workers are spawned at the start of the pass and import torch inside it (about 3 s). The baseline is one local worker in the same run; the ratio is models/minute against it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def run(endpoint: str, workers: str, count: int, home: Path) -> dict[str, Any]:
    from lineage.app import open_app
    from lineage.settings import Settings

    env = {**os.environ, "LINEAGE_HOME": str(home), "LINEAGE_WORKERS": workers, "LINEAGE_WORKER_COUNT": str(count),
           "LINEAGE_DISABLE_PROGRESS_BARS": "1"}
    with open_app(Settings.from_env(env)) as app:
        t = time.perf_counter()
        ex = app.executor()
        start = getattr(ex, "start", None)
        if start is not None:
            start()
        pids = getattr(ex, "pids", None)
        if workers == "ray" and pids is not None:
            pids()  # waits until every actor is up
        started = time.perf_counter() - t
        t = time.perf_counter()
        s = app.crawl(app.crawler(endpoint, progress=False))
        secs = time.perf_counter() - t
    d = s.as_dict()
    return {"start": started, "seconds": secs, "processed": d["processed"], "bytes": d["bytes_read"],
            "statuses": d["statuses"], "fingerprint": d["phases"].get("fingerprint", 0.0)}


def shape_repos(hub: Any, shape: str, count: int) -> list[Any]:
    """``count`` synthetic checkpoints of ``shape`` served as public repos a minute apart."""
    from datetime import timedelta

    from bench.fingerprint import write_shape
    from hubsim import SimRepo, files_of
    from lineage.zoohub import EPOCH

    out = []
    for i in range(count):
        t = EPOCH + timedelta(minutes=i + 1)
        files = {k: v for k, v in files_of(write_shape(shape, seed=100 + i)).items() if k != "done"}
        out.append(hub.add(SimRepo(f"synthetic/{shape.lower()}-{i}", files, created_at=t, last_modified=t)))
    return out


def main() -> None:
    from hubsim import HubSim
    from lineage.zoohub import populate
    from zoo.build import default_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=default_dir("small"))
    p.add_argument("--no-ray", action="store_true", help="skip the Ray row (ray not installed)")
    p.add_argument("--shape", default=None, help="serve synthetic checkpoints of this bench.fingerprint shape")
    p.add_argument("--count", type=int, default=6)
    a = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = [("local", 1), ("local", 2)] + ([] if a.no_ray else [("ray", 2)])
    out: dict[tuple[str, int], dict[str, Any]] = {}
    with HubSim() as hub, tempfile.TemporaryDirectory() as tmp:
        repos = populate(hub, a.zoo) if a.shape is None else shape_repos(hub, a.shape, a.count)
        for workers, n in rows:
            out[(workers, n)] = run(hub.endpoint, workers, n, Path(tmp) / f"{workers}-{n}")
            if workers == "ray":
                import ray

                ray.shutdown()
    base = out[("local", 1)]
    print(f"{'zoo ' + str(a.zoo) if a.shape is None else f'{a.count} synthetic {a.shape}-shaped models'}: {len(repos)} repos; {os.cpu_count()} CPU cores; statuses {base['statuses']}")
    print("\n| workers | start-up (s) | pass (s) | models/min | bytes read | vs 1 local worker |")
    print("|---|---|---|---|---|---|")
    for (workers, n), r in out.items():
        rate = 60 * r["processed"] / r["seconds"]
        ratio = rate / (60 * base["processed"] / base["seconds"])
        start = f"{r['start']:.1f}" if workers == "ray" else "in the pass"
        print(f"| {workers} × {n} | {start} | {r['seconds']:.1f} | {rate:.0f} | {r['bytes']:,} | {ratio:.2f}× |")
    same = len({r["bytes"] for r in out.values()}) == 1 and len({str(r["statuses"]) for r in out.values()}) == 1
    print(f"\nbytes read and statuses equal across rows: {same}")


if __name__ == "__main__":
    main()
