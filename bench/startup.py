"""Start-up cost of the command line: every command's ``--help``, ``lineage inspect`` and ``lineage compare``
of two tiny-zoo models, each a fresh process, wall time (median of ``--repeat``), in the same run.

    python -m bench.startup [--repeat 3] [--zoo DIR]

The comparison itself takes a fraction of a second at d=64, so ``compare``'s time is mostly start-up:
the target is ``compare`` ≤ 2× ``inspect`` (a user waits for imports, not for math). Needs the tiny zoo
(``python -m zoo build --size tiny``, or the cache ``lineage demo`` built).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _wall(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lineage", *args], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main() -> None:
    from zoo.build import default_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--zoo", type=Path, default=default_dir("tiny"))
    a = p.parse_args()
    if not (a.zoo / "manifest.json").exists():
        raise SystemExit(f"no zoo at {a.zoo}: python -m zoo build --size tiny")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    from gen_reference import commands  # the same command list the CLI reference is generated from

    from lineage.cli import main as cli

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LINEAGE_HOME": home, "LINEAGE_DISABLE_PROGRESS_BARS": "1"}
        rows: list[tuple[str, float]] = []

        def measure(label: str, args: list[str]) -> float:
            t = statistics.median(_wall(args, env) for _ in range(a.repeat))
            rows.append((label, t))
            return t

        measure("lineage --help", ["--help"])
        for path, _ in commands(cli):
            measure(f"lineage {' '.join(path)} --help", [*path, "--help"])
        inspect = measure("lineage inspect llama-a", ["inspect", str(a.zoo / "llama-a")])
        compare = measure("lineage compare llama-a llama-a-sft", ["compare", str(a.zoo / "llama-a"),
                                                                   str(a.zoo / "llama-a-sft")])
    print(f"start-up, wall seconds, median of {a.repeat} fresh processes\n")
    print("| command | seconds | vs inspect |\n|---|---|---|")
    for label, t in rows:
        print(f"| `{label}` | {t:.2f} | {t / inspect:.2f}× |")
    print(f"\ncompare / inspect = {compare / inspect:.2f} (target ≤ 2)")


if __name__ == "__main__":
    main()
