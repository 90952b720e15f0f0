"""The crawl: discover new and changed repos, read their metadata, fingerprint them by ranged reads.

Discovery follows ``hub-crawling.md`` §1.3: two descending listings, by ``createdAt`` (new repos) and
by ``lastModified`` (new commits, e.g. weights pushed after the repo was created), each read down to
its watermark minus an overlap; work is keyed on ``(_id, sha)`` so overlaps and repeats are free. A
sweep lists everything once to find what the watermarks cannot (private repos made public with an
old ``createdAt``). Each queued model is then processed exactly once (see :mod:`crawler.state`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError as HfGatedRepoError
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from tqdm import tqdm

from crawler.errors import CrawlerError, GatedRepoError, HubRequestError, RepoNotFoundError
from crawler.http import HttpRepo, pin_endpoint, with_retries
from crawler.records import HubModel, from_info
from crawler.state import CrawlState
from fingerprint.canonical import open_model
from fingerprint.errors import FingerprintError
from fingerprint.sketch import Sketch, save, sketch_model

LOG = logging.getLogger(__name__)

LIST_FIELDS = ["author", "createdAt", "lastModified", "sha", "private", "gated", "pipeline_tag", "library_name",
               "tags", "safetensors"]
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class CrawlOptions:
    """What to crawl and how.

    Attributes:
        endpoint: the Hub (``https://huggingface.co``) or a stand-in.
        home: where crawl state and fingerprints live (``$LINEAGE_HOME/crawl``).
        since: on a first run, how far back to list (None: everything).
        overlap: how far below a watermark each listing reads (search-index lag, ties).
        pipeline_tags, libraries: keep only these (empty: all).
        min_params, max_params: server parameter-count range (models without a count pass).
        allow_authors, deny_authors: author filters (allow empty: all).
        sweep: also list everything once (finds private→public flips).
        state_label: what the crawl state is keyed on (default: the endpoint URL; the demo's stand-in
            changes port on every run, so it names itself).
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
    state_label: str | None = None


@dataclass
class Outcome:
    """What processing one model gave: the record, a status and, when fingerprinted, the file."""

    model: HubModel | None
    status: str  # fingerprinted | duplicate | gated | adapter | no-weights | unsupported | gone | failed
    reason: str | None = None
    fingerprint: Path | None = None
    sketch: Sketch | None = None
    duplicate_of: tuple[str, str] | None = None
    base_keys: dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0
    requests: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        m = self.model
        doc: dict[str, Any] = {"status": self.status, "reason": self.reason, "bytes_read": self.bytes_read,
                               "requests": self.requests, "seconds": self.seconds,
                               "fingerprint": str(self.fingerprint) if self.fingerprint else None,
                               "duplicate_of": list(self.duplicate_of) if self.duplicate_of else None,
                               "base_keys": self.base_keys}
        if m is not None:
            d = asdict(m)
            d.pop("file_sizes")
            d["created_at"] = m.created_at.isoformat() if m.created_at else None
            d["last_modified"] = m.last_modified.isoformat() if m.last_modified else None
            d["weights"] = [asdict(w) for w in m.weights]
            d["checkpoint_bytes"] = m.weight_bytes
            d["weights_digest"] = ",".join(sorted(w.sha256 for w in m.weights if w.sha256)) or None
            doc["model"] = d
            doc["weights_digest"] = d["weights_digest"]
        return doc


Sink = Callable[[Outcome], dict[str, Any] | None]


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

    ``sink`` (optional) receives every :class:`Outcome` before it is committed; it must be idempotent
    (the pipeline's graph writes are MERGEs), because a crash between the sink and the commit repeats it.
    """

    def __init__(self, options: CrawlOptions, sink: Sink | None = None, progress: bool = True) -> None:
        self.o = options
        pin_endpoint(options.endpoint)
        self.api = HfApi(endpoint=options.endpoint, token=options.token or False)
        self.state = CrawlState(options.home / "crawl.sqlite", options.state_label or options.endpoint)
        self.fp_dir = options.home / "fingerprints"
        self.sink = sink
        self.progress = progress
        self._keys: dict[str, str | None] = {}

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
            except HfHubHTTPError as e:
                raise HubRequestError(f"{self.o.endpoint}/api/models", None, str(e).splitlines()[0]) from e
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
    def process(self, limit: int | None = None, summary: Summary | None = None) -> Summary:
        """Process queued models, oldest first, each committed with its result."""
        s = summary or Summary()
        work = self.state.pending(limit)
        t0 = time.perf_counter()
        bar = tqdm(work, desc="models", unit="model", disable=not self.progress)
        for key, sha, repo_id in bar:
            if self.state.attempt(key, sha) > MAX_ATTEMPTS:
                out = Outcome(None, "failed", f"gave up after {MAX_ATTEMPTS} attempts")
            else:
                out = self.process_one(repo_id, sha)
                if out.status == "retry":  # transient: leave it queued for the next run
                    s.statuses["retry later"] += 1
                    LOG.warning("%s: %s (will retry)", repo_id, out.reason)
                    continue
            if out.model is not None:
                out.base_keys = self.base_keys(out.model)
            extra = self.sink(out) if self.sink else None
            record = out.record()
            if extra:
                record.update(extra)
            self.state.finish(key, sha, repo_id, out.status, out.reason, record)
            s.statuses[out.status] += 1
            s.bytes_read += out.bytes_read
            if out.model is not None and out.status == "fingerprinted":
                s.checkpoint_bytes += out.model.weight_bytes
            for k, v in out.seconds.items():
                s.phases[k] = s.phases.get(k, 0.0) + v
            elapsed = time.perf_counter() - t0
            bar.set_postfix(rate=f"{60 * sum(s.statuses.values()) / max(elapsed, 1e-9):.0f}/min",
                            read=f"{s.bytes_read / 2**20:.1f}MB")
        s.seconds += time.perf_counter() - t0
        s.pending = len(self.state.pending())
        return s

    def info(self, repo_id: str, sha: str) -> HubModel:
        """Metadata at ``sha`` (at ``main`` if that commit is gone), with our retries around it."""
        def call(rev: str | None) -> Any:
            # ``expand`` cannot be combined with ``files_metadata`` (the LFS hashes); the full payload
            # carries the card, config, siblings and safetensors counts; the card names the bases.
            return self.api.model_info(repo_id, revision=rev, files_metadata=True, timeout=self.o.timeout)
        try:
            try:
                raw = with_retries(lambda: call(sha), f"model_info {repo_id}", self.o.attempts)
            except RevisionNotFoundError:
                raw = with_retries(lambda: call(None), f"model_info {repo_id}", self.o.attempts)
        except HfGatedRepoError as e:
            raise GatedRepoError(repo_id, bool(self.o.token)) from e
        except RepositoryNotFoundError as e:
            raise RepoNotFoundError(repo_id) from e
        try:
            return from_info(raw)
        except ValueError as e:
            raise HubRequestError(repo_id, None, f"invalid model payload: {e}") from e

    def base_keys(self, m: HubModel) -> dict[str, str]:
        """The ``_id`` of every declared base: from ``baseModels`` when the payload has it, else one
        ``model_info`` per base (cached); a base that cannot be looked up is left out."""
        out = dict(m.base_keys)
        for b in m.base_models:
            if b in out:
                continue
            if b not in self._keys:
                try:
                    info = with_retries(lambda b=b: self.api.model_info(b, timeout=self.o.timeout),  # type: ignore[misc]
                                        f"model_info {b}", self.o.attempts)
                    self._keys[b] = str(vars(info).get("_id") or "") or None
                except (HfGatedRepoError, RepositoryNotFoundError, HubRequestError):
                    self._keys[b] = None
            key = self._keys[b]
            if key:
                out[b] = key
        return out

    def process_one(self, repo_id: str, sha: str) -> Outcome:
        """Metadata, then the cheapest step that settles the model (see the statuses of :class:`Outcome`)."""
        t0 = time.perf_counter()
        try:
            m = self.info(repo_id, sha)
        except RepoNotFoundError as e:
            return Outcome(None, "gone", str(e))
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
        hashes = [w.sha256 for w in m.weights]
        if all(hashes):
            owner = self.state.lfs_owner([h for h in hashes if h])
            if owner is not None and owner[0] != m.key:
                return Outcome(m, "duplicate", f"same weight files as {owner[1]}", duplicate_of=owner, seconds=secs)
            if owner is not None:
                return Outcome(m, "duplicate", "weights unchanged since an earlier commit", duplicate_of=owner,
                               seconds=secs)
        return self.fingerprint(m, secs)

    def fingerprint(self, m: HubModel, secs: dict[str, float]) -> Outcome:
        """Read the needed tensors by ranged requests and save the fingerprint (written atomically)."""
        t0 = time.perf_counter()
        repo = HttpRepo(self.o.endpoint, m.id, m.sha, m.file_sizes, self.o.token, self.o.timeout, self.o.attempts)
        try:
            model = open_model(repo)
            sk = sketch_model(model, source=m.id, revision=m.sha)
        except (GatedRepoError, RepoNotFoundError) as e:
            return Outcome(m, "gated" if isinstance(e, GatedRepoError) else "gone", str(e), seconds=secs)
        except HubRequestError as e:
            return Outcome(m, "retry", str(e), bytes_read=repo.weight_bytes_read + repo.small_bytes_read)
        except (FingerprintError, CrawlerError) as e:
            return Outcome(m, "unsupported", str(e), seconds=secs,
                           bytes_read=repo.weight_bytes_read + repo.small_bytes_read)
        secs["fingerprint"] = time.perf_counter() - t0
        self.fp_dir.mkdir(parents=True, exist_ok=True)
        path = self.fp_dir / f"{m.key}-{m.sha[:12]}.lfp"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save(sk, tmp)
        os.replace(tmp, path)
        return Outcome(m, "fingerprinted", None, path, sk, bytes_read=repo.weight_bytes_read + repo.small_bytes_read,
                       requests=repo.range_requests + repo.resolver_requests, seconds=secs)

    def fetch(self, repo_id: str) -> Outcome:
        """Fingerprint one repo at ``main`` now (``lineage index add REPO_ID``), outside the queue.

        Raises:
            GatedRepoError: the repo is gated and this token cannot read its files.
            RepoNotFoundError, HubRequestError: as the Hub answers.
        """
        m = self.info(repo_id, "main")
        out = self.fingerprint(m, {})
        if out.status == "gated":
            raise GatedRepoError(repo_id, bool(self.o.token))
        if out.status != "fingerprinted":
            raise HubRequestError(repo_id, None, out.reason or out.status)
        out.base_keys = self.base_keys(m)
        return out

    def run(self, limit: int | None = None) -> Summary:
        """One pass: discover, then process up to ``limit`` queued models."""
        s = self.discover()
        return self.process(limit, s)
