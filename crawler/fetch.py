"""The unit of work a fingerprint worker runs: one model's ranged reads and sketch, nothing else.

:func:`fingerprint_repo` is a pure, picklable module-level function: it takes a frozen
:class:`~crawler.records.HubModel` and frozen :class:`FetchOptions`, opens its own HTTP session (an
:class:`~crawler.http.HttpRepo`), reads the tensors a fingerprint needs, and returns an
:class:`~crawler.records.Outcome` holding the fingerprint file's bytes. It touches no crawl state, no
graph and no disk, so it runs the same in this process, in a process pool or on a remote worker; the
crawler that claimed the item writes the bytes and records the result (one writer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from crawler import pacing
from crawler.claims import MAX_CARD_BYTES, scratch_claim
from crawler.errors import CrawlerError, GatedRepoError, HubRequestError, RepoNotFoundError
from crawler.http import HttpRepo
from crawler.records import HubModel, Outcome
from fingerprint.canonical import open_model
from fingerprint.errors import FingerprintError
from fingerprint.sketch import sketch_model, to_bytes


@dataclass(frozen=True)
class FetchOptions:
    """How a worker reaches the Hub: the endpoint, the token (None: anonymous) and the retry policy
    (``attempts`` per request, backoff from ``backoff_s``)."""

    endpoint: str
    token: str | None = None
    timeout: float = 30.0
    attempts: int = 6
    backoff_s: float = 0.5


def _card_claim(repo: HttpRepo, model: HubModel) -> str | None:
    """The card text's "trained from scratch" claim, read at the same commit (bounded; a card that cannot be
    read claims nothing: the fingerprint stands on its own)."""
    size = model.file_sizes.get("README.md")
    if size is None or size > MAX_CARD_BYTES:
        return None
    try:
        return scratch_claim(repo.read_bytes("README.md", MAX_CARD_BYTES).decode("utf-8", "replace"))
    except (CrawlerError, FingerprintError, OSError):
        return None


def fingerprint_repo(model: HubModel, options: FetchOptions) -> Outcome:
    """Read ``model``'s needed tensors by ranged requests at its commit and sketch them.

    Returns an outcome with status ``fingerprinted`` (``data`` = the ``.lfp`` bytes, deterministic for
    a given commit), ``gated`` or ``gone`` (the files cannot be read), ``retry`` (a transient Hub failure
    past the retries, or a refused token: the crawler's next metadata call stops the pass) or
    ``unsupported`` (the checkpoint cannot be fingerprinted). Never raises for what the Hub or the
    checkpoint does.
    """
    t0 = time.perf_counter()
    pacing.install()  # in a worker process too: the Hub's answers say what is left of the shared window
    repo = HttpRepo(options.endpoint, model.id, model.sha, model.file_sizes, options.token, options.timeout,
                    options.attempts, options.backoff_s)

    def read() -> int:
        return repo.weight_bytes_read + repo.small_bytes_read

    try:
        sk = sketch_model(open_model(repo), source=model.id, revision=model.sha)
    except (GatedRepoError, RepoNotFoundError) as e:
        return Outcome(model, "gated" if isinstance(e, GatedRepoError) else "gone", str(e))
    except HubRequestError as e:
        return Outcome(model, "retry", str(e), bytes_read=read())
    except (FingerprintError, CrawlerError) as e:
        return Outcome(model, "unsupported", str(e), bytes_read=read())
    data = to_bytes(sk)
    model = replace(model, claims=_card_claim(repo, model))
    return Outcome(model, "fingerprinted", None, data=data, bytes_read=read(),
                   requests=repo.range_requests + repo.resolver_requests,
                   seconds={"fingerprint": time.perf_counter() - t0})
