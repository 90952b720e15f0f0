"""A local index of base-family fingerprints, and matching a suspect against all of it.

Storage (:mod:`fingerprint.indexdb`): entries as typed rows of ``index.db``, screen rows appended to
memory-mapped files, fingerprint files content-addressed under ``fingerprints/`` (or an fsspec URL,
``LINEAGE_FINGERPRINT_STORE``: :mod:`fingerprint.store`). Each screen row holds the entry's anchor Grams,
feature-hashed (:func:`fingerprint.screen.sketch_vector`), and a bottom-256 sketch of anchor-token hashes,
for screening without opening files; rows of an earlier screen version are computed again on first open. An index written by an earlier version (``index.json`` + ``screen.npz``) is migrated when first
opened; its two files are kept beside it with a ``.v1`` suffix.

Matching screens every entry (width ≤ base width, estimated token overlap, screen-row similarity), then
scores the shortlist with the full factor-based method and ranks by score.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fingerprint.anchors import token_hash
from fingerprint.entry import Entry, Facts
from fingerprint.errors import FingerprintFileError, FingerprintIndexError
from fingerprint.indexdb import SCREEN_DIM, TOKEN_DIM, Entries, IndexDB
from fingerprint.io.source import MemorySource
from fingerprint.screen import VECTOR_VERSION, sketch_vector
from fingerprint.similarity.verdict import Verdict
from fingerprint.sketch import MAX_FILE_BYTES, Sketch, load, read_sketch
from fingerprint.store import FingerprintStore, content_key

if TYPE_CHECKING:  # torch is imported only when something is scored
    from fingerprint.similarity.factored import TargetWork

__all__ = ["Entry", "Evidence", "Facts", "Index", "Match", "Stored", "screen_vector", "token_sketch"]

LEGACY_VERSION = 1  # index.json + screen.npz
TOKEN_SKETCH = TOKEN_DIM
MIN_TOKEN_OVERLAP = 0.02
SCREEN_BLOCK = 256


def screen_vector(sk: Sketch) -> np.ndarray:
    """An entry's screen row: its anchor Grams, feature-hashed (:func:`fingerprint.screen.sketch_vector`)."""
    return sketch_vector(sk, SCREEN_DIM)


def token_sketch(sk: Sketch) -> np.ndarray:
    """The ``TOKEN_SKETCH`` smallest 64-bit token hashes of the anchors (padded with max values)."""
    h = np.array(sorted(int.from_bytes(token_hash(k)[:8], "little") for k in sk.keys)[:TOKEN_SKETCH], dtype=np.uint64)
    return np.pad(h, (0, TOKEN_SKETCH - len(h)), constant_values=np.iinfo(np.uint64).max)


def _overlap(mine_sorted: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Bottom-k overlap: the share of my (sorted) sketch found in each row of theirs, an estimate of the
    shared-token fraction. Membership by binary search into my ≤256 hashes (10× faster than ``np.isin``)."""
    if not len(mine_sorted):
        return np.zeros(len(theirs))
    pos = np.minimum(np.searchsorted(mine_sorted, theirs), len(mine_sorted) - 1)
    return np.asarray((mine_sorted[pos] == theirs).sum(axis=1) / len(mine_sorted))


@dataclass(frozen=True)
class Stored:
    """A fingerprint already in the index's store (the crawler put it there): its parsed sketch and the
    SHA-256 of its bytes. Adding it reads and writes no fingerprint file; ``path``: a file holding the
    same bytes, copied in if the store lacks them (an index kept apart from the crawler's store)."""

    sketch: Sketch
    sha256: str
    path: Path | None = None


@dataclass(frozen=True)
class Evidence:
    """What a match's verdict rests on, beyond score and z (see :class:`~fingerprint.similarity.CompareResult`)."""

    alignment: str
    aligned: bool | None
    alignment_quality: float
    shared_tokens: int
    layers: int
    notes: tuple[str, ...]
    #: per matched layer pair: (layer of the base, layer of the suspect, CKA of Q, CKA of K), rounded
    layer_scores: tuple[tuple[int, int, float, float], ...] = ()
    #: a ``derived`` match whose shared origin is a random start, not a trained parent (see
    #: :data:`fingerprint.similarity.verdict.SHARED_INIT_SHARE`)
    shared_init: bool = False


@dataclass
class Match:
    name: str
    family: str
    score: float
    z: float
    verdict: Verdict
    screen: float
    token_overlap: float
    evidence: Evidence


def facts_of_meta(meta: dict[str, Any]) -> Facts:
    """The typed facts of a version-1 entry's free-form ``meta`` (what the lineage pipeline kept there)."""
    ms = meta.get("published_ms")
    key = meta.get("key")
    return Facts(key if isinstance(key, str) else None, ms if isinstance(ms, int) else None,
                 tuple(str(b) for b in meta.get("bases") or ()), bool(meta.get("hidden")), bool(meta.get("catalog")),
                 bool(meta.get("adapter")), bool(meta.get("gguf")), bool(meta.get("quantized")))


class Index:
    """An index directory (see module docstring). Readers may share it with one writer (the home's
    writer lock, :mod:`lineage.writer`, keeps writers to one); :meth:`refresh` catches up with it."""

    def __init__(self, root: str | Path, store: str | None = None) -> None:
        """``store``: an fsspec URL for the fingerprint files (default: ``root/fingerprints``); the entries
        and screen rows stay in ``root``.

        Raises:
            FingerprintIndexError: ``index.db`` or its row files are corrupt (``lineage repair`` mends them).
        """
        self.root = Path(root)
        self.store = FingerprintStore(self.root, store)
        if not (self.root / "index.db").exists() and (self.root / "index.json").exists():
            self._migrate()
        self.db = IndexDB(self.root, initial={"screen": VECTOR_VERSION})
        self.entries = Entries(self.db)
        if self.db.path.exists() and self.db.state("screen") != VECTOR_VERSION:
            self.db.recompute_rows("screen", VECTOR_VERSION, self._rows_again)

    def _rows_again(self, entries: list[Entry]) -> tuple[np.ndarray, np.ndarray]:
        """Screen and token rows of ``entries`` computed again from their fingerprint files (an index written
        by an earlier release, once; an entry whose file cannot be read keeps a row no screen selects, for
        ``lineage repair`` to report)."""
        rows_s = np.zeros((len(entries), SCREEN_DIM), np.float32)
        rows_t = np.full((len(entries), TOKEN_DIM), np.iinfo(np.uint64).max, np.uint64)
        for i, e in enumerate(entries):
            try:
                sk = self._read(e)
            except (FingerprintFileError, FingerprintIndexError, OSError):
                continue
            rows_s[i], rows_t[i] = screen_vector(sk), token_sketch(sk)
        return rows_s, rows_t

    def refresh(self) -> bool:
        """Catch up with what another process wrote since (cheap when nothing did): whether it changed."""
        return self.db.refresh()

    def close(self) -> None:
        self.db.close()

    # -- writes ---------------------------------------------------------------------------------------
    def add(self, path: str | Path | Stored, name: str | None = None, family: str | None = None,
            facts: Facts | None = None) -> Entry:
        """Copy a fingerprint file into the index (re-adding the same name replaces it)."""
        return self.add_many([(path, name, family)], [facts or Facts()])[0]

    def add_many(self, items: list[tuple[str | Path | Stored, str | None, str | None]],
                 facts: list[Facts] | None = None) -> list[Entry]:
        """Add several fingerprint files (or :class:`Stored` fingerprints) in one transaction (``facts``:
        each item's :class:`Facts`).

        Raises:
            FingerprintFileError: a file is missing, unreadable or not a fingerprint.
            FingerprintIndexError: a :class:`Stored` fingerprint is not in the store.
        """
        added, rows_s, rows_t = [], [], []
        for j, (path, name, family) in enumerate(items):
            if isinstance(path, Stored):
                sk, sha, rel = path.sketch, path.sha256, content_key(path.sha256)
                if not self.store.exists(rel):
                    if path.path is None or not path.path.is_file():
                        raise FingerprintIndexError(f"{self.store.describe()}/{rel}: fingerprint is missing from the store")
                    self.store.put(rel, path.path.read_bytes())
            else:
                if not Path(path).is_file() or Path(path).stat().st_size > MAX_FILE_BYTES:
                    load(path)  # raises its error (missing, unreadable, too large) without reading the file
                data = Path(path).read_bytes()  # read once: parsed, hashed and stored from the same bytes
                sk = read_sketch(MemorySource(str(path), data), str(path))
                rel, sha = self.store.put_content(data)  # content-addressed: a copy already there is this file
            name = name or str(sk.meta.get("source") or (sha[:16] if isinstance(path, Stored) else Path(path).stem))
            added.append(Entry(name=name, family=family if family is not None else name, file=rel, sha256=sha,
                               architecture=str(sk.meta["architecture"]), width=sk.width, layers=sk.num_layers,
                               vocab_digest=str(sk.meta["vocab_digest"]), source=str(sk.meta.get("source")),
                               bytes_read=int(sk.meta.get("bytes_read", 0)), facts=facts[j] if facts else Facts()))
            rows_s.append(screen_vector(sk))
            rows_t.append(token_sketch(sk))
        if added:
            self.db.put(added, np.stack(rows_s), np.stack(rows_t))
        return added

    def update(self, name: str, *, family: str | None = None, facts: Facts | None = None,
               rename: str | None = None) -> Entry:
        """Change an entry's family, facts or name (same fingerprint file, same screen vectors).

        Raises:
            KeyError: no entry ``name``.
            FingerprintIndexError: ``rename`` names another entry.
        """
        e = self.entries[name]
        new = replace(e, family=family if family is not None else e.family, facts=facts if facts is not None else e.facts,
                      name=rename or e.name)
        self.db.update(name, new)
        return new

    def remove(self, name: str) -> None:
        """Drop an entry (its fingerprint file stays: files are content-addressed and may be shared)."""
        self.db.remove(name)

    def _migrate(self) -> None:
        """Write ``index.db`` from a version-1 ``index.json`` + ``screen.npz`` (rows recomputed from the
        fingerprint files when ``screen.npz`` is missing or disagrees), keeping both files as ``.v1``."""
        doc_path = self.root / "index.json"
        try:
            doc = json.loads(doc_path.read_text())
            if doc.get("version") != LEGACY_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {LEGACY_VERSION}")
            entries = [Entry(**{k: v for k, v in x.items() if k != "meta"}, facts=facts_of_meta(x.get("meta") or {}))
                       for x in doc["entries"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FingerprintIndexError(f"{doc_path}: corrupt index ({e}); lineage repair rebuilds it from its "
                                        "fingerprint files") from e
        try:
            z = np.load(self.root / "screen.npz")
            screen, tokens = z["screen"], z["tokens"]
            if len(screen) != len(entries) or len(tokens) != len(entries):
                raise ValueError("screen.npz does not match index.json")
        except (OSError, ValueError, KeyError):
            screen, tokens, entries, _ = self._recompute(entries)
        tmp = self.root / f"migrate-{os.getpid()}"
        db = IndexDB(tmp)
        db.replace_all(entries, screen, tokens)  # rows of screen version 1: the first open computes them again
        db.close()
        for p in sorted(tmp.iterdir()):  # the row files first: index.db appearing is what says "done"
            if p.name not in ("index.db", "index.db-wal", "index.db-shm"):
                os.replace(p, self.root / p.name)
        os.replace(tmp / "index.db", self.root / "index.db")
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
        for name in ("index.json", "screen.npz"):
            if (self.root / name).exists():
                os.replace(self.root / name, self.root / f"{name}.v1")

    def _recompute(self, entries: list[Entry]) -> tuple[np.ndarray, np.ndarray, list[Entry], list[str]]:
        """Screen rows computed again from the entries' files: (screen, tokens, entries kept, names dropped
        for a missing or altered file)."""
        rows_s, rows_t, kept, dropped = [], [], [], []
        for e in entries:
            try:
                sk = self._read(e)
            except (FingerprintFileError, FingerprintIndexError, OSError):
                dropped.append(e.name)
                continue
            kept.append(e)
            rows_s.append(screen_vector(sk))
            rows_t.append(token_sketch(sk))
        return (np.stack(rows_s) if rows_s else np.zeros((0, SCREEN_DIM), np.float32),
                np.stack(rows_t) if rows_t else np.zeros((0, TOKEN_DIM), np.uint64), kept, dropped)

    @classmethod
    def rebuild(cls, root: str | Path, store: str | None = None,
                keep: Callable[[Entry], bool] = lambda e: True) -> tuple[Index, list[str]]:
        """The index at ``root`` with only the entries ``keep`` accepts whose stored file is intact, its
        screen rows computed again from those files into a new generation of row files (which also mends
        row files that were truncated or altered): ``(index, names dropped for a missing or altered file)``.

        Raises:
            FingerprintIndexError: ``index.db`` itself is unreadable (the bases must be added again).
        """
        root = Path(root)
        idx = cls.__new__(cls)
        idx.root, idx.store = root, FingerprintStore(root, store)
        try:
            if not (root / "index.db").exists() and (root / "index.json").exists():
                idx._migrate()
            idx.db = IndexDB(root, map_rows=False)
            entries = idx.db.all()
        except (FingerprintIndexError, sqlite3.DatabaseError) as err:
            raise FingerprintIndexError(f"{root}: index unreadable ({err}); add the bases again with lineage index add") from err
        idx.entries = Entries(idx.db)
        screen, tokens, kept, dropped = idx._recompute([e for e in entries if keep(e)])
        idx.db.replace_all(kept, screen, tokens, state={"screen": VECTOR_VERSION})
        return idx, dropped

    def newer_than(self, when: tuple[int, str]) -> int:
        """How many entries were published after ``when`` = (ms, name) (:meth:`Entry.when`)."""
        r = self.db.rows()
        return int((self._side(when, older=False) & r.live).sum()) if len(r.live) else 0

    def sketch(self, name: str) -> Sketch:
        """The entry's fingerprint, read once from the store and checked against its recorded SHA-256."""
        return self._read(self.entries[name])

    def _read(self, e: Entry) -> Sketch:
        where = f"{self.store.describe()}/{e.file}"
        data = self.store.get(e.file)
        if hashlib.sha256(data).hexdigest() != e.sha256:
            raise FingerprintFileError(where, "content does not match the SHA-256 recorded in the index (tampered?)")
        return read_sketch(MemorySource(where, data), where)

    def local_path(self, name: str) -> Path | None:
        """The entry's fingerprint file on this disk (None when the files live in an object store)."""
        e = self.entries.get(name)
        return self.store.local_path(e.file) if e is not None else None

    def _side(self, when: tuple[int, str], older: bool) -> np.ndarray:
        """Screen rows published before (``older``) or after ``when`` = (ms, name), names breaking ties
        (retired rows are not masked here)."""
        ms, name = when
        published = self.db.rows().cols["published_ms"]
        out = np.asarray(published < ms if older else published > ms)
        tied = np.flatnonzero(published == ms)  # by name (entries without a time all tie): only these are read
        if len(tied):
            names = self.db.names_of_rows(tied)
            for i in tied:
                n = names.get(int(i))
                out[i] = n is not None and ((n < name) if older else (n > name))
        return out

    def screen(self, sk: Sketch, shortlist: int, older_than: tuple[int, str] | None = None,
               newer_than: tuple[int, str] | None = None) -> list[tuple[str, float, float]]:
        """Entries that pass the metadata gates, best screen-row similarity first: (name, similarity, overlap).

        ``older_than`` = (ms, name): only entries published before (:meth:`Entry.when`), candidates for a
        parent of a model published then; ``newer_than``: only those published after and no wider than
        ``sk`` (candidates for its descendants, hidden entries included).
        """
        r = self.db.rows()
        if not r.live.any():
            return []
        widths, hidden = r.cols["width"], r.cols["hidden"].astype(bool)
        mine = token_sketch(sk)
        mine_sorted = np.sort(mine[mine != np.iinfo(np.uint64).max])
        sim = np.asarray(r.screen @ screen_vector(sk), dtype=np.float32)
        sim[~r.live] = -np.inf
        if newer_than is not None:
            sim[(widths > sk.width) | ~self._side(newer_than, older=False)] = -np.inf
        else:
            sim[(widths < sk.width) | hidden] = -np.inf  # a base is at least as wide as what derives from it
        if older_than is not None:
            sim[~self._side(older_than, older=True)] = -np.inf
        out: list[tuple[int, float, float]] = []
        # Token overlap is checked in similarity order, a block at a time, until the shortlist is full. Only
        # the best rows are ever sorted (argpartition, then a sort of that slice; the rest only if every one
        # of them fails the overlap gate): at 1M entries a full argsort would cost more than the product.
        done = 0
        seen = np.zeros(len(sim), bool)  # ties make two partitions disagree at their edge: never a row twice
        while done < len(sim) and len(out) < shortlist:
            k = min(len(sim), max(4 * SCREEN_BLOCK, 2 * done))
            part = np.argpartition(-sim, k - 1)[:k] if k < len(sim) else np.arange(len(sim))
            order = part[np.argsort(-sim[part], kind="stable")]
            order = order[np.isfinite(sim[order]) & ~seen[order]]
            seen[order] = True
            for b in range(0, len(order), SCREEN_BLOCK):
                rows = order[b:b + SCREEN_BLOCK]
                overlap = _overlap(mine_sorted, np.asarray(r.tokens[rows]))
                out += [(int(i), float(sim[i]), float(o)) for i, o in zip(rows, overlap) if o >= MIN_TOKEN_OVERLAP]
                if len(out) >= shortlist:
                    break
            if k >= len(sim) or not np.isfinite(sim[part]).any():
                break
            done = k
        names = self.db.names_of_rows([i for i, _, _ in out[:shortlist]])
        # a row another process retired since this view was mapped has no name: it is left out
        return [(names[i], s, o) for i, s, o in out[:shortlist] if i in names]

    def score(self, name: str, work: TargetWork, screen: float = 0.0, overlap: float = 0.0) -> Match:
        """Score the indexed base ``name`` against the suspect ``work.sketch`` with the full method; ``work``
        keeps the suspect's share of the work for the next base (``screen``/``overlap``: from :meth:`screen`)."""
        from fingerprint.similarity.lineage import compare_fingerprints

        r = compare_fingerprints(self.sketch(name), work.sketch, work)
        return Match(name, self.entries[name].family, r.score, r.z, r.verdict, screen, overlap,
                     Evidence(r.alignment, r.aligned, round(r.alignment_quality, 4), r.shared_tokens, len(r.layers),
                              tuple(r.notes), tuple((x.layer_a, x.layer_b, round(x.q, 4), round(x.k, 4))
                                                    for x in r.layers), r.shared_init))

    def match(self, sk: Sketch, top: int = 5, shortlist: int = 8,
              work: TargetWork | None = None) -> tuple[list[Match], dict[str, Any]]:
        """Screen every entry, score the shortlist with the full method, rank by score (``work``: a
        :class:`TargetWork` of ``sk`` to share with later scoring of the same suspect)."""
        from fingerprint.similarity.factored import TargetWork

        t0 = time.perf_counter()
        cands = self.screen(sk, shortlist)
        t1 = time.perf_counter()
        work = work if work is not None and work.sketch is sk else TargetWork(sk)
        out = [self.score(name, work, sim, ov) for name, sim, ov in cands]
        out.sort(key=lambda m: -m.score)
        stats = {"indexed": int(self.db.rows().live.sum()), "shortlisted": len(cands), "screen_seconds": t1 - t0,
                 "score_seconds": time.perf_counter() - t1}
        return out[:top], stats
