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
    r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint, "--once", "--json", "--exclude-author", "carol"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["processed"] == 4 and doc["filtered"] == {"author denied": 1}
    assert 0 < doc["bytes_read"] < doc["checkpoint_bytes"]
    r = CliRunner().invoke(main, ["derivatives", "org/base", "--json"])
    assert r.exit_code == 0, r.output
    ids = {x["id"] for x in json.loads(r.stdout)["derivatives"]}
    assert "alice/ft" in ids and "carol/other" not in ids


def test_killed_pipeline_converges_to_the_samedump_graph(hub: HubSim, tmp_path: Path) -> None:
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
    p = subprocess.Popen([sys.executable, "-m", "lineage", "crawl", "--endpoint", hub.endpoint, "--once"], env=env,
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
        r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint, "--once", "--json"],
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
    assert r.exit_code == 0 and any(f["family"] == "llama-2" and f["gated"] for f in json.loads(r.stdout))


def test_crawl_without_once_keeps_watching(hub: HubSim, tmp_path: Path) -> None:
    """Every pass after the first used to fail (a SQLite handle used from a scheduler thread) while the
    process stayed up: three passes in a row must each report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LINEAGE_HOME": str(tmp_path), "LINEAGE_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    p = subprocess.Popen([sys.executable, "-m", "lineage", "crawl", "--endpoint", hub.endpoint, "--interval", "0.005",
                          "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    docs: list[dict[str, Any]] = []
    buf = ""
    deadline = time.time() + 120
    assert p.stdout is not None
    while len(docs) < 3 and time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        buf += line
        if line.startswith("}"):
            docs.append(json.loads(buf))
            buf = ""
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert len(docs) == 3, err
    assert docs[0]["processed"] == 5 and docs[1]["processed"] == docs[2]["processed"] == 0
    assert "Traceback" not in err and "stopped; the next run resumes" in err
