"""An index entry: one fingerprint file (content-addressed by SHA-256), its shape, and the caller's typed
facts about the model (the columns of ``index.db``, :mod:`fingerprint.indexdb`)."""

from __future__ import annotations

from dataclasses import dataclass, field

NO_TIME = -1  # an entry without a publication time sorts first (:meth:`Entry.when`)


@dataclass(frozen=True)
class Facts:
    """What a caller keeps with an entry to place it again (typed columns of ``index.db``).

    Attributes:
        key: the model's graph key (None: a local base, which has no graph node).
        published_ms: publication time; orders the screen's ``older_than``/``newer_than``.
        bases: the base ids its card declares.
        hidden: out of every match (kept only to be placed again when an older model arrives).
        catalog: a base family's root, indexed from the catalog (a root by decree).
        adapter, gguf, quantized: the repo's kind, as the crawl saw it.
    """

    key: str | None = None
    published_ms: int | None = None
    bases: tuple[str, ...] = ()
    hidden: bool = False
    catalog: bool = False
    adapter: bool = False
    gguf: bool = False
    quantized: bool = False


@dataclass
class Entry:
    """One indexed fingerprint: its file (content-addressed by SHA-256), shape, and :class:`Facts`."""

    name: str
    family: str
    file: str
    sha256: str
    architecture: str
    width: int
    layers: int
    vocab_digest: str
    source: str
    bytes_read: int
    facts: Facts = field(default_factory=Facts)

    def when(self) -> tuple[int, str]:
        """The entry's place in publication order: (milliseconds, name); no time sorts first."""
        ms = self.facts.published_ms
        return (ms if ms is not None else NO_TIME, self.name)
