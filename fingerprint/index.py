"""A local index of base-family fingerprints, and matching a suspect against all of it.

Layout (``$LINEAGE_HOME/index/`` by default)::

    index.json            entries: name → family, file, sha256, architecture, width, layers, vocab digest, source
    fingerprints/*.lfp    fingerprint files, named by the first 16 hex digits of their SHA-256 (or under
                          an fsspec URL, ``LINEAGE_FINGERPRINT_STORE``: see :mod:`fingerprint.store`)
    screen.npz            one row per entry: the spectral prefilter (8 depth bins × Q/K × 16) and a
                          bottom-256 sketch of anchor-token hashes, for screening without opening files

Matching screens every entry (width ≤ base width, estimated token overlap, prefilter similarity), then
scores the shortlist with the full factor-based method and ranks by score.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fingerprint.anchors import token_hash
from fingerprint.errors import FingerprintFileError, FingerprintIndexError
from fingerprint.io.source import MemorySource
from fingerprint.similarity.verdict import Verdict
from fingerprint.sketch import MAX_FILE_BYTES, Sketch, load, read_sketch
from fingerprint.store import FingerprintStore

if TYPE_CHECKING:  # torch is imported only when something is scored
    from fingerprint.similarity.factored import TargetWork

INDEX_VERSION = 1
DEPTH_BINS = 8
TOKEN_SKETCH = 256
MIN_TOKEN_OVERLAP = 0.02
SCREEN_BLOCK = 256


def screen_vector(sk: Sketch) -> np.ndarray:
    """Prefilter spectra averaged into ``DEPTH_BINS`` relative-depth bins (so depth changes still match)."""
    pre = sk.prefilter  # (layers, 2, 16)
    n = pre.shape[0]
    bins = np.minimum((np.arange(n) * DEPTH_BINS) // max(n, 1), DEPTH_BINS - 1)
    out = np.zeros((DEPTH_BINS, 2, pre.shape[2]), dtype=np.float64)
    for b in range(DEPTH_BINS):
        sel = pre[bins == b] if (bins == b).any() else pre[[min(n - 1, b * n // DEPTH_BINS)]]
        out[b] = sel.mean(axis=0)
    v = out.reshape(-1)
    return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)


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


@dataclass
class Entry:
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
    #: the caller's facts about the model, kept with its entry (the lineage pipeline keeps what placing it
    #: again needs: publication time, flags, declared bases); ``published_ms`` orders :meth:`Index.screen`,
    #: and ``hidden: true`` keeps the entry out of every match (kept only to be placed again later)
    meta: dict[str, Any] = field(default_factory=dict)

    def when(self) -> tuple[int, str]:
        """The entry's place in publication order: (milliseconds, name); no time sorts first."""
        ms = self.meta.get("published_ms")
        return (int(ms) if isinstance(ms, int) else -1, self.name)


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


class Index:
    """The on-disk index (see module docstring). Not safe for concurrent writers: one process adds."""

    def __init__(self, root: str | Path, store: str | None = None, *, read: bool = True) -> None:
        """``store``: an fsspec URL for the fingerprint files (default: ``root/fingerprints``); the entries
        and screen arrays stay in ``root``. ``read=False``: start empty (:meth:`rebuild`)."""
        self.root = Path(root)
        self.store = FingerprintStore(self.root, store)
        self.entries: dict[str, Entry] = {}
        self._screen: np.ndarray | None = None
        self._tokens: np.ndarray | None = None
        self._names: list[str] = []  # row order of the screen arrays, and each row's width: kept with them
        self._widths = np.zeros(0, np.int64)
        self._published = np.zeros(0, np.int64)
        self._hidden = np.zeros(0, bool)
        if read and (self.root / "index.json").exists():
            try:
                doc = json.loads((self.root / "index.json").read_text())
                if doc.get("version") != INDEX_VERSION:
                    raise FingerprintIndexError(f"{self.root}/index.json: version {doc.get('version')!r}, expected {INDEX_VERSION}")
                self.entries = {e["name"]: Entry(**e) for e in doc["entries"]}
                if self.entries:
                    z = np.load(self.root / "screen.npz")
                    self._screen, self._tokens = z["screen"], z["tokens"]
                    if len(self._screen) != len(self.entries) or len(self._tokens) != len(self.entries):
                        raise FingerprintIndexError(f"{self.root}: screen.npz does not match index.json")
                    self._rows()
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise FingerprintIndexError(f"{self.root}: corrupt index ({e}); lineage repair rebuilds it from its fingerprint files") from e

    def _save(self, screen: np.ndarray, tokens: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "screen.tmp.npz"
        np.savez(tmp, screen=screen, tokens=tokens)
        os.replace(tmp, self.root / "screen.npz")
        doc = {"version": INDEX_VERSION, "entries": [asdict(e) for e in self.entries.values()]}
        tmpj = self.root / "index.json.tmp"
        tmpj.write_text(json.dumps(doc, indent=1))
        os.replace(tmpj, self.root / "index.json")
        self._screen, self._tokens = screen, tokens
        self._rows()

    def _rows(self) -> None:
        self._names = list(self.entries)
        self._widths = np.fromiter((e.width for e in self.entries.values()), np.int64, len(self.entries))
        self._published = np.fromiter((e.when()[0] for e in self.entries.values()), np.int64, len(self.entries))
        self._hidden = np.fromiter((bool(e.meta.get("hidden")) for e in self.entries.values()), bool, len(self.entries))

    def add(self, path: str | Path, name: str | None = None, family: str | None = None,
            meta: dict[str, Any] | None = None) -> Entry:
        """Copy a fingerprint file into the index (re-adding the same name replaces it)."""
        return self.add_many([(path, name, family)], [meta or {}])[0]

    def add_many(self, items: list[tuple[str | Path, str | None, str | None]],
                 metas: list[dict[str, Any]] | None = None) -> list[Entry]:
        """Add several fingerprint files, writing ``index.json`` and ``screen.npz`` once (``metas``: each
        item's :attr:`Entry.meta`)."""
        screen = self._screen if self._screen is not None else np.zeros((0, DEPTH_BINS * 2 * 16), np.float32)
        tokens = self._tokens if self._tokens is not None else np.zeros((0, TOKEN_SKETCH), np.uint64)
        rows_s, rows_t = list(screen), list(tokens)
        added = []
        for j, (path, name, family) in enumerate(items):
            if not Path(path).is_file() or Path(path).stat().st_size > MAX_FILE_BYTES:
                load(path)  # raises its error (missing, unreadable, too large) without reading the file
            data = Path(path).read_bytes()  # read once: parsed, hashed and stored from the same bytes
            sk = read_sketch(MemorySource(str(path), data), str(path))
            sha = hashlib.sha256(data).hexdigest()
            rel = f"fingerprints/{sha[:16]}.lfp"
            if not self.store.exists(rel):  # content-addressed: a copy already there is this file
                self.store.put(rel, data)
            name = name or str(sk.meta.get("source") or Path(path).stem)
            e = Entry(name=name, family=family if family is not None else name, file=rel, sha256=sha, architecture=str(sk.meta["architecture"]),
                      width=sk.width, layers=sk.num_layers, vocab_digest=str(sk.meta["vocab_digest"]),
                      source=str(sk.meta.get("source")), bytes_read=int(sk.meta.get("bytes_read", 0)),
                      meta=dict(metas[j]) if metas else {})
            if name in self.entries:
                i = list(self.entries).index(name)
                rows_s[i], rows_t[i] = screen_vector(sk), token_sketch(sk)
            else:
                rows_s.append(screen_vector(sk))
                rows_t.append(token_sketch(sk))
            self.entries[name] = e
            added.append(e)
        self._save(np.stack(rows_s).astype(np.float32), np.stack(rows_t).astype(np.uint64))
        return added

    def update(self, name: str, *, family: str | None = None, meta: dict[str, Any] | None = None,
               rename: str | None = None) -> Entry:
        """Change an entry's family, meta or name in place (same fingerprint file, same screen row)."""
        e = self.entries[name]
        new = replace(e, family=family if family is not None else e.family, meta=dict(meta) if meta is not None else e.meta,
                      name=rename or e.name)
        if rename and rename != name:
            if rename in self.entries:
                raise FingerprintIndexError(f"{self.root}: cannot rename {name} to {rename}: that entry exists")
            self.entries = {(rename if k == name else k): (new if k == name else v) for k, v in self.entries.items()}
        else:
            self.entries[name] = new
        if self._screen is not None and self._tokens is not None:
            self._save(self._screen, self._tokens)
        return new

    def remove(self, name: str) -> None:
        """Drop an entry (its fingerprint file stays: files are content-addressed and may be shared)."""
        if name not in self.entries or self._screen is None or self._tokens is None:
            return
        i = list(self.entries).index(name)
        del self.entries[name]
        self._save(np.delete(self._screen, i, axis=0), np.delete(self._tokens, i, axis=0))

    @classmethod
    def rebuild(cls, root: str | Path, store: str | None = None,
                keep: Callable[[Entry], bool] = lambda e: True) -> tuple[Index, list[str]]:
        """The index at ``root`` with only the entries ``keep`` accepts whose stored file is intact, its
        screen rows computed again from those files: ``(index, names dropped for a missing or altered
        file)``. Reads ``index.json``
        alone, so it also mends an index whose ``screen.npz`` no longer matches (two writers at once).

        Raises:
            FingerprintIndexError: ``index.json`` is unreadable (the bases must be added again).
        """
        idx = cls(root, store, read=False)
        doc_path = idx.root / "index.json"
        try:
            doc: dict[str, Any] = json.loads(doc_path.read_text()) if doc_path.exists() else {
                "version": INDEX_VERSION, "entries": []}
            if doc.get("version") != INDEX_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {INDEX_VERSION}")
            entries = [Entry(**x) for x in doc["entries"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FingerprintIndexError(f"{doc_path}: unreadable ({err}); add the bases again with lineage index add") from err
        rows_s, rows_t, dropped = [], [], []
        for e in (x for x in entries if keep(x)):
            idx.entries[e.name] = e
            try:
                sk = idx.sketch(e.name)
            except (FingerprintFileError, OSError):
                del idx.entries[e.name]
                dropped.append(e.name)
                continue
            rows_s.append(screen_vector(sk))
            rows_t.append(token_sketch(sk))
        shape_s, shape_t = (0, DEPTH_BINS * 2 * 16), (0, TOKEN_SKETCH)
        idx._save(np.stack(rows_s).astype(np.float32) if rows_s else np.zeros(shape_s, np.float32),
                  np.stack(rows_t).astype(np.uint64) if rows_t else np.zeros(shape_t, np.uint64))
        return idx, dropped

    def newer_than(self, when: tuple[int, str]) -> int:
        """How many entries were published after ``when`` = (ms, name) (:meth:`Entry.when`)."""
        return int(self._side(when, older=False).sum()) if self.entries else 0

    def sketch(self, name: str) -> Sketch:
        """The entry's fingerprint, read once from the store and checked against its recorded SHA-256."""
        e = self.entries[name]
        where = f"{self.store.describe()}/{e.file}"
        data = self.store.get(e.file)
        if hashlib.sha256(data).hexdigest() != e.sha256:
            raise FingerprintFileError(where, "content does not match the SHA-256 recorded in index.json (tampered?)")
        return read_sketch(MemorySource(where, data), where)

    def local_path(self, name: str) -> Path | None:
        """The entry's fingerprint file on this disk (None when the files live in an object store)."""
        e = self.entries.get(name)
        return self.store.local_path(e.file) if e is not None else None

    def _side(self, when: tuple[int, str], older: bool) -> np.ndarray:
        """Rows published before (``older``) or after ``when`` = (ms, name), names breaking ties."""
        ms, name = when
        out = self._published < ms if older else self._published > ms
        tied = np.flatnonzero(self._published == ms)  # by name (entries without a time all tie)
        if len(tied):
            names = np.asarray(self._names, dtype=object)[tied]
            out[tied] = (names < name) if older else (names > name)
        return out

    def screen(self, sk: Sketch, shortlist: int, older_than: tuple[int, str] | None = None,
               newer_than: tuple[int, str] | None = None) -> list[tuple[str, float, float]]:
        """Entries that pass the metadata gates, best prefilter similarity first: (name, similarity, overlap).

        ``older_than`` = (ms, name): only entries published before (:meth:`Entry.when`), candidates for a
        parent of a model published then; ``newer_than``: only those published after and no wider than
        ``sk`` (candidates for its descendants, hidden entries included).
        """
        if not self.entries or self._screen is None or self._tokens is None:
            return []
        names, widths = self._names, self._widths
        mine = token_sketch(sk)
        mine_sorted = np.sort(mine[mine != np.iinfo(np.uint64).max])
        sim = self._screen @ screen_vector(sk)
        if newer_than is not None:
            sim[(widths > sk.width) | ~self._side(newer_than, older=False)] = -np.inf
        else:
            sim[(widths < sk.width) | self._hidden] = -np.inf  # a base is at least as wide as what derives from it
        if older_than is not None:
            sim[~self._side(older_than, older=True)] = -np.inf
        out: list[tuple[str, float, float]] = []
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
                overlap = _overlap(mine_sorted, self._tokens[rows])
                out += [(names[i], float(sim[i]), float(o)) for i, o in zip(rows, overlap) if o >= MIN_TOKEN_OVERLAP]
                if len(out) >= shortlist:
                    break
            if k >= len(sim) or not np.isfinite(sim[part]).any():
                break
            done = k
        return out[:shortlist]

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
        stats = {"indexed": len(self.entries), "shortlisted": len(cands), "screen_seconds": t1 - t0,
                 "score_seconds": time.perf_counter() - t1}
        return out[:top], stats
