"""lineage crawl / lineage index add against the loopback Hub stand-in: the CLI over the app, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hubdata import dump_graph

from hubsim import HubSim

ROOT = Path(__file__).parents[2]


def test_crawl_command_json(hub: HubSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lineage.cli import main

    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint, "--json", "--exclude-author", "carol"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["processed"] == 4 and doc["filtered"] == {"author denied": 1}
    assert 0 < doc["bytes_read"] < doc["checkpoint_bytes"]
    r = CliRunner().invoke(main, ["derivatives", "org/base", "--json"])
    assert r.exit_code == 0, r.output
    ids = {x["id"] for x in json.loads(r.stdout)["derivatives"]}
    assert "alice/ft" in ids and "carol/other" not in ids


def test_a_legacy_base_id_gets_its_declares_base_edge_to_the_canonical_model(hub: HubSim, models: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """A card saying ``base_model: base`` (a legacy single-segment id of ``org/base``): the graph has the
    ``DECLARES_BASE`` edge to ``org/base``'s node, and the placement reads the claim."""
    from hubdata import repo, with_card

    from graph.sqlite import SqliteStore
    from lineage.cli import main

    hub.legacy("base", "org/base")
    repo(hub, "erin/legacy", with_card(models["ft"], tmp_path / "legacy-card", "base_model: base\nlicense: llama2"), 20)
    r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint, "--json"], env={"LINEAGE_HOME": str(tmp_path / "h")})
    assert r.exit_code == 0, r.output
    store = SqliteStore(tmp_path / "h" / "graph.sqlite")
    try:
        [legacy] = store.get_models(["erin/legacy"])
        edges = store.declared_edges([legacy.key])
        assert [store.labels([e.dst])[e.dst][0] for e in edges] == ["org/base"]
        assert edges[0].dst == hub.repos["org/base"]._id
    finally:
        store.close()


@pytest.mark.slow
def test_killed_pipeline_converges_to_the_same_graph(hub: HubSim, tmp_path: Path) -> None:
    """`lineage crawl` (crawler + pipeline + store) SIGKILLed mid-run, then resumed, gives the graph an
    uninterrupted crawl gives."""
    from lineage.cli import main

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LINEAGE_HOME": str(tmp_path / "a"),
           "LINEAGE_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    for home in ("a", "b"):  # both stores start with the same base family indexed
        r = CliRunner().invoke(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint],
                               env={"LINEAGE_HOME": str(tmp_path / home)})
        assert r.exit_code == 0, r.output
    hub.delay_s = 0.05
    p = subprocess.Popen([sys.executable, "-m", "lineage", "crawl", "--endpoint", hub.endpoint], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "a" / "crawl" / "crawl.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        try:
            with sqlite3.connect(db, timeout=1) as con:
                if con.execute("SELECT COUNT(*) FROM result").fetchone()[0] >= 2:
                    p.send_signal(signal.SIGKILL)
                    break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.01)
    p.wait(30)
    assert p.returncode == -signal.SIGKILL, "the crawl finished before it could be killed"
    hub.delay_s = 0.0
    for home in ("a", "b"):
        r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint, "--json"],
                               env={"LINEAGE_HOME": str(tmp_path / home), "LINEAGE_DISABLE_PROGRESS_BARS": "1"})
        assert r.exit_code == 0, r.output
    assert dump_graph(tmp_path / "a") == dump_graph(tmp_path / "b")
    assert len(dump_graph(tmp_path / "a")["DERIVED_FROM"]) >= 2


def test_index_add_from_hub_and_gated_message(hub: HubSim, tmp_path: Path) -> None:
    from lineage.cli import main

    env = {"LINEAGE_HOME": str(tmp_path)}
    r = CliRunner().invoke(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint, "--json"],
                           env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["family"] == "base"
    assert 0 < hub.served("org/base") < hub.repos["org/base"].files["model.safetensors"].size
    r = CliRunner().invoke(main, ["index", "add", "meta/gated", "--endpoint", hub.endpoint], env=env)
    assert r.exit_code == 2 and "gated" in r.output and "HF_TOKEN" in r.output
    r = CliRunner().invoke(main, ["index", "bootstrap", "--list", "--json"], env=env)
    listed = json.loads(r.stdout)
    assert r.exit_code == 0 and any(f["family"] == "llama-2" and f["gated"] for f in listed["families"])
    # families whose checkpoints we cannot read are said to be so, never offered for bootstrap
    from fingerprint.architectures import supported_names

    assert all(f["architecture"] in supported_names() for f in listed["families"])
    assert {f["family"] for f in listed["unreadable"]} == {"mamba"}  # a pure state-space model has no attention to read
    r = CliRunner().invoke(main, ["index", "bootstrap", "--family", "mamba"], env=env)
    assert r.exit_code == 2 and "mamba (MambaForCausalLM)" in r.output and "not readable yet" in r.output


def test_crawl_is_one_pass_and_interval_points_to_the_service(tmp_path: Path) -> None:
    from lineage.cli import main

    r = CliRunner().invoke(main, ["crawl", "--interval", "5"], env={"LINEAGE_HOME": str(tmp_path)})
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "lineage service run --crawl-minutes N" in r.output
    assert "--interval" not in CliRunner().invoke(main, ["crawl", "--help"]).output


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub client's and our retries without their waits (the retries themselves still happen)."""
    import huggingface_hub.utils._http as hf_http

    import crawler.http

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the client checks it per request
    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)
    monkeypatch.setattr(crawler.http.time, "sleep", lambda s: None)


@pytest.mark.parametrize("endpoint,says", [
    ("http://hub.invalid", "cannot reach the Hub"),  # DNS failure (the suite refuses to resolve it)
    ("http://127.0.0.1:1", "cannot reach the Hub"),  # connection refused
    ("not-a-url", "bad Hub endpoint 'not-a-url': use an http:// or https:// URL"),
    ("https://", "bad Hub endpoint 'https://': no host name"),
])
def test_network_failures_end_in_one_line(endpoint: str, says: str, tmp_path: Path, no_backoff: None) -> None:
    from lineage.cli import main

    for args in (["crawl", "--endpoint", endpoint], ["index", "bootstrap", "--endpoint", endpoint]):
        r = CliRunner().invoke(main, args, env={"LINEAGE_HOME": str(tmp_path)})
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.count("Error:") == 1 and says in r.stderr.splitlines()[-1], r.stderr
        assert "Traceback" not in r.output and not isinstance(r.exception, AssertionError)


def test_a_5xx_storm_past_the_retries_and_a_bootstrap_that_indexed_nothing(
        hub: HubSim, tmp_path: Path, no_backoff: None) -> None:
    import io
    import logging

    from hubsim import Fault
    from lineage.cli import main
    from lineage.cli.logs import RetryOnce

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(RetryOnce())
    logging.getLogger("huggingface_hub").addHandler(handler)
    hub.inject(Fault("status", "api", 1000, status=503))
    try:
        r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint], env={"LINEAGE_HOME": str(tmp_path)})
    finally:
        logging.getLogger("huggingface_hub").removeHandler(handler)
        hub.faults.clear()
    assert r.exit_code == 2 and r.stderr.splitlines()[-1].startswith("Error: ") and "(HTTP 503)" in r.stderr, r.stderr
    logged = buf.getvalue().splitlines()
    assert len(logged) == 1 and "Retrying in" in logged[0] and "later retries not shown" in logged[0], logged
    # the catalog's bases are not on the stand-in: every one is skipped, and that is a failure
    r = CliRunner().invoke(main, ["index", "bootstrap", "--endpoint", hub.endpoint, "--family", "llama-2"],
                           env={"LINEAGE_HOME": str(tmp_path)})
    assert r.exit_code == 2 and r.stderr.splitlines()[-1].startswith("Error: no base indexed"), r.output


def test_hubsim_on_a_busy_port_or_a_non_zoo_directory_is_one_line(tmp_path: Path, tiny_zoo: Any) -> None:
    import socket

    from zoo.build import default_dir

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "lineage", "hubsim", str(default_dir("tiny")), "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use", r.stderr
    r = subprocess.run([sys.executable, "-m", "lineage", "hubsim", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "manifest.json" in r.stderr and "Traceback" not in r.stderr
