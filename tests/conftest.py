from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Test folders are named after our packages (tests/zoo, tests/graph...); with the checkout on the path
# the real packages always win over those folders as namespace packages.
sys.path.insert(1, str(Path(__file__).parents[1]))

# Ray, wherever the suite imports it first: a loopback-only local cluster and no usage report (both read
# at import; lineage.workers sets the same for the local clusters it starts)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Imported before any fixture sets HF_HUB_OFFLINE (the client reads it once, at import): the suite's own
# client talks to the loopback stand-in however the tests are selected; child processes get the variable.
import huggingface_hub.constants  # noqa: F401
from hubdata import repo
from safetensors.numpy import load_file
from tinymodels import (
    ENCODERS,
    HF_ARCHITECTURES,
    REMOTE_CODE,
    build_encoder,
    build_hf,
    build_llava,
    build_remote_code,
    perturb,
    save_state_dict,
    write_wordlevel_tokenizer,
)

from hubsim import HubSim

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
    # In-process crawls fingerprint inline: a spawned pool per CliRunner call would add seconds each, and
    # its workers would import huggingface_hub afresh under HF_HUB_OFFLINE. tests/lineage/test_workers.py
    # and the service kill test run the default pool (and Ray) for real.
    monkeypatch.setenv("LINEAGE_WORKERS", "inline")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny fixed-seed model per supported HF architecture, plus a LLaVA wrapper."""
    root = tmp_path_factory.mktemp("tiny")
    out = {name: build_hf(name, root / name) for name in HF_ARCHITECTURES}
    out |= {name: build_encoder(name, root / name) for name in ENCODERS}
    out |= {name: build_remote_code(name, root / name) for name in REMOTE_CODE}
    out["llava"] = build_llava(root / "llava")
    return out


@pytest.fixture(scope="session")
def bolt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Bolt + Cypher server (ArcadeDB from PyPI) for the Neo4j backend, one per session."""
    from boltserver import bolt_server

    with bolt_server(tmp_path_factory.mktemp("arcadedb")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_zoo() -> Any:
    """The tiny zoo (built once into the shared zoo cache, where `lineage demo` builds it too, about a minute on 2 cores), as its manifest."""
    from zoo.build import Builder, default_dir
    from zoo.manifest import read_manifest

    out = default_dir("tiny")
    Builder("tiny", out, quiet=True).build()
    return read_manifest(out)


@pytest.fixture(scope="session")
def one_crawl(tiny_zoo: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny zoo crawled once, in publication order, by one process (about 25 s): the graph every
    other crawl order, and every repair, must reproduce. ``home``: its home, not to be written."""
    from crawlorder import crawl_in_order

    home = tmp_path_factory.mktemp("one-crawl") / "home"
    return {"home": home, **crawl_in_order(tiny_zoo.root, home)}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base, two fine-tunes (one of them two generations down) and an unrelated base, on disk."""
    root = tmp_path_factory.mktemp("hubmodels")
    base = build_hf("llama", root / "base", seed=1)
    write_wordlevel_tokenizer(base, json.loads((base / "config.json").read_text())["vocab_size"])
    cfg = json.loads((base / "config.json").read_text())
    sd = load_file(str(base / "model.safetensors"))
    out = {"base": base}
    ft = perturb(sd, 0.02, seed=2)
    out["ft"] = save_state_dict(ft, cfg, root / "ft", tokenizer_from=base)
    out["ft2"] = save_state_dict(perturb(ft, 0.02, seed=3), cfg, root / "ft2", tokenizer_from=base)
    other = build_hf("llama", root / "other", seed=9)
    write_wordlevel_tokenizer(other, cfg["vocab_size"])
    out["other"] = other
    for name, card in [("ft", "base_model: org/base\nlicense: llama2"), ("ft2", "license: apache-2.0")]:
        (out[name] / "README.md").write_text(f"---\n{card}\n---\n# {name}\n")
    return out


@pytest.fixture()
def hub(models: dict[str, Path]) -> Any:
    with HubSim(page_size=2) as sim:
        repo(sim, "org/base", models["base"], 1)
        repo(sim, "alice/ft", models["ft"], 2)
        repo(sim, "bob/ft2", models["ft2"], 3)
        repo(sim, "carol/other", models["other"], 4)
        repo(sim, "meta/gated", models["base"], 5, gated="manual")
        yield sim


@pytest.fixture
def loaded() -> None:
    """The hand-built graph of ``tests/graphdata.py`` in this test's home (``$LINEAGE_HOME/graph.sqlite``)."""
    from graphdata import load

    from graph.sqlite import SqliteStore

    s = SqliteStore(Path(os.environ["LINEAGE_HOME"]) / "graph.sqlite")
    s.ensure_schema()
    load(s)
    s.close()


#: Fixtures that make a test slow wherever it is: the tiny zoo (a minute to build on a fresh machine) and
#: the Bolt server (a JVM). Tests using them are marked ``slow``, so ``-m "not slow"`` is a quick first check.
SLOW_FIXTURES = frozenset({"tiny_zoo", "bolt"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        neo4j = "neo4j" in getattr(getattr(item, "callspec", None), "params", {}).values()  # asks for the Bolt server
        if neo4j or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
