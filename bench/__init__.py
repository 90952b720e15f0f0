"""Benchmarks, the synthetic model zoo and the evaluation harness (not imported by the packages)."""


def provenance() -> str:
    """``commit C, method version V, N CPUs, load L``: what a benchmark's figures were measured at."""
    import os
    import subprocess

    from fingerprint.similarity.verdict import METHOD_VERSION

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return f"commit {commit}, method version {METHOD_VERSION}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
