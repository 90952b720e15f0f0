"""lineage.service against the real APScheduler: passes in a row, persistence, coalescing, one scheduler."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hubsim import HubSim
from lineage.cli import main
from lineage.service.jobs import open_runs
from lineage.service.scheduler import ServiceBusyError, control, home_lock, run_service, status
from lineage.settings import Settings


def runs(home: Path, job: str) -> list[tuple[int, str]]:
    # open_runs, not a bare connect: the service creates the file a moment before its tables, and a
    # bare reader in that moment sees "no such table" (a CI run failed on exactly that)
    db = open_runs(home)
    try:
        return [(int(s), str(o)) for s, o in db.execute("SELECT started_ms, outcome FROM run WHERE job=? ORDER BY id",
                                                         (job,))]
    finally:
        db.close()


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
