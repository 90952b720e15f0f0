"""Fingerprint workers: where the unit of work (:func:`crawler.fetch.fingerprint_repo`) runs.

An executor is a crawler :data:`~crawler.crawl.Runner`: it takes a batch of models and the fetch options
and returns one outcome per model, in order. The crawler that called it writes the bytes and the graph
(one writer); workers only read the Hub and compute.

- :class:`LocalExecutor` (``LINEAGE_WORKERS=local``, the default): N spawned worker processes, one task
  each at a time over a pipe. Spawned, not forked: a fork of a process holding torch (or CUDA) state is
  unsafe.
- :class:`RayExecutor` (``LINEAGE_WORKERS=ray`` or ``ray://host:port``, extra ``[ray]``): N Ray actors
  that hold their torch device; each asks for ``num_gpus=1`` when the cluster has GPUs.
- ``inline``: in this process, one model after the other (debugging; what a batch of one model uses).

Failure model, the same for both: a worker that dies mid-task (killed, out of memory, a crashed actor)
costs that task one attempt, and the task goes to another worker (a replacement starts at once); after
``attempts`` deaths the model's outcome is ``failed`` with the reason, so the crawl moves on. The unit of
work never raises for what the Hub or a checkpoint does; an exception it raises anyway (a bug) is
``failed`` at once. Backpressure: each worker holds one task, and the crawler hands over at most
:meth:`Executor.batch` models at a time, so a pass never queues more than that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from crawler.crawl import run_here
from crawler.fetch import FetchOptions, fingerprint_repo
from crawler.http import pin_endpoint
from crawler.records import HubModel, Outcome
from lineage.errors import LineageError

LOG = logging.getLogger("lineage.workers")
#: Deaths of a worker holding a task before that task is given up as ``failed``.
ATTEMPTS = 3


class WorkersError(LineageError):
    """The worker pool cannot start (``ray`` not installed, a Ray address that does not answer)."""


class Executor(Protocol):
    """Runs the fingerprint unit of work for a batch of models (a crawler ``Runner``)."""

    workers: int

    def __call__(self, models: list[HubModel], options: FetchOptions) -> list[Outcome]: ...

    def batch(self) -> int:
        """How many models the crawler should hand over at a time (the bound on queued work)."""
        ...

    def close(self) -> None: ...


def _run(model: HubModel, options: FetchOptions) -> Outcome:
    """The task body on a worker: the unit of work, with a bug turned into a ``failed`` outcome."""
    pin_endpoint(options.endpoint)  # a fresh interpreter's huggingface_hub points at huggingface.co
    try:
        return fingerprint_repo(model, options)
    except Exception as e:  # fingerprint_repo catches what the Hub does; anything else is our bug
        return Outcome(model, "failed", f"worker error: {type(e).__name__}: {e}"[:500])


def _setup(device_spec: str, threads: int) -> None:
    """Size this worker's thread pools once, before any work: torch's intra-op pool and every BLAS and
    OpenMP pool numpy and scipy loaded (threadpoolctl), to its share of the cores. N workers each taking
    every core would oversubscribe the CPU (numpy's OpenBLAS ignores ``torch.set_num_threads``)."""
    import torch
    from threadpoolctl import threadpool_limits

    from fingerprint import device

    n = max(1, threads)
    torch.set_num_threads(n)
    import numpy  # noqa: F401  (loads its BLAS now, so the limit below reaches it)

    threadpool_limits(limits=n)  # not a context manager: the limit holds for the worker's life
    device.use(device_spec)


def _died(model: HubModel, tries: int, why: str) -> Outcome:
    return Outcome(model, "failed", f"the worker died {tries} times while reading it (last: {why})")


def _schedule(models: list[HubModel],
              step: Callable[[deque[int], list[int], dict[int, Outcome]], None]) -> list[Outcome]:
    """Drive ``step`` until every model has an outcome; ``step`` hands queued indices to idle workers,
    waits for one event, and records results or puts a dead worker's task back on the queue."""
    queue: deque[int] = deque(range(len(models)))
    tries = [0] * len(models)
    results: dict[int, Outcome] = {}
    while len(results) < len(models):
        step(queue, tries, results)
    return [results[i] for i in range(len(models))]


class InlineExecutor:
    """In this process, one model after the other."""

    workers = 1

    def __call__(self, models: list[HubModel], options: FetchOptions) -> list[Outcome]:
        return run_here(models, options)

    def batch(self) -> int:
        return 1

    def close(self) -> None:
        pass


def _orphan_watch(parent: int) -> None:
    """Exit when the crawler that started this worker is gone (SIGKILLed): a task in flight would
    otherwise go on reading the Hub for a result nobody receives."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _worker_main(conn: Connection, device_spec: str, threads: int, parent: int) -> None:
    """A local worker process: set up torch once, then run tasks from the pipe until it closes.

    ``parent`` is the crawler's pid as it started us, not ``os.getppid()`` here: a crawler killed while
    this interpreter was still importing would otherwise look like our parent's successor, and the task
    already waiting in the pipe would be read for nobody."""
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    _setup(device_spec, threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, model, options = msg
        conn.send((i, _run(model, options)))


@dataclass(eq=False)
class _Proc:
    process: BaseProcess
    conn: Connection


class LocalExecutor:
    """``workers`` spawned processes (default: the CPU count), each running one task at a time."""

    def __init__(self, workers: int | None = None, device: str = "cpu", attempts: int = ATTEMPTS) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.device, self.attempts = device, attempts
        self._ctx = get_context("spawn")
        self._procs: list[_Proc] = []
        self.restarts = 0  # workers replaced after dying

    def batch(self) -> int:
        return 2 * self.workers

    def pids(self) -> list[int]:
        """The worker processes' ids (started on first use)."""
        return [p.process.pid or 0 for p in self._procs]

    def start(self) -> None:
        while len(self._procs) < self.workers:
            self._procs.append(self._spawn())

    def _spawn(self) -> _Proc:
        parent, child = self._ctx.Pipe()
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        p = self._ctx.Process(target=_worker_main, args=(child, self.device, threads, os.getpid()), daemon=True,
                              name="lineage-worker")
        p.start()
        child.close()
        return _Proc(p, parent)

    def _replace(self, w: _Proc) -> None:
        w.conn.close()
        w.process.join(1)
        self._procs[self._procs.index(w)] = self._spawn()
        self.restarts += 1

    def __call__(self, models: list[HubModel], options: FetchOptions) -> list[Outcome]:
        if len(models) == 1 and not self._procs:
            return run_here(models, options)  # starting interpreters for one model costs more than it saves
        self.start()
        busy: dict[_Proc, int] = {}

        def step(queue: deque[int], tries: list[int], results: dict[int, Outcome]) -> None:
            for w in list(self._procs):
                if w not in busy and queue:
                    i = queue.popleft()
                    try:
                        w.conn.send((i, models[i], options))
                    except (BrokenPipeError, OSError):  # died while idle: no attempt spent
                        queue.appendleft(i)
                        self._replace(w)
                        continue
                    tries[i] += 1
                    busy[w] = i
            if not busy:
                return  # every idle worker had died and was replaced: hand out again
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in list(busy):
                if w.conn in ready:
                    try:
                        j, out = w.conn.recv()
                        results[j] = out
                        del busy[w]
                        continue
                    except (EOFError, OSError):
                        pass  # the pipe closed: the process died; handled below
                if w.conn in ready or w.process.sentinel in ready:
                    i = busy.pop(w)
                    w.process.join(1)
                    why = f"pid {w.process.pid} exited with code {w.process.exitcode}"
                    LOG.warning("worker %s while reading %s (attempt %d of %d)", why, models[i].id, tries[i],
                                self.attempts)
                    self._replace(w)
                    if tries[i] >= self.attempts:
                        results[i] = _died(models[i], tries[i], why)
                    else:
                        queue.appendleft(i)

        return _schedule(models, step)

    def close(self) -> None:
        for w in self._procs:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in self._procs:
            w.process.join(5)
            if w.process.is_alive():
                w.process.kill()
            w.conn.close()
        self._procs = []


class FingerprintWorker:
    """The Ray actor's class (wrapped by ``ray.remote`` when a Ray executor starts, so ``ray`` stays an
    optional import): it sets its torch device once and runs tasks."""

    def __init__(self, device_spec: str) -> None:
        # Ray sets OMP_NUM_THREADS to the actor's CPUs: torch uses that many threads, not every core
        _setup(device_spec, int(os.environ.get("OMP_NUM_THREADS") or 1))

    def pid(self) -> int:
        return os.getpid()

    def run(self, model: HubModel, options: FetchOptions) -> Outcome:
        return _run(model, options)


class RayExecutor:
    """``workers`` Ray actors (default: one per GPU if the cluster has GPUs, else one per CPU).

    ``address`` None starts a local cluster in this process (``ray.init(num_cpus=...)``) unless one is
    already initialised; ``"auto"`` joins the cluster this host belongs to; ``ray://host:port`` is a Ray
    Client connection. The cluster's workers must run the same code (the deploy/ image).
    """

    def __init__(self, address: str | None = None, workers: int | None = None, device: str = "auto",
                 attempts: int = ATTEMPTS) -> None:
        if address is None:
            # A cluster of this machine only: on 127.0.0.1 (Ray otherwise picks the address a UDP socket
            # "connected" to 8.8.8.8 would use), and no usage report to Ray's servers. Read at import.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError as e:
            raise WorkersError("LINEAGE_WORKERS=ray needs Ray: pip install 'model-lineage[ray]'") from e
        self._ray = ray
        self.attempts, self.device = attempts, device
        self._owns = False
        if not ray.is_initialized():
            try:
                if address is None:
                    ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise WorkersError(f"cannot reach the Ray cluster at {address}: {str(e).splitlines()[0]}") from e
            self._owns = True
        res: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        gpus = int(res.get("GPU", 0))
        self.workers = max(1, workers or gpus or int(res.get("CPU", 1)))
        opts: dict[str, Any] = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        self._cls = ray.remote(max_restarts=0, max_task_retries=0, **opts)(FingerprintWorker)
        self._actors: list[Any] = []
        self.restarts = 0

    def batch(self) -> int:
        return 2 * self.workers

    def start(self) -> None:
        while len(self._actors) < self.workers:
            self._actors.append(self._cls.remote(self.device))

    def pids(self) -> list[int]:
        """The actors' process ids (started on first use)."""
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self._actors])]

    def __call__(self, models: list[HubModel], options: FetchOptions) -> list[Outcome]:
        ray = self._ray
        self.start()
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (actor slot, model index)

        def step(queue: deque[int], tries: list[int], results: dict[int, Outcome]) -> None:
            busy = {slot for slot, _ in pending.values()}
            for slot, actor in enumerate(self._actors):
                if slot not in busy and queue:
                    i = queue.popleft()
                    tries[i] += 1
                    pending[actor.run.remote(models[i], options)] = (slot, i)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                slot, i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayActorError as e:  # the actor (its process, its node) died
                    why = str(e).splitlines()[0][:200]
                    LOG.warning("Ray worker died while reading %s (attempt %d of %d): %s", models[i].id, tries[i],
                                self.attempts, why)
                    ray.kill(self._actors[slot], no_restart=True)
                    self._actors[slot] = self._cls.remote(self.device)
                    self.restarts += 1
                    if tries[i] >= self.attempts:
                        results[i] = _died(models[i], tries[i], why)
                    else:
                        queue.appendleft(i)
                except ray.exceptions.RayError as e:
                    results[i] = Outcome(models[i], "failed", f"worker error: {str(e).splitlines()[0][:300]}")

        return _schedule(models, step)

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a, no_restart=True)
        self._actors = []
        if self._owns:
            self._ray.shutdown()


def open_executor(spec: str, workers: int | None, device: str, ray_address: str | None = None) -> Executor:
    """The executor ``LINEAGE_WORKERS`` names: ``inline``, ``local``, ``ray`` (a local cluster, or the one
    ``ray_address`` names: ``RAY_ADDRESS``), ``ray://host:port``.

    Raises:
        WorkersError: Ray is asked for and not installed, or its cluster cannot be reached.
    """
    if spec == "inline":
        return InlineExecutor()
    if spec == "local":
        return LocalExecutor(workers, device)
    if spec == "ray":
        return RayExecutor(ray_address, workers, device)
    return RayExecutor(spec, workers, device)
