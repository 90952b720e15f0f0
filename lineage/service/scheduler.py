"""``lineage service run``: one APScheduler 3 scheduler per home, with persistent jobs.

* Jobs live in ``$LINEAGE_HOME/jobs.sqlite`` (SQLAlchemy job store) as references to
  :func:`lineage.service.jobs.run`, so they survive a restart with their next run time; runs missed
  while the service was down coalesce into one (``coalesce=True``, misfire grace = the interval).
* ``max_instances=1``: a pass that overruns its interval is not stacked; interval jitter spreads passes.
* Exactly one scheduler per home: an exclusive ``flock`` on ``$LINEAGE_HOME/service.lock``; a second
  ``service run`` says who holds it and exits 2 (APScheduler 3 cannot share a job store).
* Control (pause, resume, run now) reaches a running service through a table it polls every second;
  without a running service the command applies it to the job store itself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, TextIO

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from lineage.errors import LineageError
from lineage.service.jobs import JOBS
from lineage.service.runs import ServiceRecord
from lineage.settings import Settings

LOG = logging.getLogger("lineage.service")
ACTIONS = ("pause", "resume", "run-now")


class ServiceBusyError(LineageError):
    """Another scheduler holds this home."""


@contextmanager
def home_lock(home: Path) -> Iterator[TextIO]:
    """Hold ``$LINEAGE_HOME/service.lock`` exclusively, or raise :class:`ServiceBusyError` naming the holder."""
    home.mkdir(parents=True, exist_ok=True)
    f = open(home / "service.lock", "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ServiceBusyError(f"a service already runs on {home} ({holder})") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}Z")
    f.flush()
    try:
        yield f
    finally:
        f.close()


def scheduler(home: Path) -> BackgroundScheduler:
    """A scheduler over the home's job store (not started)."""
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{home / 'jobs.sqlite'}")},
        # Readers (alerts) have a pool of their own, so a long crawl pass never keeps them waiting (with one
        # shared pool of two, a crawl and a sweep waiting for the writer lock held both threads and no alerts
        # ran for as long as the crawl took). Writers get a thread each: every due writer starts, is recorded
        # as running and then takes its turn on the writer lock (lineage.writer); queued in a pool instead, a job submitted but not
        # started would vanish with a killed process, unrecorded, so the restart would not run it again.
        executors={"writers": {"type": "threadpool", "max_workers": sum(j.writes for j in JOBS.values())},
                   "readers": {"type": "threadpool", "max_workers": max(1, sum(not j.writes for j in JOBS.values()))},
                   "default": {"type": "threadpool", "max_workers": 1}},
        job_defaults={"coalesce": True, "max_instances": 1}, timezone="UTC")


def ensure_jobs(sched: BackgroundScheduler, minutes: dict[str, float]) -> None:
    """Add the jobs the store lacks (each runs once at once); keep stored ones (their next run time
    survives a restart) unless their interval changed."""
    for name, every in minutes.items():
        seconds = max(1.0, every * 60)
        job = sched.get_job(name)
        executor = JOBS[name].executor
        if (job is not None and abs(job.trigger.interval.total_seconds() - seconds) < 1e-6
                and job.executor == executor):
            continue
        jitter = int(min(30.0, seconds / 10))
        # a new job runs at once, unless it only follows up on others' work (typing edges a crawl placed)
        first = {"next_run_time": datetime.now(timezone.utc)} if job is None and JOBS[name].at_start else {}
        sched.add_job("lineage.service.jobs:run", "interval", args=[name], id=name, name=name, seconds=seconds,
                      jitter=jitter or None, coalesce=True, max_instances=1, misfire_grace_time=int(seconds) + 1,
                      executor=executor, replace_existing=True, **first)


def _logging(home: Path) -> None:
    log = logging.getLogger("lineage")
    if not any(isinstance(h, RotatingFileHandler) for h in log.handlers):
        h = RotatingFileHandler(home / "service.log", maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)


def _apply(sched: BackgroundScheduler, action: str, job: str) -> str:
    if sched.get_job(job) is None:
        return f"no job {job!r}"
    if action == "pause":
        sched.pause_job(job)
    elif action == "resume":
        sched.resume_job(job)
    else:
        sched.modify_job(job, next_run_time=datetime.now(timezone.utc))
    return "ok"


def _poll_control(sched: BackgroundScheduler, home: Path) -> None:
    with ServiceRecord(home) as record:
        for cid, action, job in record.open_requests():
            result = _apply(sched, action, job)
            record.answer(cid, result)
            LOG.info("control %s %s: %s", action, job, result)


def run_service(settings: Settings, minutes: dict[str, float], stop: threading.Event | None = None) -> None:
    """Run the scheduler in the foreground until SIGINT/SIGTERM (or ``stop``)."""
    home = settings.home
    with home_lock(home):
        _logging(home)
        with ServiceRecord(home) as record:  # runs cut short by a kill: say so, and run those jobs again at once
            cut = record.interrupt_running()
        sched = scheduler(home)
        sched.start(paused=True)
        ensure_jobs(sched, minutes)
        for name in sorted(cut & set(minutes)):
            if sched.get_job(name) is not None and sched.get_job(name).next_run_time is not None:  # not paused
                LOG.info("%s was interrupted by the last stop: running it again now", name)
                sched.modify_job(name, next_run_time=datetime.now(timezone.utc))
        sched.resume()
        LOG.info("service started on %s: %s", home, ", ".join(f"{k} every {v:g} min" for k, v in minutes.items()))
        done = stop or threading.Event()
        if stop is None and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: done.set())
        try:
            while not done.wait(1.0):
                _poll_control(sched, home)
        finally:
            # paused first, so the scheduler thread stops handing due runs to an executor shutting down
            sched.pause()
            sched.shutdown(wait=True)
            LOG.info("service stopped")


def control(settings: Settings, action: str, job: str, timeout: float = 10.0) -> str:
    """Pause, resume or run a job now: through the running service, or on the job store when none runs."""
    if action not in ACTIONS:
        raise LineageError(f"unknown action {action!r}; use {', '.join(ACTIONS)}")
    if job not in JOBS:
        raise LineageError(f"unknown job {job!r}; jobs are {', '.join(JOBS)}")
    home = settings.home
    try:
        with home_lock(home):  # no service runs: act on the store directly
            sched = scheduler(home)
            sched.start(paused=True)
            try:
                return _apply(sched, action, job) if action != "run-now" else _run_now_offline(job)
            finally:
                sched.shutdown(wait=False)
    except ServiceBusyError:
        pass
    with ServiceRecord(home) as record:
        cid = record.request(action, job)
        deadline = time.time() + timeout
        while time.time() < deadline:
            answer = record.answer_of(cid)
            if answer is not None:
                return answer
            time.sleep(0.2)
        return "queued (the service has not picked it up yet)"


def _run_now_offline(job: str) -> str:
    from lineage.service.jobs import run

    run(job)
    return "ran"


def status(settings: Settings) -> dict[str, Any]:
    """What ran, when, with what outcome; each job's next run; who holds the home."""
    home = settings.home
    holder = (home / "service.lock").read_text("utf-8").strip() if (home / "service.lock").exists() else ""
    running = False
    try:
        with home_lock(home):
            pass
    except ServiceBusyError:
        running = True
    jobs: dict[str, Any] = {}
    if (home / "jobs.sqlite").exists():
        store = SQLAlchemyJobStore(url=f"sqlite:///{home / 'jobs.sqlite'}")
        store.start(None, "default")  # read-only use of the store: no scheduler needed
        try:
            for j in store.get_all_jobs():
                jobs[j.id] = {"next_run": j.next_run_time.isoformat() if j.next_run_time else None,
                              "paused": j.next_run_time is None,
                              "every_seconds": j.trigger.interval.total_seconds()}
        finally:
            store.shutdown()
    with ServiceRecord(home) as record:
        for name in JOBS:
            n, last = record.last_run(name)
            if last is not None and last["outcome"] == "running" and not running:
                last["outcome"] = "interrupted"  # no service holds the home: that run was cut short by a stop
            jobs.setdefault(name, {"next_run": None, "paused": None, "every_seconds": None})
            jobs[name].update({"runs": n, "last": last})
    return {"home": str(home), "running": running, "holder": holder if running else None, "jobs": jobs}
