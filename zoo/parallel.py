"""Build a zoo with N worker processes: the recipes form a DAG (a derivative needs its parents' files), and
on two cores two small models train in about 1.6× the throughput of one model on both cores (a d=64 step
is too small for two threads to help: 47 ms on two threads, 55 ms on one).

Each worker is a spawned process with one torch thread and its own :class:`~zoo.build.Builder` on the same
output directory; it builds one recipe at a time from its parents' saved files (a model saved in the zoo's
dtype and loaded back equals the parent in memory, so the result does not depend on which worker built
the parent). The parent process only schedules and shows progress: two bars, the bases (with the data
steps before them shown in flight) and the derivatives, each with the names in flight. Each model is
computed on one torch thread, so its bytes do not depend on the schedule (a test rebuilds one and
compares); the worker count is part of the size's recipe (``SIZES[size]["workers"]``), so it is in the
build key.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tqdm import tqdm

from zoo.recipes import Recipe

_HERE: dict[str, Any] = {}  # the worker's own Builder


class Builder(Protocol):
    """What this module needs of :class:`zoo.build.Builder` (which imports this module: no cycle)."""

    size: str
    out: Path
    key: str
    quiet: bool
    recipes: dict[str, Recipe]
    entries: dict[str, dict[str, Any]]

    def tok_of(self, name: str) -> str: ...
    def train_domain(self, r: Recipe) -> str | None: ...
    def done_entry(self, r: Recipe) -> dict[str, Any] | None: ...
    def one(self, r: Recipe) -> None: ...
    def tokenizer(self, name: str) -> Path: ...
    def data(self, tok: str, domain: str) -> Any: ...


def _init(make: Callable[..., Builder], size: str, out: str, key: str) -> None:
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    _HERE["b"] = make(size, Path(out), quiet=True, key=key)


def _task(kind: str, args: tuple[str, ...]) -> dict[str, Any] | None:
    b: Builder = _HERE["b"]
    if kind == "tokenizer":
        b.tokenizer(args[0])
    elif kind == "tokens":
        b.data(args[0], args[1])
    else:
        b.one(b.recipes[args[0]])
        return b.entries[args[0]]
    return None


def _data_needs(b: Builder, r: Recipe) -> set[tuple[str, str]]:
    """The (tokenizer, domain) token file a recipe trains on (:meth:`zoo.build.Builder.train_domain`)."""
    dom = b.train_domain(r)
    return {(b.tok_of(r.name), dom)} if dom is not None else set()


def build(b: Builder, workers: int) -> None:
    """Run every recipe of ``b`` not built yet on ``workers`` processes; fills ``b.entries``."""
    recipes = []
    for r in b.recipes.values():  # what a finished earlier build left is taken as it is
        entry = b.done_entry(r)
        if entry is None:
            recipes.append(r)
        else:
            b.entries[r.name] = entry
    if not recipes:
        return
    needs = sorted({x for r in recipes for x in _data_needs(b, r)
                    if not (b.out / "tokens" / f"{x[0]}-{x[1]}.npy").exists()})
    toks = sorted({t for t, _ in needs if not (b.out / "tokenizers" / t / "tokenizer.json").exists()})
    # (kind, args, label, dependencies, bar, cost): one DAG, two bars. The data steps (tokenizers, token
    # files) show on the bases' bar without counting; derivatives start as soon as their parents are
    # built, and among ready jobs the costly ones go first so that no long one is left for the end.
    steps = {r.name: float(r.args.get("frac", 1.0)) if r.op != "pretrain" else 2.0 for r in recipes}
    jobs: list[Job] = (
        [Job("tokenizer", (t,), f"tokenizer {t}", (), 0, 3.0) for t in toks]
        + [Job("tokens", (t, d), f"{t}/{d}", (f"tokenizer {t}",), 0, 2.5) for t, d in needs]
        + [Job("model", (r.name,), r.name,
               tuple(r.parents) + tuple(f"{t}/{d}" for t, d in _data_needs(b, r)) + (f"tokenizer {b.tok_of(r.name)}",),
               0 if r.op == "pretrain" else 1, steps[r.name]) for r in recipes])
    totals = [sum(1 for j in jobs if j.bar == i and j.kind == "model") for i in (0, 1)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init,
                             initargs=(type(b), b.size, str(b.out), b.key)) as pool:
        bars = [tqdm(total=totals[0], desc=f"zoo {b.size}: training bases", unit="model", disable=b.quiet, position=0),
                tqdm(total=totals[1], desc=f"zoo {b.size}: deriving models", unit="model", disable=b.quiet,
                     position=1)]
        try:
            _run(pool, workers, jobs, bars, b.entries.__setitem__)
        finally:
            for bar in bars:
                bar.close()


class Job(NamedTuple):
    kind: str
    args: tuple[str, ...]
    label: str
    after: tuple[str, ...]
    bar: int
    cost: float


def _run(pool: ProcessPoolExecutor, workers: int, jobs: list[Job], bars: list[Any],
         record: Callable[[str, dict[str, Any]], None]) -> None:
    labels = {j.label for j in jobs}
    done: set[str] = set()
    waiting = sorted(jobs, key=lambda j: (j.bar, -j.cost))
    running: dict[Future[dict[str, Any] | None], Job] = {}
    while waiting or running:
        # a dependency that is not a job here was built before this run
        ready = [j for j in waiting if all(d in done or d not in labels for d in j.after)]
        for j in ready[: max(0, workers - len(running))]:  # one task per worker: the bars stay honest
            waiting.remove(j)
            running[pool.submit(_task, j.kind, j.args)] = j
        for i, bar in enumerate(bars):
            if bar.n < bar.total:  # a finished bar is left as it ended
                bar.set_postfix_str(", ".join(sorted(r.label for r in running.values() if r.bar == i)))
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for f in finished:
            j = running.pop(f)
            entry = f.result()  # a worker's exception ends the build here, with its own message
            if entry is not None:
                record(j.label, entry)
            done.add(j.label)
            if j.kind == "model":
                bars[j.bar].update(1)
