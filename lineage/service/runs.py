"""The service's own state, ``$LINEAGE_HOME/service.sqlite``: the record of every job run and the control
requests (pause, resume, run-now) that the CLI leaves for a running service.

This module is the only one that reads or writes those tables; :mod:`lineage.service.jobs` records runs
through it and :mod:`lineage.service.scheduler` polls and answers control requests through it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from graph.sqlitedb import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER,
    outcome TEXT NOT NULL, summary TEXT);
CREATE INDEX IF NOT EXISTS run_job ON run (job, id);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, job TEXT NOT NULL, requested_ms INTEGER NOT NULL,
    done_ms INTEGER, result TEXT);
"""


def _now() -> int:
    return int(time.time() * 1000)


class ServiceRecord:
    """``service.sqlite`` of one home (see module docstring); a context manager that closes it."""

    def __init__(self, home: Path) -> None:
        self.db: sqlite3.Connection = connect(home / "service.sqlite", SCHEMA)

    def __enter__(self) -> ServiceRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # -- runs ---------------------------------------------------------------------------------------
    def start_run(self, job: str) -> int:
        """Record that ``job`` started now; returns the run's id."""
        with transaction(self.db) as con:
            return int(con.execute("INSERT INTO run (job, started_ms, outcome) VALUES (?, ?, 'running')",
                                   (job, _now())).lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, summary: Any) -> None:
        with transaction(self.db) as con:
            con.execute("UPDATE run SET finished_ms=?, outcome=?, summary=? WHERE id=?",
                        (_now(), outcome, json.dumps(summary, default=str), run_id))

    def interrupt_running(self) -> set[str]:
        """Mark the runs a kill cut short ``interrupted``; returns their jobs."""
        with transaction(self.db) as con:
            cut = {str(j) for (j,) in con.execute("SELECT DISTINCT job FROM run WHERE outcome='running'")}
            con.execute("UPDATE run SET outcome='interrupted' WHERE outcome='running'")
        return cut

    def runs(self, job: str) -> list[tuple[int, str]]:
        """``(started_ms, outcome)`` of every run of ``job``, oldest first."""
        return [(int(s), str(o)) for s, o in self.db.execute(
            "SELECT started_ms, outcome FROM run WHERE job=? ORDER BY id", (job,))]

    def last_run(self, job: str) -> tuple[int, dict[str, Any] | None]:
        """How many runs ``job`` had, and the latest one (started, finished, outcome, summary)."""
        row = self.db.execute("SELECT started_ms, finished_ms, outcome, summary FROM run WHERE job=? ORDER BY id DESC "
                              "LIMIT 1", (job,)).fetchone()
        n = int(self.db.execute("SELECT COUNT(*) FROM run WHERE job=?", (job,)).fetchone()[0])
        last = ({"started_ms": row[0], "finished_ms": row[1], "outcome": row[2],
                 "summary": json.loads(row[3]) if row[3] else None} if row else None)
        return n, last

    # -- control requests ---------------------------------------------------------------------------
    def request(self, action: str, job: str) -> int:
        """Leave a control request for the running service; returns its id."""
        with transaction(self.db) as con:
            return int(con.execute("INSERT INTO control (action, job, requested_ms) VALUES (?, ?, ?)",
                                   (action, job, _now())).lastrowid or 0)

    def open_requests(self) -> list[tuple[int, str, str]]:
        """``(id, action, job)`` of the requests not answered yet, oldest first."""
        rows = self.db.execute("SELECT id, action, job FROM control WHERE done_ms IS NULL ORDER BY id").fetchall()
        return [(int(i), str(a), str(j)) for i, a, j in rows]

    def answer(self, request_id: int, result: str) -> None:
        with transaction(self.db) as con:
            con.execute("UPDATE control SET done_ms=?, result=? WHERE id=?", (_now(), result, request_id))

    def answer_of(self, request_id: int) -> str | None:
        """The service's answer to a request, once it has one."""
        row = self.db.execute("SELECT result FROM control WHERE id=? AND done_ms IS NOT NULL", (request_id,)).fetchone()
        return str(row[0]) if row else None
