"""The composition root: one place that joins settings, store, index, pipeline and crawler.

Every entry point (the CLI, the demo, later the scheduler, the workers and the web server) opens an
:class:`App` for its :class:`~lineage.settings.Settings` and calls it; none wires the packages itself.

    with open_app(Settings.from_env()) as app:
        crawler = app.crawler()
        summary = app.crawl(crawler)

Opening resolves ``LINEAGE_DEVICE`` (a CUDA device that torch cannot see is one clear error here, at
start-up) and makes it the device the similarity math runs on while the app is open.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fingerprint.errors import ComparisonError
from lineage.errors import InvalidRepoIdError
from lineage.settings import Settings

# Only what every entry point needs is imported here: torch, the crawler and the alerts are imported by
# the functions that use them, so `lineage compare` of two checkpoints (numpy only) starts without them.
if TYPE_CHECKING:
    import torch

    from alerts.delivery import Report
    from alerts.findings import Finding
    from alerts.outbox import AlertStore, SyncResult
    from alerts.subscriptions import Subscription
    from crawler.crawl import Crawler, Summary
    from fingerprint.canonical import CanonicalModel
    from fingerprint.index import Entry, Index, Match
    from fingerprint.similarity.verdict import CompareResult
    from graph.store import LineageStore
    from lineage.pipeline import Pipeline
    from lineage.repair import RepairReport
    from lineage.workers import Executor


#: The families the index held when ``App.rematch`` last ran (in ``$LINEAGE_HOME``).
REMATCH_MARK = "rematch.json"
#: An incremental alerts evaluation reads the change log from this long before the last one started
#: (a graph write in flight then commits after it read; re-evaluating a model twice changes nothing).
MARGIN_MS = 120_000
#: At most this long between full alerts evaluations.
FULL_EVERY_MS = 24 * 3600 * 1000


@dataclass
class App:
    """An open application: the store, the base-family index and the pipeline over them.

    Attributes:
        settings: what it was opened with.
        store: the lineage graph (embedded SQLite or Neo4j, as ``LINEAGE_GRAPH`` says).
        device: the torch device the similarity math runs on.
        index: the fingerprint index in ``$LINEAGE_HOME/index``, loaded on first use (a job that places
            nothing, the alerts job, never pays for it).
        pipeline: the single graph writer for crawled models (built on first use).
    """

    settings: Settings
    store: LineageStore
    device: torch.device
    _index: Index | None = None
    _pipeline: Pipeline | None = None
    _crawlers: list[Crawler] = field(default_factory=list)
    _alerts: AlertStore | None = None
    _executor: Executor | None = None

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = shared_index(self.settings)
        return self._index

    @property
    def pipeline(self) -> Pipeline:
        from lineage.pipeline import Pipeline

        if self._pipeline is None:
            self._pipeline = Pipeline(self.store, self.index)
        return self._pipeline

    def executor(self) -> Executor:
        """The fingerprint workers ``LINEAGE_WORKERS`` names (started on first use, closed with the app).

        Raises:
            WorkersError: Ray is asked for and is not installed, or its cluster cannot be reached.
        """
        from lineage.workers import open_executor

        if self._executor is None:
            s = self.settings
            self._executor = open_executor(s.workers, s.worker_count, s.device, s.ray_address)
        return self._executor

    def crawler(self, endpoint: str | None = None, *, token: str | None = None, progress: bool = True,
                **options: Any) -> Crawler:
        """A crawler of ``endpoint`` (default ``LINEAGE_HUB_ENDPOINT``) with its state in the home; the
        token defaults to ``HF_TOKEN``. Closed with the app."""
        from crawler.crawl import Crawler, CrawlOptions

        s = self.settings
        # one fingerprint store for the crawler and the index: each fingerprint is written once
        opts = CrawlOptions(endpoint=endpoint or s.hub_endpoint, home=s.home / "crawl", token=token or s.hub_token,
                            fingerprints=s.home / "index", fingerprint_url=s.fingerprint_store, **options)
        c = Crawler(opts, progress=progress and not s.disable_progress_bars)
        self._crawlers.append(c)
        return c

    def crawl(self, crawler: Crawler, limit: int | None = None) -> Summary:
        """One pass: discover, then process up to ``limit`` queued models into the graph and the index,
        fingerprinting on :meth:`executor`'s workers a batch at a time.

        The summary's phases include the pipeline's (``match``, ``write``) for this pass.
        """
        from lineage.repair import check_not_pending

        check_not_pending(self.settings.home)
        before = dict(self.pipeline.seconds)
        ex = self.executor()
        summary = crawler.run(limit, place=self.pipeline, runner=ex, batch=ex.batch())
        for k, v in self.pipeline.seconds.items():
            summary.phases[k] = summary.phases.get(k, 0.0) + v - before.get(k, 0.0)
        return summary

    def add_base(self, repo_id: str, family: str | None = None, endpoint: str | None = None,
                 token: str | None = None) -> Entry:
        """Fingerprint ``repo_id`` from the Hub at ``main``, index it as the root of ``family`` (default:
        its id) and write it to the store.

        Raises:
            InvalidRepoIdError: not a ``namespace/name`` id.
            GatedRepoError, RepoNotFoundError, HubRequestError: as the Hub answers.
        """
        from crawler.errors import HubRequestError
        from crawler.records import valid_repo_id

        if valid_repo_id(repo_id) is None:
            raise InvalidRepoIdError(repo_id)
        c = self.crawler(endpoint, token=token, progress=False)
        try:
            out = c.fetch(repo_id)
        finally:
            self._close(c)
        if out.model is None or out.sketch is None:
            raise HubRequestError(repo_id, None, out.reason or out.status)
        from lineage.pipeline import fingerprint_of

        self.pipeline.register_base(out.model, fingerprint_of(out), family or repo_id)
        return self.index.entries[repo_id]

    def bootstrap(self, families: list[dict[str, Any]], endpoint: str | None = None,
                  report: Callable[[str, str, str | None], None] | None = None) -> tuple[list[str], list[dict[str, str]]]:
        """Index every repo of the catalog ``families``: ``(indexed, failed)``; ``report(repo, family,
        error)`` hears each. A gated or missing base is skipped with its reason.

        Raises:
            EndpointError: ``endpoint`` is not an http(s) URL.
            HubStopError: the Hub gives no answer at all, or refuses the token (every other base would
                fail the same way).
        """
        from crawler.errors import CrawlerError, HubStopError
        from crawler.http import check_endpoint

        check_endpoint(endpoint or self.settings.hub_endpoint)
        done: list[str] = []
        failed: list[dict[str, str]] = []
        for f in families:
            for repo in f["repos"]:
                try:
                    self.add_base(repo, f["family"], endpoint)
                except HubStopError:
                    raise
                except CrawlerError as e:
                    failed.append({"repo": repo, "error": str(e)})
                    if report:
                        report(repo, f["family"], str(e))
                    continue
                done.append(repo)
                if report:
                    report(repo, f["family"], None)
        return done, failed

    def rematch(self, crawler: Crawler) -> dict[str, Any]:
        """Place again every fingerprinted model without a detected parent (inconclusive, independent,
        a candidate family's root) when a base family joined the index since the last rematch: what
        matched nothing may match the newcomer. Idempotent, like every pipeline write."""
        families = self.index.db.families()
        last = self._rematched_families()
        if last == families:
            return {"rematched": 0, "families": len(families), "skipped": "no family joined the index"}
        placed = {e.src for e in self.store.detected_edges(None)}
        n = 0
        for out in crawler.state.fingerprinted(crawler.fingerprints, skip=placed):
            self.pipeline(out)
            n += 1
        self._mark_rematched(families)
        return {"rematched": n, "families": len(families), "new": sorted(set(families) - set(last or []))}

    def type_edges(self, crawler: Crawler, limit: int = 50, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """Type the oldest untyped detected edges from both ends' weights (:func:`lineage.relations.type_edges`)."""
        from lineage.relations import type_edges

        return type_edges(self.store, crawler, limit, progress)

    def _mark_rematched(self, families: list[str]) -> None:
        mark = self.settings.home / REMATCH_MARK
        tmp = mark.with_suffix(".tmp")
        tmp.write_text(json.dumps({"families": families}), "utf-8")
        tmp.replace(mark)

    def _rematched_families(self) -> list[str] | None:
        """The families the index held at the last rematch (the app's own marker in the home; a home
        written before it moved keeps it in the crawl folder)."""
        for mark in (self.settings.home / REMATCH_MARK, self.settings.home / "crawl" / REMATCH_MARK):
            try:
                last = json.loads(mark.read_text("utf-8")).get("families")
            except (OSError, ValueError, AttributeError):
                continue
            return list(last) if isinstance(last, list) else None
        return None

    def repair(self, progress: Callable[[int, int], None] | None = None) -> RepairReport:
        """Place every crawled model again from the stored fingerprints (:mod:`lineage.repair`), then
        evaluate the alerts. The app must have been opened on an index :func:`repair_home` rebuilt."""
        from crawler.state import placed_outcomes
        from lineage.pipeline import Pipeline
        from lineage.repair import REPAIR_MARK, repair

        home = self.settings.home
        report = repair(self.store, self.index, placed_outcomes(home / "crawl" / "crawl.sqlite", self.index.store),
                        progress)
        self._pipeline = Pipeline(self.store, self.index)  # any earlier one scored against the old index
        self._mark_rematched(self.index.db.families())
        self.evaluate_alerts(full=True)
        (home / REPAIR_MARK).unlink(missing_ok=True)
        return report

    def alert_state(self) -> AlertStore:
        """The alerts state in the home (opened on first use, closed with the app)."""
        if self._alerts is None:
            self._alerts = open_alerts(self.settings)
        return self._alerts

    def evaluate_alerts(self, full: bool = False) -> tuple[list[Finding], SyncResult]:
        """Findings the graph supports now, synced into the alerts state with their events (one
        transaction). Incremental: only the models a write concerned since the last evaluation's
        watermark (:func:`alerts.findings.affected`), read in batches; in full (every model) when asked,
        on the first evaluation, when the rule table changed, and once every :data:`FULL_EVERY_MS`, a
        safety net for whatever a change log cannot see (a store restored from a backup). Returns the
        findings evaluated (of the scope only, when incremental) and what changed."""
        from alerts.findings import affected, evaluate
        from alerts.outbox import Mark
        from alerts.rules import rules

        state = self.alert_state()
        start = int(time.time() * 1000)
        last = state.watermark(self.settings.graph or "embedded")
        version = str(rules().version)
        full = full or last is None or last.rules != version or start - last.full_ms >= FULL_EVERY_MS
        # a write that began before the last evaluation started may commit after it read: read back a margin
        scope = None if full or last is None else affected(self.store, self.store.touched_since(last.ms - MARGIN_MS))
        findings = evaluate(self.store, scope)
        mark = Mark(self.settings.graph or "embedded", start, version, start if full or last is None else last.full_ms)
        return findings, state.sync(findings, scope=scope, mark=mark)

    def deliver_alerts(self, subscriptions: list[Subscription] | None = None, **options: Any) -> Report:
        """Deliver pending events to ``subscriptions`` (default: ``$LINEAGE_HOME/alerts.json``); evaluate first."""
        from alerts.delivery import deliver
        from alerts.subscriptions import load as load_subscriptions

        subs = subscriptions if subscriptions is not None else load_subscriptions(self.settings.home / "alerts.json")
        return deliver(self.alert_state(), subs, **options)

    def _close(self, c: Crawler) -> None:
        c.close()
        if c in self._crawlers:
            self._crawlers.remove(c)


_INDEXES: dict[tuple[Path, str | None], tuple[Index, tuple[int, int]]] = {}
_INDEXES_LOCK = threading.Lock()


def shared_index(settings: Settings) -> Index:
    """This process's index of the home (one per home and fingerprint store, kept open between service
    jobs), caught up with what other processes wrote since (:meth:`~fingerprint.index.Index.refresh`:
    only the rows and retirements that are new). A home whose index file was replaced gets a new one."""
    from fingerprint.index import Index

    key = (settings.home.resolve() / "index", settings.fingerprint_store)
    db = key[0] / "index.db"
    try:
        st = db.stat()
        ident = (st.st_dev, st.st_ino)
    except OSError:
        ident = (0, 0)
    with _INDEXES_LOCK:
        got = _INDEXES.get(key)
        if got is not None and got[1] == ident and ident != (0, 0):
            got[0].refresh()
            return got[0]
        idx = Index(key[0], settings.fingerprint_store)
        _INDEXES.pop(key, None)  # a replaced file's old instance is left to whoever still holds it
        if ident != (0, 0):
            _INDEXES[key] = (idx, ident)
        return idx


def add_path(path: str | Path, name: str | None = None, family: str | None = None,
             settings: Settings | None = None) -> Entry:
    """Index a fingerprint file as is, or a local model directory / ``.gguf`` fingerprinted now.

    Only the index is touched (no store, no Hub): a local base has no Hub identity to put in the graph.
    """
    from fingerprint.sketch import save, sketch_of

    s = settings or Settings.from_env()
    p = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        f = p if p.suffix == ".lfp" else save(sketch_of(p), Path(tmp) / "fp.lfp")  # before the lock: minutes
        with writing_home(s, "lineage index add"):
            return s.index().add(f, name=name or (None if p.suffix == ".lfp" else p.name), family=family)


def open_alerts(settings: Settings | None = None) -> AlertStore:
    """The alerts state of the home (``$LINEAGE_HOME/alerts.sqlite``), without the graph; close it when done."""
    from alerts.outbox import AlertStore

    return AlertStore((settings or Settings.from_env()).home / "alerts.sqlite")


@contextmanager
def on_device(settings: Settings | None = None) -> Iterator[torch.device]:
    """Run a block's similarity math on ``LINEAGE_DEVICE`` without opening a store (``compare``, ``match``).

    Raises:
        DeviceError: the device is one torch cannot see.
    """
    from fingerprint import device

    s = settings or Settings.from_env()
    with device.using(s.device) as dev:
        yield dev


def compare_paths(a: str, b: str, method: str = "lineage", settings: Settings | None = None,
                  backgrounds: tuple[str, ...] = ()) -> CompareResult:
    """Compare two checkpoints (model directories or ``.gguf``) with one of ``METHODS``, or two fingerprint
    files (``.lfp``; a checkpoint beside one is fingerprinted first) with the ``lineage`` method.

    ``backgrounds`` (checkpoints): a pair the weights leave uncertain gets the representation second
    opinion (:mod:`fingerprint.similarity.second`), calibrated on those the weights call independent.

    Raises:
        ComparisonError: an unknown method, a method fingerprint files cannot serve, or a pair that
            cannot be compared.
    """
    from fingerprint.canonical import open_model
    from fingerprint.similarity import compare

    if a.endswith(".lfp") or b.endswith(".lfp"):
        if method != "lineage" or backgrounds:
            raise ComparisonError(f"fingerprint files hold what the lineage method needs, not {method}"
                                  if method != "lineage" else "a second opinion runs the models: give checkpoints, not .lfp files")
    elif backgrounds and method != "lineage":
        raise ComparisonError("--background gives the lineage method a second opinion; drop --method")
    elif method == "lineage" and not backgrounds:
        # two checkpoints with our method stream through numpy (fingerprint.similarity.pairwise): no torch,
        # no device to resolve, so the command starts in a fraction of a second
        return compare(open_model(a), open_model(b), method)
    with on_device(settings) as dev:
        if a.endswith(".lfp") or b.endswith(".lfp"):
            from fingerprint.similarity.lineage import compare_fingerprints
            from fingerprint.sketch import sketch_of

            return compare_fingerprints(sketch_of(a), sketch_of(b))
        ma, mb = open_model(a), open_model(b)
        r = compare(ma, mb, method)
        if backgrounds:
            take_second_opinion(r, ma, mb, [open_model(x) for x in backgrounds], str(dev))
        return r


def take_second_opinion(r: CompareResult, a: CanonicalModel, b: CanonicalModel, backgrounds: list[CanonicalModel],
                        device_name: str = "cpu") -> None:
    """Ask for the representation second opinion when ``r`` is uncertain and record it in ``r``: the
    evidence, the final outcome and what decided it."""

    from fingerprint.similarity.second import UNCERTAIN, Representations, combine, second_opinion

    if r.outcome not in UNCERTAIN:
        r.notes.append(f"second opinion not needed: the weights decided ({r.outcome})")
        return
    op = second_opinion(a, b, backgrounds, Representations(device_name))
    r.final, r.decided_by = combine(r.outcome, op)
    r.second_opinion = op.to_dict()
    r.notes.append(op.note)


def match_path(path: str, top: int, shortlist: int, settings: Settings | None = None) -> tuple[list[Match], dict[str, Any]]:
    """Screen the index against a model or fingerprint file and score the shortlist (``lineage match``):
    the best-scoring base of each family, at most ``top`` families (the question is which families, and
    several bases of one family would crowd out the others)."""
    from fingerprint.sketch import sketch_of

    s = settings or Settings.from_env()
    with on_device(s):
        s.existing_home()  # before the read: a typo'd home is not an empty index
        t = time.perf_counter()
        sk = sketch_of(path)
        t_fp = time.perf_counter() - t
        scored, stats = s.index().match(sk, top=shortlist, shortlist=shortlist)
    best: dict[str, Match] = {}
    for m in scored:  # best first
        best.setdefault(m.family, m)
    stats["fingerprint_seconds"] = t_fp
    return list(best.values())[:top], stats


def check_target(target: str, policy_path: str | None = None, endpoint: str | None = None,
                 override: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """``lineage check``: grade one model against the index and a policy (:mod:`lineage.check`); an
    ``override`` reason turns a refusal into exit 0 and is logged."""
    from lineage.check import Policy, log_override, run_check

    s = settings or Settings.from_env()
    policy = Policy.load(policy_path)  # a malformed policy fails before any read
    s.existing_home()
    with on_device(s), open_app(s) as app:
        result = run_check(app, target, policy, endpoint)
    if override is not None and result["exit_code"] != 0:
        result["override"] = log_override(s.home, result, override)
        result["exit_code"] = 0
    return result


def repair_home(settings: Settings | None = None, progress: Callable[[int, int], None] | None = None) -> RepairReport:
    """``lineage repair``: mark the home, rebuild its index without the crawled models, open the app on
    it and place every crawled model again (:mod:`lineage.repair`).

    Raises:
        SettingsError: the home does not exist.
        FingerprintIndexError: ``index.db`` itself is unreadable.
    """
    from lineage.repair import mark, rebuild_index

    s = settings or Settings.from_env()
    s.existing_home()
    with writing_home(s, "lineage repair"):
        mark(s.home)
        dropped = rebuild_index(s.home / "index", s.fingerprint_store)
        with open_app(s) as app:
            report = app.repair(progress)
    report.dropped = dropped
    return report


@contextmanager
def open_app(settings: Settings | None = None, store: LineageStore | None = None,
             writer: str | None = None) -> Iterator[App]:
    """Open the application for ``settings`` (default: the environment).

    ``store`` lets a caller that already holds one (a test, a web server) pass it in; it is then not
    closed here. ``writer`` (a command or job name): hold the home's writer lock (:mod:`lineage.writer`)
    while the app is open, taken before the index is loaded; every command that writes passes it.

    Raises:
        DeviceError: ``LINEAGE_DEVICE`` names a device torch cannot see.
        StoreUnavailableError: the graph backend cannot be opened.
        WriterBusyError: another process kept writing the home for longer than ``LINEAGE_WRITER_WAIT``.
    """
    s = settings or Settings.from_env()
    with ExitStack() as held:
        if writer is not None:
            held.enter_context(writing_home(s, writer))
        yield held.enter_context(_open(s, store))


def writing_home(settings: Settings, what: str) -> AbstractContextManager[None]:
    """The writer lock of ``settings``' home, held as ``what``, waiting ``LINEAGE_WRITER_WAIT`` seconds
    and saying whom it waits for on the log."""
    from lineage.writer import writing

    return writing(settings.home, what, settings.writer_wait, logging.getLogger("lineage").warning)


@contextmanager
def _open(s: Settings, store: LineageStore | None) -> Iterator[App]:
    from lineage.store import open_store

    with on_device(s) as dev:
        own = store is None
        st = store if store is not None else open_store(s)
        app = App(s, st, dev)
        try:
            yield app
        finally:
            for c in list(app._crawlers):
                app._close(c)
            if app._alerts is not None:
                app._alerts.close()
            if app._executor is not None:
                app._executor.close()
            if own:
                st.close()
