from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodels import HF_ARCHITECTURES, build_hf, build_llava

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Any:
    """Nothing in the suite may reach a non-loopback address: every connect is checked."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"test suite tried to reach a non-loopback address: {address!r}")
        return real(self, address)

    real_lookup = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (*LOOPBACK, None) and not str(host).startswith("127."):
            raise socket.gaierror(f"test suite tried to resolve a non-loopback host: {host!r}")
        return real_lookup(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every cache and store of a test inside its own temporary directory."""
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / "lineage-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("LINEAGE_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny fixed-seed model per supported HF architecture, plus a LLaVA wrapper."""
    root = tmp_path_factory.mktemp("tiny")
    out = {name: build_hf(name, root / name) for name in HF_ARCHITECTURES}
    out["llava"] = build_llava(root / "llava")
    return out


@pytest.fixture(scope="session")
def bolt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Bolt + Cypher server (ArcadeDB from PyPI) for the Neo4j backend, one per session."""
    from bench.boltserver import bolt_server

    with bolt_server(tmp_path_factory.mktemp("arcadedb")) as server:
        yield server
