"""What the placement rules read, built from the index and the store: candidates named by graph key.

:mod:`lineage.placement` decides on plain data. This module makes that data for one placement:

* :class:`Scorer` compares a subject's fingerprint with the index entries published before it (the
  screen's shortlist, plus any older entry the rules ask about) and hands each back as a
  :class:`~lineage.placement.Candidate` named by its graph key. The index names entries by repo id;
  the key ↔ entry map lives here, so placement code sees one identity. Pair scores are memoized on the
  two fingerprints' SHA-256, so a renamed or re-familied entry still hits.
* :class:`StoreTree` answers :class:`~lineage.placement.ParentTree` from the store, one store call per
  model asked about, remembered for the placement it serves (the graph changes between placements).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from fingerprint.index import Entry, Facts, Index, Match
from fingerprint.similarity.factored import TargetWork
from fingerprint.sketch import Sketch
from graph.store import LineageStore
from lineage.placement import Candidate, Subject

#: Pair scores kept (keyed on the two fingerprints' SHA-256); past this many the memo starts again (a
#: long-running service would otherwise keep ~10 per placed model for ever; a miss costs one comparison).
PAIR_MEMO = 100_000


def lazy_work(sketch: Callable[[], Sketch]) -> Callable[[], TargetWork]:
    """A :class:`TargetWork` of ``sketch()``, built on the first call (a memo hit needs none)."""
    made: list[TargetWork] = []

    def work() -> TargetWork:
        if not made:
            made.append(TargetWork(sketch()))
        return made[0]

    return work


def subject_of(e: Entry) -> Subject | None:
    """The subject kept in ``e`` (None: a catalog base, a local base, or an entry from before subjects were kept)."""
    f = e.facts
    if f.catalog or f.key is None or f.published_ms is None:
        return None
    return Subject(e.name, f.key, f.published_ms, f.bases, f.adapter, f.gguf, f.quantized)


def subject_facts(s: Subject, placed: bool = True) -> Facts:
    """What an index entry keeps of ``s`` so it can be placed again; an unplaced one is ``hidden`` (out of
    every match until a later arrival places it)."""
    return Facts(s.key, s.published_ms, tuple(s.base_models), hidden=not placed, adapter=s.adapter, gguf=s.gguf,
                 quantized=s.quantized)


class StoreTree:
    """:class:`~lineage.placement.ParentTree` over a store's detected edges, for one placement."""

    def __init__(self, store: LineageStore) -> None:
        self.store = store
        self._seen: dict[str, tuple[str, float] | None] = {}

    def parent(self, key: str) -> tuple[str, float] | None:
        if key not in self._seen:
            up = [e for e in self.store.reach(key, upward=True, mode="detected", depth=1, min_score=-1.0)
                  if e.src == key and e.score is not None]
            self._seen[key] = (up[0].dst, float(up[0].score or 0.0)) if up else None
        return self._seen[key]


class Scorer:
    """Scores subjects against the index, by graph key (module docstring)."""

    def __init__(self, store: LineageStore, index: Index, shortlist: int) -> None:
        self.store = store
        self.index = index
        self.shortlist = shortlist
        self._memo: dict[tuple[str, str], Match] = {}
        self._names: dict[str, str] | None = None  # graph key → index entry name, built on first use
        self._legacy: dict[str, str] = {}

    # -- identities ---------------------------------------------------------------------------------
    def _maps(self) -> tuple[dict[str, str], dict[str, str]]:
        """(graph key → entry name for the entries that keep no key, entry name → graph key for them):
        local bases (no node: named by their entry name) and catalog bases indexed before entries kept
        their key (their node found by repo id, once). The other entries are looked up by key."""
        if self._names is None:
            legacy = {name: name for name in self.index.db.without_key()}
            for rec in self.store.get_models(sorted(legacy)) if legacy else []:
                if rec.id in legacy:
                    legacy[rec.id] = rec.key
            self._names = {k: name for name, k in legacy.items()}
            self._legacy = legacy
        return self._names, self._legacy

    def key_of(self, name: str) -> str | None:
        """The graph key of the index entry ``name`` (None: no such entry). An entry with no graph node
        (a local base) is named by its entry name: no node, so no edge is ever written to it."""
        e = self.index.entries.get(name)
        if e is None:
            return None
        return e.facts.key if e.facts.key is not None else self._maps()[1].get(name, name)

    def name_of(self, key: str) -> str | None:
        """The index entry of the model ``key`` (None: not indexed)."""
        name = self.index.db.name_for_key(key)
        if name is not None:  # read from the entries themselves: no second lookup
            return name
        name = self._maps()[0].get(key)  # a keyless entry, remembered from an earlier read: it may be gone
        return name if name is not None and name in self.index.entries else None

    def indexed(self, name: str, key: str, was: str | None = None) -> None:
        """The pipeline indexed ``name`` for the model ``key`` (``was``: the key the entry had before a
        rename). Entries keep their key, so only a keyless entry's mapping is remembered here."""
        names = self._maps()[0]
        if was is not None:
            names.pop(was, None)

    def keys(self, names: Sequence[str]) -> list[str]:
        """The graph keys of those index entries."""
        return [k for n in names if (k := self.key_of(n)) is not None]

    # -- scores -------------------------------------------------------------------------------------
    def pair(self, suspect: str, work: Callable[[], TargetWork], name: str) -> Match:
        """The match of the indexed ``name`` against the suspect whose fingerprint hashes to ``suspect``."""
        e = self.index.entries[name]
        k = (suspect, e.sha256)
        m = self._memo.get(k)
        if m is None:
            if len(self._memo) > PAIR_MEMO:
                self._memo.clear()
            m = self._memo[k] = self.index.score(name, work())
        return replace(m, name=name, family=e.family)

    def _candidate(self, m: Match) -> Candidate | None:
        key = self.key_of(m.name)
        if key is None:
            return None
        return Candidate(key, m.family, m.score, m.z, m.verdict, m.evidence, self.index.entries[m.name].when())

    def older(self, s: Subject, sk: Sketch, sha: str) -> tuple[list[Candidate], Callable[[str], Candidate | None],
                                                                 list[str]]:
        """``s``'s candidates among the entries published before it (its fingerprint ``sk`` hashes to
        ``sha``): the screen's shortlist and the declared bases, a function that scores one more
        older entry by key, and the keys of the indexed declared bases."""
        work = lazy_work(lambda: sk)  # the suspect's share of every comparison, computed once, when first needed
        when = s.when()
        scored: dict[str, Candidate] = {}

        def add(name: str) -> None:
            c = self._candidate(self.pair(sha, work, name))
            if c is not None:
                scored[c.key] = c

        for name, _, _ in self.index.screen(sk, self.shortlist, older_than=when):
            if name != s.id:
                add(name)
        matches = sorted(scored.values(), key=lambda x: -x.score)

        def score(key: str) -> Candidate | None:
            name = self.name_of(key)
            e = self.index.entries.get(name) if name is not None else None
            if key not in scored and e is not None and name != s.id and e.when() < when and not e.facts.hidden:
                add(e.name)
            return scored.get(key)

        declared = self.keys([b for b in s.base_models if b in self.index.entries])
        for key in declared:  # the declared parent is always scored (when it is older)
            if key not in {x.key for x in matches} and score(key) is not None:
                matches.append(scored[key])
        return matches, score, declared

    def between(self, a: str, b: str) -> float:
        """Score of two indexed models (graph keys), the later-published as the suspect (as when it was placed)."""
        na, nb = self.name_of(a), self.name_of(b)
        if na is None or nb is None:
            return 0.0
        ea, eb = self.index.entries[na], self.index.entries[nb]
        young, old = (ea, eb) if ea.when() > eb.when() else (eb, ea)
        return self.pair(young.sha256, lazy_work(lambda: self.index.sketch(young.name)), old.name).score
