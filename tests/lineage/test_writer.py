"""lineage.writer: one writer per home across processes; the service and ``lineage index add`` at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fingerprint.index import Index
from hubsim import HubSim
from lineage.writer import WriterBusyError, held_by, holder, writing

ROOT = Path(__file__).parents[2]


def test_a_second_writer_waits_then_gives_up_naming_the_holder(tmp_path: Path) -> None:
    told: list[str] = []
    order: list[str] = []
    assert held_by(tmp_path) is None
    with writing(tmp_path, "first", 5):
        assert held_by(tmp_path) == holder(tmp_path) and holder(tmp_path) is not None and holder(tmp_path).startswith(f"first (pid {os.getpid()} ")  # type: ignore[union-attr]
        with pytest.raises(WriterBusyError, match=r"being written by first \(pid .*gave up after 0.3 s"), \
                writing(tmp_path, "second", 0.3, told.append):
            pass
        assert len(told) == 1 and told[0].startswith("waiting for first (pid")

        def later() -> None:  # a thread of the same process is a second writer too (one lock per open file)
            with writing(tmp_path, "third", 10):
                order.append("third")

        t = threading.Thread(target=later)
        t.start()
        time.sleep(0.5)
        order.append("first done")
    t.join(10)
    assert order == ["first done", "third"] and holder(tmp_path).startswith("third")  # type: ignore[union-attr]
    assert held_by(tmp_path) is None  # released: the file still names the last holder


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from lineage.writer import writing\n"
            "with writing(Path(sys.argv[1]), 'doomed', 0):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    with pytest.raises(WriterBusyError, match="doomed"), writing(tmp_path, "me", 0):
        pass
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    with writing(tmp_path, "me", 5):  # the kernel released it with the process
        assert holder(tmp_path).startswith("me")  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_service_and_index_add_at_once_lose_nothing(hub: HubSim, tmp_path: Path) -> None:
    """`lineage service run` crawls (reads slowed, so the pass holds the lock a while) while `lineage index add`
    runs from another shell: with no wait it says in one line who writes; with the default wait it says
    whom it waits for, then adds its base after the pass, and every model of the pass stays indexed."""
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LINEAGE_HOME": str(home), "LINEAGE_HUB_ENDPOINT": hub.endpoint,
           "LINEAGE_WORKERS": "inline", "LINEAGE_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    hub.delay_s = 0.3  # a pass of about 15 s: the lock is still held when the second command starts
    service = subprocess.Popen([sys.executable, "-m", "lineage", "service", "run", "--alerts-minutes", "600",
                                "--sweep-minutes", "6000", "--cards-minutes", "6000", "--rematch-minutes", "6000"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    add = [sys.executable, "-m", "lineage", "index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint]
    try:
        deadline = time.time() + 60
        # every job runs once at start-up: whichever writer takes the lock first reads the weights
        while time.time() < deadline and not (sum(hub.served(r) for r in hub.repos) and held_by(home)):
            time.sleep(0.05)
        assert (held_by(home) or "").startswith("service job "), holder(home)
        busy = subprocess.run(add, env={**env, "LINEAGE_WRITER_WAIT": "0"}, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2, busy.stderr
        assert busy.stderr.count("\n") == 1 and busy.stderr.startswith("Error: ") and "being written by service job " in busy.stderr
        waited = subprocess.run(add, env=env, capture_output=True, text=True, timeout=300)
        assert waited.returncode == 0, waited.stderr
        assert "waiting for service job " in waited.stderr and "indexed org/base (family base" in waited.stdout
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
        hub.delay_s = 0.0
    entries = Index(home / "index").entries
    # the pass's four fingerprinted models (the gated repo is not read) and the added base: nothing lost
    assert set(entries) == {"org/base", "alice/ft", "bob/ft2", "carol/other"}, sorted(entries)
    assert entries["org/base"].family == "base" and entries["org/base"].facts.catalog
