"""lineage.service against the real APScheduler: passes in a row, persistence, coalescing, one scheduler."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hubdata import dump_graph as hub_graph

from hubsim import HubSim
from lineage.cli import main
from lineage.service.runs import ServiceRecord
from lineage.service.scheduler import ServiceBusyError, control, home_lock, run_service, status
from lineage.settings import Settings

ROOT = Path(__file__).parents[2]


def runs(home: Path, job: str) -> list[tuple[int, str]]:
    # through the service's record, not a bare connect: the service creates the file a moment before its
    # tables, and a bare reader in that moment sees "no such table" (a CI run failed on exactly that)
    with ServiceRecord(home) as record:
        return record.runs(job)


@contextmanager
def service(settings: Settings, minutes: dict[str, float]) -> Iterator[threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=run_service, args=(settings, minutes, stop), daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        t.join(60)


def wait(cond: Any, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not cond():
        time.sleep(0.1)


def test_three_crawl_passes_in_a_row(hub: HubSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `lineage crawl` without --once used to fail every pass after the first (a SQLite handle shared
    # across the scheduler's threads) while the process stayed up: each pass must now succeed.
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HUB_ENDPOINT", hub.endpoint)
    s = Settings.from_env()
    with service(s, {"crawl": 1 / 60}):
        wait(lambda: (tmp_path / "service.sqlite").exists() and len([r for r in runs(tmp_path, "crawl") if r[1] != "running"]) >= 3, 120)
    done = [o for _, o in runs(tmp_path, "crawl") if o != "running"]
    assert len(done) >= 3 and set(done) == {"ok"}, done
    doc = status(s)
    assert doc["jobs"]["crawl"]["last"]["summary"]["discovered"] == 0  # later passes find nothing new
    assert doc["jobs"]["crawl"]["runs"] >= 3 and not doc["running"]
    with sqlite3.connect(tmp_path / "crawl" / "crawl.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM result").fetchone()[0] == 5


@pytest.mark.slow
def test_jobs_survive_a_restart_and_missed_runs_coalesce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    s = Settings.from_env()
    with service(s, {"alerts": 1 / 60}):
        wait(lambda: (tmp_path / "service.sqlite").exists() and len(runs(tmp_path, "alerts")) >= 1, 30)
    stored = status(s)["jobs"]["alerts"]
    assert stored["every_seconds"] == 1.0 and stored["next_run"] is not None  # the job is in the store
    time.sleep(4.5)  # four runs are missed while no service runs
    before = len(runs(tmp_path, "alerts"))
    restart = time.time() * 1000
    with service(s, {"alerts": 1 / 60}):
        time.sleep(0.9)
        early = [t for t, _ in runs(tmp_path, "alerts")[before:] if t - restart < 900]
    # the four missed runs ran once, at start-up; at most one regular tick (the trigger stays aligned to its
    # start) can follow within the second: without coalescing there would be five
    assert 1 <= len(early) <= 2, early
    assert status(s)["jobs"]["alerts"]["next_run"] is not None


def test_one_scheduler_per_home_and_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    s = Settings.from_env()
    with service(s, {"alerts": 60.0}):
        wait(lambda: (tmp_path / "service.lock").exists() and status(s)["running"], 10)
        with pytest.raises(ServiceBusyError, match="pid"), home_lock(tmp_path):
            pass
        r = CliRunner().invoke(main, ["service", "run"], env={"LINEAGE_HOME": str(tmp_path)})
        assert r.exit_code == 2 and r.output.startswith("Error: a service already runs on") and "pid" in r.output
        assert control(s, "pause", "alerts") == "ok" and status(s)["jobs"]["alerts"]["paused"]
        assert control(s, "resume", "alerts") == "ok"
        assert control(s, "run-now", "alerts") == "ok"
        wait(lambda: len(runs(tmp_path, "alerts")) >= 1, 20)
        assert runs(tmp_path, "alerts")[0][1] in ("ok", "running")
    r = CliRunner().invoke(main, ["service", "status", "--json"], env={"LINEAGE_HOME": str(tmp_path)})
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and not doc["running"] and doc["jobs"]["alerts"]["last"]["outcome"] == "ok"
    r = CliRunner().invoke(main, ["service", "pause", "alerts"], env={"LINEAGE_HOME": str(tmp_path)})
    assert r.exit_code == 0 and "ok" in r.output  # no service running: applied to the job store
    assert status(s)["jobs"]["alerts"]["paused"]


def _served(hub: HubSim) -> dict[str, int]:
    return {r: hub.served(r) for r in hub.repos}


@pytest.mark.slow
def test_sigkill_mid_pass_then_restart_reads_only_the_models_in_flight(
        hub: HubSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lineage service run` (default local worker pool) SIGKILLed mid-pass, then restarted: the graph and
    the crawl state equal an uninterrupted run's, and only the models in flight at the kill are read again."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the service and its workers talk to the stand-in
    ref_home, home = tmp_path / "ref", tmp_path / "killed"
    for h in (ref_home, home):
        r = CliRunner().invoke(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint],
                               env={"LINEAGE_HOME": str(h)})
        assert r.exit_code == 0, r.output
    before = _served(hub)
    r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint, "--json"],
                           env={"LINEAGE_HOME": str(ref_home)})
    assert r.exit_code == 0, r.output
    once = {k: v - before[k] for k, v in _served(hub).items()}  # one uninterrupted read of each repo
    assert sum(1 for v in once.values() if v) == 4  # the gated repo's weights are never read

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LINEAGE_HOME": str(home), "LINEAGE_HUB_ENDPOINT": hub.endpoint,
           "LINEAGE_WORKERS": "local", "LINEAGE_WORKER_COUNT": "2"}
    hub.delay_s = 0.1
    start = _served(hub)
    cmd = [sys.executable, "-m", "lineage", "service", "run", "--alerts-minutes", "600", "--sweep-minutes", "6000"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if sum(_served(hub).values()) > sum(start.values()) + 10_000:  # the pool is mid-read
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    time.sleep(1.0)  # orphaned workers notice within 0.2 s and exit
    at_kill = _served(hub)
    with sqlite3.connect(home / "crawl" / "crawl.sqlite") as con:
        done = {str(r) for (r,) in con.execute("SELECT id FROM result")}
        claimed = {str(r) for (r,) in con.execute("SELECT id FROM queue WHERE status='claimed'")}
    assert claimed, "the pass finished before the kill"
    hub.delay_s = 0.0
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(lambda: len(runs(home, "crawl")) >= 2 and runs(home, "crawl")[-1][1] == "ok", 120)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    assert [o for _, o in runs(home, "crawl")] == ["interrupted", "ok"], {j: runs(home, j) for j in ("crawl", "sweep", "cards", "rematch", "alerts")}
    after = _served(hub)
    for r, n in once.items():
        again = after[r] - at_kill[r]
        if r in done:
            assert again == 0, f"{r} was finished before the kill and was read again"
        else:  # in flight at the kill (read again whole) or not started
            assert again == n, (r, again, n)
            assert r in claimed or at_kill[r] == start[r], f"{r} was read before the kill without a claim"
    assert hub_graph(ref_home) == hub_graph(home)
    with sqlite3.connect(ref_home / "crawl" / "crawl.sqlite") as a, sqlite3.connect(home / "crawl" / "crawl.sqlite") as b:
        q = "SELECT id, sha, status, json_extract(record, '$.bytes_read') FROM result ORDER BY id"
        assert a.execute(q).fetchall() == b.execute(q).fetchall()


@pytest.mark.slow
def test_the_alerts_job_runs_while_a_long_crawl_pass_holds_the_writer(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # with one shared pool of two threads, a crawl pass and a sweep waiting for the writer lock held both,
    # and no alerts ran for as long as the crawl took
    from lineage.app import writing_home
    from lineage.service import jobs

    held: list[tuple[float, float]] = []

    def holding(seconds: float) -> Any:
        def job(settings: Settings) -> dict[str, Any]:
            with writing_home(settings, "slow job"):
                t = time.time()
                time.sleep(seconds)
                held.append((t, time.time()))
            return {}
        return job

    for name, seconds in (("crawl", 6.0), ("sweep", 6.0), ("cards", 0.1), ("rematch", 0.1)):
        monkeypatch.setitem(jobs.JOBS, name, jobs.JobSpec(holding(seconds), jobs.JOBS[name].minutes, "slow", writes=True))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    s = Settings.from_env()
    with service(s, {"crawl": 60.0, "sweep": 60.0, "cards": 60.0, "rematch": 60.0, "alerts": 1 / 60}):
        wait(lambda: (tmp_path / "service.sqlite").exists() and len(runs(tmp_path, "alerts")) >= 3 and len(held) >= 1, 30)
        writers = [r for j in ("crawl", "sweep", "cards", "rematch") for r in runs(tmp_path, j)]
        alerts = runs(tmp_path, "alerts")
    first_writer = min(t for t, _ in writers)
    # three alerts runs within six seconds of the first writer: the readers never waited behind a long pass
    assert len(alerts) >= 3 and all(t - first_writer < 6000 for t, _ in alerts[:3]), (alerts, writers)
    # every writer job started (and was recorded) at once, and they took turns on the writer lock
    assert len(writers) == 4 and max(t for t, _ in writers) - first_writer < 3000, writers
    spans = sorted(held)
    assert all(b[0] >= a[1] - 0.05 for a, b in itertools.pairwise(spans)), spans


def test_status_after_a_kill_calls_the_cut_run_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # after a kill -9, status said no service runs but showed the killed job as `running`
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    with ServiceRecord(tmp_path) as record:
        record.start_run("crawl")  # what a killed service leaves behind
    doc = status(Settings.from_env())
    assert not doc["running"] and doc["jobs"]["crawl"]["last"]["outcome"] == "interrupted"


def test_the_alerts_job_does_not_open_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that places nothing never loads the index (at a million entries that took over a minute): the
    alerts job runs on a home whose index could not even be read."""
    from fingerprint.errors import FingerprintIndexError
    from lineage.app import open_app
    from lineage.service import jobs

    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.json").write_text("{not json", "utf-8")
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    s = Settings.from_env()
    doc = jobs.alerts(s)
    assert doc["findings"] == 0 and doc["sync"]["opened"] == 0
    with open_app(s) as app, pytest.raises(FingerprintIndexError):  # a job that places models does load it
        _ = app.index
