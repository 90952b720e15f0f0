"""One writer per home, across processes: an exclusive ``flock`` on ``$LINEAGE_HOME/writer.lock``.

Why: the graph, the index and the crawl state of a home are each consistent on their own, but placing a
model reads the index and writes all three. Two processes writing one home at once (two crawls, a crawl
beside the service, ``lineage index add`` during a pass) each place models against an index that lacks
the other's, and the index saved last drops the other's entries: a corrupt graph, silently
(``lineage repair`` mends one). Every command that writes takes this lock *before* it loads the index,
and holds it until it is done; the service takes it per writing job, so a command from another shell
gets its turn between passes.

``flock`` is released by the kernel when its holder dies, so a killed process never leaves a stale lock.
A lock is per open file, so two threads of one process that each open the file exclude each other too.
The holder writes who it is into the file (command, pid, host, since when): a waiting writer says whom
it waits for, and one that gives up after ``LINEAGE_WRITER_WAIT`` seconds names the holder in its error.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from lineage.errors import LineageError

LOCK_FILE = "writer.lock"
#: how often a waiting writer tries the lock again (seconds)
POLL = 0.2


class WriterBusyError(LineageError):
    """Another process kept this home's writer lock for longer than the wait allowed."""

    def __init__(self, home: Path, holder: str, waited: float) -> None:
        self.holder = holder
        super().__init__(f"{home} is being written by {holder}; gave up after {waited:g} s "
                         "(LINEAGE_WRITER_WAIT; stop the other writer or try again when it is done)")


def holder(home: Path) -> str | None:
    """Who holds (or last held: the file keeps the name) the writer lock of ``home``, as it wrote itself in; None when nobody ever did."""
    try:
        return (home / LOCK_FILE).read_text("utf-8").strip() or None
    except OSError:
        return None


def held_by(home: Path) -> str | None:
    """Who holds the writer lock of ``home`` right now (None: nobody), without taking it."""
    try:
        with open(home / LOCK_FILE, encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return holder(home) or "another process"
            return None  # closing the file releases the shared lock just taken
    except FileNotFoundError:
        return None


@contextmanager
def writing(home: Path, what: str, wait: float, notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the writer lock of ``home`` for the block, as ``what`` (a command or job name).

    Waits up to ``wait`` seconds for another holder, telling ``notify`` once whom it waits for.

    Raises:
        WriterBusyError: the lock was still held after ``wait`` seconds.
    """
    home.mkdir(parents=True, exist_ok=True)
    f = open(home / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                who = holder(home) or "another process"
                if time.monotonic() >= deadline:
                    raise WriterBusyError(home, who, wait) from None
                if notify is not None and not told:
                    notify(f"waiting for {who} to finish writing {home} (up to {wait:g} s)")
                    told = True
                time.sleep(POLL)
        f.seek(0)
        f.truncate()
        f.write(f"{what} (pid {os.getpid()} on {socket.gethostname()}, "
                f"since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}Z)")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock
