"""The crawl: discover new and changed repos, read their metadata, fingerprint them by ranged reads.

Discovery follows ``hub-crawling.md`` §1.3: two descending listings, by ``createdAt`` (new repos) and
by ``lastModified`` (new commits, e.g. weights pushed after the repo was created), each read down to
its watermark minus an overlap; work is keyed on ``(_id, sha)`` so overlaps and repeats are free. A
sweep lists everything once to find what the watermarks cannot (private repos made public with an
old ``createdAt``). Each queued model is then processed exactly once (see :mod:`crawler.state`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError as HfGatedRepoError
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from tqdm import tqdm

from crawler import pacing
from crawler.errors import (
    GatedRepoError,
    HubAuthError,
    HubRequestError,
    HubStopError,
    HubUnreachableError,
    PayloadError,
    RepoNotFoundError,
)
from crawler.fetch import FetchOptions, fingerprint_repo
from crawler.http import HttpRepo, check_endpoint, pin_endpoint, short, with_retries
from crawler.records import PARSE_ERRORS, HubModel, Outcome, WorkItem, from_info, valid_repo_id
from crawler.state import CrawlState
from fingerprint.canonical import CanonicalModel, open_model
from fingerprint.io.source import MemorySource
from fingerprint.sketch import read_sketch
from fingerprint.store import FingerprintStore

LOG = logging.getLogger(__name__)

LIST_FIELDS = ["author", "createdAt", "lastModified", "sha", "private", "gated", "pipeline_tag", "library_name",
               "tags", "safetensors"]
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class CrawlOptions:
    """What to crawl and how.

    Attributes:
        endpoint: the Hub (``https://huggingface.co``) or a stand-in.
        home: where the crawl state lives (``$LINEAGE_HOME/crawl``).
        fingerprints, fingerprint_url: the fingerprint store the index reads too (a directory, or an
            fsspec URL, :class:`fingerprint.store.FingerprintStore`), so each fingerprint is written
            once, content-addressed (default: ``home``).
        since: on a first run, how far back to list (None: everything).
        overlap: how far below a watermark each listing reads (search-index lag, ties).
        pipeline_tags, libraries: keep only these (empty: all).
        min_params, max_params: server parameter-count range (models without a count pass).
        allow_authors, deny_authors: author filters (allow empty: all).
        sweep: also list everything once (finds private→public flips).
        state_label: what the crawl state is keyed on (default: the endpoint URL; the demo's stand-in
            changes port on every run, so it names itself).
        budget_s: a pass stops claiming models after this many seconds (None: it runs until the queue
            is empty); what is left stays queued for the next pass, so a sweep that queued the whole
            Hub yields the writer lock to the next crawl pass instead of holding it for hours.
    """

    endpoint: str
    home: Path
    token: str | None = None
    since: datetime | None = None
    overlap: timedelta = timedelta(hours=2)
    pipeline_tags: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    min_params: int | None = None
    max_params: int | None = None
    allow_authors: tuple[str, ...] = ()
    deny_authors: tuple[str, ...] = ()
    sweep: bool = False
    timeout: float = 30.0
    attempts: int = 6
    backoff_s: float = 0.5
    state_label: str | None = None
    budget_s: float | None = None
    fingerprints: Path | None = None
    fingerprint_url: str | None = None


#: Runs the unit of work for a batch of models: in this process by default; a worker pool or a
#: Ray cluster passes its own (it must return the outcomes in order).
Runner = Callable[[list[HubModel], FetchOptions], list[Outcome]]
#: Receives each finished outcome before it is committed (the pipeline: it writes the graph). It must
#: be idempotent, because a crash between it and the commit repeats it; it returns nothing, so what it
#: decides lives in the graph only.
Place = Callable[[Outcome], None]


def run_here(models: list[HubModel], options: FetchOptions) -> list[Outcome]:
    """The default :data:`Runner`: one model after the other, in this process."""
    return [fingerprint_repo(m, options) for m in models]


@dataclass
class Summary:
    discovered: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0
    checkpoint_bytes: int = 0
    seconds: float = 0.0
    pending: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        processed = sum(self.statuses.values())
        return {"discovered": self.discovered, "processed": processed, "statuses": dict(self.statuses),
                "filtered": dict(self.filtered), "pending": self.pending, "bytes_read": self.bytes_read,
                "checkpoint_bytes": self.checkpoint_bytes,
                "bytes_share": self.bytes_read / self.checkpoint_bytes if self.checkpoint_bytes else None,
                "seconds": round(self.seconds, 2), "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "models_per_minute": round(60 * processed / self.seconds, 1) if self.seconds else None}


class Crawler:
    """Discovery and processing against one endpoint, with state in ``options.home``.

    It claims queued work, settles what metadata alone settles, runs the fingerprint unit of work
    (:func:`crawler.fetch.fingerprint_repo`) through a :data:`Runner`, and finishes each item in the
    crawl state, which keeps crawl facts only. Where a model lands in the graph is the caller's
    ``place`` callback's business.
    """

    def __init__(self, options: CrawlOptions, progress: bool = True) -> None:
        self.o = options
        check_endpoint(options.endpoint)
        pin_endpoint(options.endpoint)
        pacing.install()  # every Hub request of this process paced to the Hub's rate-limit windows
        self.api = HfApi(endpoint=options.endpoint, token=options.token or False)
        self.state = CrawlState(options.home / "crawl.sqlite", options.state_label or options.endpoint)
        self.fingerprints = FingerprintStore(options.fingerprints or options.home, options.fingerprint_url)
        self.fetch_options = FetchOptions(options.endpoint, options.token, options.timeout, options.attempts,
                                          options.backoff_s)
        self.progress = progress
        self._keys: dict[str, tuple[str, str] | None] = {}  # declared base -> (_id, canonical id), or not found

    def close(self) -> None:
        self.state.close()

    # -- discovery --------------------------------------------------------------------------------
    def _listing(self, sort: str) -> Iterable[Any]:
        return self.api.list_models(sort=sort, expand=LIST_FIELDS)  # type: ignore[arg-type]

    def _keep(self, info: Any, summary: Summary) -> bool:
        author = (getattr(info, "id", "") or "").split("/")[0]
        st = getattr(info, "safetensors", None)
        params = st.total if st is not None else None
        reason = None
        if self.o.allow_authors and author not in self.o.allow_authors:
            reason = "author not allowed"
        elif author in self.o.deny_authors:
            reason = "author denied"
        elif self.o.pipeline_tags and getattr(info, "pipeline_tag", None) not in self.o.pipeline_tags:
            reason = "pipeline tag"
        elif self.o.libraries and getattr(info, "library_name", None) not in self.o.libraries:
            reason = "library"
        elif params is not None and self.o.min_params is not None and params < self.o.min_params:
            reason = "too small"
        elif params is not None and self.o.max_params is not None and params > self.o.max_params:
            reason = "too large"
        if reason:
            summary.filtered[reason] += 1
        return reason is None

    def discover(self, summary: Summary | None = None) -> Summary:
        """Run both watermark loops (and the sweep if asked); queue new ``(_id, sha)``; move watermarks.

        Everything found is queued and the watermarks moved in one transaction at the end, so an
        interrupted discovery leaves the state as it was and the next one redoes it.
        """
        s = summary or Summary()
        t0 = time.perf_counter()
        found: dict[tuple[str, str], Any] = {}  # None: seen and filtered out
        marks: dict[str, datetime] = {}
        loops = [("createdAt", "created_at"), ("lastModified", "last_modified")]
        for name, attr in loops:
            wm = self.state.watermark(name)
            floor = wm - self.o.overlap if wm else self.o.since
            try:
                for info in self._listing(attr):  # the client retries every listing page itself
                    when = getattr(info, attr, None)
                    if floor is not None and when is not None and when < floor:
                        break  # every later item is older: the listing is descending
                    if when is not None and (name not in marks or when > marks[name]):
                        marks[name] = when
                    self._found(info, found, s)
            except HfHubHTTPError as e:  # the client retried 429/5xx itself
                status = e.response.status_code if e.response is not None else None
                if status == 401 and e.response is not None and self.o.token:
                    raise HubAuthError(f"{self.o.endpoint}/api/models", short(e)) from e
                raise HubRequestError(f"{self.o.endpoint}/api/models", status, short(e)) from e
            except (httpx2.TransportError, httpx2.TimeoutException) as e:  # nothing is committed yet: safe to fail
                raise HubUnreachableError(f"{self.o.endpoint}/api/models", None, f"cannot reach the Hub: {short(e)}") from e
        if self.o.sweep:
            for info in self.api.list_models(sort="created_at", expand=["sha", "createdAt", "lastModified",
                                                                         "private", "gated"]):
                if not self.state.known(str(vars(info).get("_id")), str(getattr(info, "sha", ""))):
                    self._found(info, found, s)
        with self.state.tx() as con:
            seq = self.state.next_seq(con)
            for (key, sha), info in found.items():
                if info is not None and self.state.enqueue(con, key, sha, info.id, getattr(info, "created_at", None),
                                                           getattr(info, "last_modified", None), seq):
                    s.discovered += 1
                    seq += 1
            for name, value in marks.items():
                self.state.set_watermark(con, name, value)
        s.phases["listing"] = s.phases.get("listing", 0.0) + time.perf_counter() - t0
        return s

    def _found(self, info: Any, found: dict[tuple[str, str], Any], s: Summary) -> None:
        key, sha = vars(info).get("_id"), getattr(info, "sha", None)
        if not isinstance(key, str) or not isinstance(sha, str):
            s.filtered["no _id or sha in listing"] += 1
            return
        if (key, sha) in found:
            return  # both listings see most new repos; count and filter each commit once
        found[(key, sha)] = info if self._keep(info, s) else None

    # -- processing -------------------------------------------------------------------------------
    def claim(self, limit: int | None = None) -> list[WorkItem]:
        """Take up to ``limit`` queued models, oldest first, counting an attempt for each (a crash counts)."""
        return self.state.claim(limit)

    def finish(self, item: WorkItem, out: Outcome, summary: Summary) -> None:
        """Commit a final outcome's crawl facts and close the claim, and count it; a ``retry`` keeps its
        claim until :meth:`process` ends the pass (then it is queued again for the next pass)."""
        if out.status == "retry":
            summary.statuses["retry later"] += 1
            LOG.warning("%s: %s (will retry)", item.repo_id, out.reason)
            return
        self.state.finish(item.key, item.sha, item.repo_id, out.status, out.reason, out.record())
        summary.statuses[out.status] += 1
        summary.bytes_read += out.bytes_read
        if out.model is not None and out.status == "fingerprinted":
            summary.checkpoint_bytes += out.model.weight_bytes
        for k, v in out.seconds.items():
            summary.phases[k] = summary.phases.get(k, 0.0) + v

    def process(self, limit: int | None = None, summary: Summary | None = None, place: Place | None = None,
                runner: Runner = run_here, batch: int = 1) -> Summary:
        """Process queued models, oldest first: claim ``batch`` at a time, settle what metadata settles,
        fingerprint the rest with ``runner``, hand every outcome to ``place``, then commit it.

        A batch of 1 keeps the order strict: a model is placed before the next one is read, so an exact
        copy always finds its twin, and a child its parent, already processed.
        """
        s = summary or Summary()
        t0 = time.perf_counter()
        total = self.state.pending_count() if limit is None else min(limit, self.state.pending_count())
        bar = tqdm(total=total, desc="models", unit="model", disable=not self.progress)
        done = 0
        later: list[WorkItem] = []  # transient failures: tried again next pass, not again in this one
        try:
            while limit is None or done < limit:
                if self.o.budget_s is not None and time.perf_counter() - t0 > self.o.budget_s:
                    break  # the rest waits for the next pass (CrawlOptions.budget_s)
                items = self.claim(batch if limit is None else min(batch, limit - done))
                if not items:
                    break
                try:
                    settled = [self.settle(item) for item in items]
                except HubStopError:  # every other item would fail the same way: stop the pass
                    later.extend(items)
                    raise
                todo = [x for x in settled if isinstance(x, tuple)]
                fetched = iter(runner([m for m, _ in todo], self.fetch_options) if todo else [])
                for i, (item, x) in enumerate(zip(items, settled)):
                    if not isinstance(x, tuple):
                        out = x
                    elif i:  # after the first of a batch, an earlier one may have become its twin meanwhile
                        out = self._twin(next(fetched), x[1])
                    else:
                        out = self.receive(next(fetched), x[1])
                    if out.status == "retry":
                        later.append(item)
                    else:
                        if out.model is not None:
                            out.model, out.base_keys = self.base_keys(out.model)
                        if place is not None:
                            place(out)
                    self.finish(item, out, s)
                    done += 1
                    bar.update(1)
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(rate=f"{60 * sum(s.statuses.values()) / max(elapsed, 1e-9):.0f}/min",
                                    read=f"{s.bytes_read / 2**20:.1f}MB")
        finally:
            for item in later:
                self.state.release(item.key, item.sha)
            bar.close()
        s.seconds += time.perf_counter() - t0
        s.pending = self.state.pending_count()
        return s

    def _twin(self, out: Outcome, secs: dict[str, float]) -> Outcome:
        """Receive a worker's outcome, unless an earlier model of the same batch, finished meanwhile, has
        the same weight files: then it is that model's duplicate, as it would have been one at a time."""
        m = out.model
        owner = self._weights_owner(m) if m is not None else None
        if m is not None and owner is not None and owner[0] != m.key:
            return Outcome(m, "duplicate", f"same weight files as {owner[1]}", duplicate_of=owner,
                           bytes_read=out.bytes_read, seconds={**secs, **out.seconds})
        return self.receive(out, secs)

    def _weights_owner(self, m: HubModel) -> tuple[str, str] | None:
        """``(key, id)`` of a processed model with exactly ``m``'s weight files (every file must carry an
        LFS hash: a file without one cannot be proven equal)."""
        hashes = [w.sha256 for w in m.weights]
        if not hashes or not all(hashes):
            return None
        return self.state.lfs_owner([h for h in hashes if h])

    def settle(self, item: WorkItem) -> Outcome | tuple[HubModel, dict[str, float]]:
        """Metadata, then the cheapest step that settles the model; ``(model, seconds)`` when only its
        weights can (see :data:`~crawler.records.OutcomeStatus`)."""
        if item.attempts > MAX_ATTEMPTS:
            return Outcome(None, "failed", f"gave up after {MAX_ATTEMPTS} attempts")
        t0 = time.perf_counter()
        try:
            m = self.info(item.repo_id, item.sha)
        except RepoNotFoundError as e:
            return Outcome(None, "gone", str(e))
        except HubStopError:
            raise
        except HubRequestError as e:
            return Outcome(None, "retry", str(e))
        secs = {"metadata": time.perf_counter() - t0}
        if m.gated:
            return Outcome(m, "gated", "weights need an accepted licence; metadata recorded", seconds=secs)
        if m.adapter and not any(w.name.startswith("model") for w in m.weights):
            return Outcome(m, "adapter", f"adapter of {', '.join(m.base_models) or 'an undeclared base'}",
                           seconds=secs)
        if not m.weights:
            return Outcome(m, "no-weights", "no safetensors or GGUF weights", seconds=secs)
        owner = self._weights_owner(m)
        if owner is not None and owner[0] != m.key:
            return Outcome(m, "duplicate", f"same weight files as {owner[1]}", duplicate_of=owner, seconds=secs)
        if owner is not None:
            return Outcome(m, "duplicate", "weights unchanged since an earlier commit", duplicate_of=owner,
                           seconds=secs)
        return m, secs

    def receive(self, out: Outcome, secs: dict[str, float]) -> Outcome:
        """Take a worker's outcome: put its fingerprint bytes in the fingerprint store (content-addressed:
        a file already there is these bytes) and parse them, so the pipeline matches exactly what the
        index will keep."""
        out.seconds = {**secs, **out.seconds}
        if out.status != "fingerprinted" or out.data is None or out.model is None:
            return out
        key, sha = self.fingerprints.put_content(out.data)
        where = f"{self.fingerprints.describe()}/{key}"
        out.sketch = read_sketch(MemorySource(where, out.data), where)
        out.fingerprint, out.fingerprint_sha, out.data = self.fingerprints.local_path(key), sha, None
        return out

    def info(self, repo_id: str, sha: str) -> HubModel:
        """Metadata at ``sha`` (at ``main`` if that commit is gone), with our retries around it."""
        def call(rev: str | None) -> Any:
            # ``expand`` cannot be combined with ``files_metadata`` (the LFS hashes); the full payload
            # carries the card, config, siblings and safetensors counts; its tags name the bases.
            try:
                return self.api.model_info(repo_id, revision=rev, files_metadata=True, timeout=self.o.timeout)
            except PARSE_ERRORS as e:  # the client's parse of a hostile payload (its HTTP errors pass)
                raise PayloadError(repo_id, f"{type(e).__name__}: {e}") from e
        def retried(rev: str | None) -> Any:
            return with_retries(lambda: call(rev), f"model_info {repo_id}", self.o.attempts, base=self.o.backoff_s,
                                repo_id=repo_id)
        try:
            try:
                raw = retried(sha)  # the Hub serves any commit: a push since the listing is the next item's
            except RevisionNotFoundError:
                raw = retried(None)  # the commit is gone (history rewritten)
        except HfGatedRepoError as e:
            raise GatedRepoError(repo_id, bool(self.o.token)) from e
        except RepositoryNotFoundError as e:
            raise RepoNotFoundError(repo_id) from e
        try:
            return from_info(raw)
        except PayloadError as e:
            raise HubRequestError(repo_id, None, str(e)) from e

    def base_keys(self, m: HubModel) -> tuple[HubModel, dict[str, str]]:
        """``m`` with each declared base under its canonical id, and the ``_id`` of every base found.

        From ``baseModels`` when the payload has it, else one ``model_info`` per base (cached), which
        follows the Hub's 307 from a legacy single-segment or renamed id (``gpt2``) to the canonical one
        (``openai-community/gpt2``). A base that cannot be looked up keeps its name and has no ``_id``."""
        out = dict(m.base_keys)
        names: list[str] = []
        for b in m.base_models:
            if b in out:
                names.append(b)
                continue
            if b not in self._keys:
                try:
                    info = with_retries(lambda b=b: self.api.model_info(b, timeout=self.o.timeout),  # type: ignore[misc]
                                        f"model_info {b}", self.o.attempts, base=self.o.backoff_s, repo_id=b)
                    key, canon = str(vars(info).get("_id") or "")[:64], valid_repo_id(getattr(info, "id", None))
                    self._keys[b] = (key, canon or b) if key else None
                except HubStopError:
                    raise
                except (HfGatedRepoError, RepositoryNotFoundError, HubRequestError, RepoNotFoundError):
                    self._keys[b] = None
            found = self._keys[b]
            names.append(found[1] if found else b)
            if found:
                out[found[1]] = found[0]
        canonical = tuple(dict.fromkeys(names))  # two spellings of one base are one base
        return (replace(m, base_models=canonical) if canonical != m.base_models else m), out

    def recheck(self, days: float = 14.0, limit: int = 1000) -> dict[str, int]:
        """Read again the metadata of models created in the last ``days`` (newest first, at most ``limit``):
        licences, declared bases and gating change after publication. A new commit is queued (the next
        pass records its card, and its weights if they changed); a repo that was gated and is now open
        is queued again at the same commit, for its weights. Returns what it found."""
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        seen: dict[str, dict[str, Any]] = {}
        for r in self.state.results():  # processing order: the last result per model wins
            if r.get("model"):
                seen[r["key"]] = r
        recent = sorted((r for r in seen.values() if (r["model"].get("created_at") or "") >= cutoff.isoformat()),
                        key=lambda r: r["model"].get("created_at") or "", reverse=True)[:limit]
        found = {"checked": 0, "new_commit": 0, "opened": 0, "gone": 0}
        queue: list[tuple[str, str, HubModel | None]] = []
        for r in recent:
            try:
                m = self.info(r["id"], "main")
            except RepoNotFoundError:
                found["gone"] += 1
                continue
            found["checked"] += 1
            if m.sha != r["sha"]:
                queue.append((m.key, m.sha, m))
            elif r["status"] == "gated" and not m.gated:
                queue.append((r["key"], r["sha"], None))
        with self.state.tx() as con:
            seq = self.state.next_seq(con)
            for key, sha, new in queue:
                if new is not None and self.state.enqueue(con, key, sha, new.id, new.created_at, new.last_modified,
                                                          seq):
                    found["new_commit"] += 1
                    seq += 1
                elif new is None and self.state.requeue(con, key, sha):
                    found["opened"] += 1
        return found

    def fetch(self, repo_id: str) -> Outcome:
        """Fingerprint one repo at ``main`` now (``lineage index add REPO_ID``), outside the queue.

        Raises:
            GatedRepoError: the repo is gated and this token cannot read its files.
            RepoNotFoundError, HubRequestError: as the Hub answers.
        """
        return self.fingerprint(self.info(repo_id, "main"))

    def open(self, repo_id: str, sha: str) -> CanonicalModel:
        """A model at commit ``sha`` whose tensors are read on demand by ranged requests (typing a
        relation reads a few layers' matrices of both ends).

        Raises:
            GatedRepoError, RepoNotFoundError, HubRequestError: as the Hub answers.
            FingerprintError: the checkpoint cannot be read.
        """
        m = self.info(repo_id, sha)
        o = self.fetch_options
        return open_model(HttpRepo(o.endpoint, m.id, m.sha, m.file_sizes, o.token, o.timeout, o.attempts, o.backoff_s))

    def fingerprint(self, m: HubModel) -> Outcome:
        """Fingerprint one repo whose metadata :meth:`info` gave, outside the queue (raises as :meth:`fetch`)."""
        out = self.receive(fingerprint_repo(m, self.fetch_options), {})
        if out.status == "gated":
            raise GatedRepoError(m.id, bool(self.o.token))
        if out.status != "fingerprinted":
            raise HubRequestError(m.id, None, out.reason or out.status)
        out.model, out.base_keys = self.base_keys(m)
        return out

    def run(self, limit: int | None = None, place: Place | None = None, runner: Runner = run_here,
            batch: int = 1) -> Summary:
        """One pass: discover, then process up to ``limit`` queued models (see :meth:`process`)."""
        s = self.discover()
        return self.process(limit, s, place, runner, batch)
