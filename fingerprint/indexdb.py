"""The index's storage: entries as typed SQLite rows, screen rows in append-only files.

Layout of an index directory (``$LINEAGE_HOME/index/`` by default)::

    index.db            SQLite (WAL): one row per entry (typed columns, no free-form dict), the bases its
                        card declares, the screen rows a change retired, the state (version, generation,
                        rows written, change counter)
    screen-<g>.f32      per screen row: the hashed anchor Grams (``SCREEN_DIM`` float32)
    tokens-<g>.u64      per screen row: the bottom-k token sketch (``TOKEN_DIM`` uint64)
    cols-<g>.bin        per screen row: what the screen's gates read (:data:`COLS`: published time,
                        width, hidden)
    fingerprints/       the fingerprint files, content-addressed (:mod:`fingerprint.store`)

Screen rows are immutable. Adding an entry writes its row at offset ``rows × size`` of each file, then
commits its SQLite row and ``rows + 1`` in one transaction; a change to what the gates read (hidden, the
publication time, a new fingerprint under an old name) writes a new row and retires the old one in that
transaction. A process killed between the two leaves bytes past ``rows`` that the next add overwrites,
so the files and the database never disagree. Adding one entry therefore writes ~3 KB of rows and a
few SQLite pages whatever the size of the index, and opening maps the files (nothing is read until a
screen) and loads only the retired rows. ``g`` (the generation) changes only when
:meth:`IndexDB.replace_all` compacts the files; a process that mapped the old generation sees the new
one at its next :meth:`IndexDB.refresh` (old files stay readable to it until it lets them go).

A process killed mid-transaction loses nothing SQLite committed (WAL, ``synchronous=NORMAL``); a power
loss may lose the last transactions, which ``lineage repair`` rebuilds from the crawl state.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fingerprint.entry import NO_TIME, Entry, Facts
from fingerprint.errors import FingerprintIndexError

DB_VERSION = 2  # version 1 was index.json + screen.npz, migrated by :mod:`fingerprint.index`
SCREEN_DIM = 256  # feature-hashed anchor Grams (fingerprint.screen.sketch_vector)
TOKEN_DIM = 256
#: one row of the gates' columns: 16 bytes, so a 1M-entry index maps 16 MB for them
COLS = np.dtype([("published_ms", "<i8"), ("width", "<i4"), ("hidden", "u1"), ("_pad", "u1", (3,))])

SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
  id INTEGER PRIMARY KEY,           -- insertion order: listing order, kept by re-adds and renames
  name TEXT NOT NULL UNIQUE,
  row INTEGER NOT NULL UNIQUE,      -- its screen row
  family TEXT NOT NULL,
  file TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  architecture TEXT NOT NULL,
  width INTEGER NOT NULL,
  layers INTEGER NOT NULL,
  vocab_digest TEXT NOT NULL,
  source TEXT NOT NULL,
  bytes_read INTEGER NOT NULL,
  key TEXT,                         -- the model's graph key (None: a local base, no graph node)
  published_ms INTEGER,
  hidden INTEGER NOT NULL DEFAULT 0,
  catalog INTEGER NOT NULL DEFAULT 0,
  adapter INTEGER NOT NULL DEFAULT 0,
  gguf INTEGER NOT NULL DEFAULT 0,
  quantized INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL              -- the change that last wrote it
);
CREATE INDEX IF NOT EXISTS entry_key ON entry(key);
CREATE TABLE IF NOT EXISTS declared_base (
  entry INTEGER NOT NULL REFERENCES entry(id) ON DELETE CASCADE,
  pos INTEGER NOT NULL,
  base TEXT NOT NULL,
  PRIMARY KEY (entry, pos)
);
CREATE INDEX IF NOT EXISTS declared_base_base ON declared_base(base);
CREATE TABLE IF NOT EXISTS retired (row INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS retired_seq ON retired(seq);
CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""
_FACT_COLS = ("key", "published_ms", "hidden", "catalog", "adapter", "gguf", "quantized")
_ENTRY_COLS = ("name", "family", "file", "sha256", "architecture", "width", "layers", "vocab_digest", "source",
               "bytes_read")


@dataclass(frozen=True)
class Rows:
    """The screen rows of one generation, mapped: ``live`` is False for retired rows."""

    screen: np.ndarray  # (rows, SCREEN_DIM) float32
    tokens: np.ndarray  # (rows, TOKEN_DIM) uint64
    cols: np.ndarray  # (rows,) COLS
    live: np.ndarray  # (rows,) bool


def _empty_rows() -> Rows:
    return Rows(np.zeros((0, SCREEN_DIM), np.float32), np.zeros((0, TOKEN_DIM), np.uint64), np.zeros(0, COLS),
                np.zeros(0, bool))


def cols_row(width: int, published_ms: int | None, hidden: bool) -> np.ndarray:
    r = np.zeros(1, COLS)
    r["published_ms"], r["width"], r["hidden"] = NO_TIME if published_ms is None else published_ms, width, hidden
    return r


class IndexDB:
    """``index.db`` and the row files of one index directory (module docstring). Thread-safe; one writer
    per home is the caller's business (:mod:`lineage.writer`), SQLite serializes the rest."""

    def __init__(self, root: Path, map_rows: bool = True, initial: dict[str, int] | None = None) -> None:
        """Open ``root/index.db`` if it exists (it is created by the first write, with ``initial``'s values in
        its state table); ``map_rows``: map the row files now (a rebuild does not: it writes new ones)."""
        self.root = root
        self._initial = dict(initial or {})
        self.path = root / "index.db"
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self._state = (0, 0, 0)  # (generation, rows, seq) of the view below
        self._rows = _empty_rows()
        self._mapped = False
        if self.path.exists():
            self._open()
            if map_rows:
                self._view(full=True)

    # -- connection -----------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        if self._con is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA foreign_keys=ON")
                con.executescript(SCHEMA)
                v = con.execute("SELECT v FROM state WHERE k='version'").fetchone()
                if v is None:
                    con.execute("INSERT OR IGNORE INTO state VALUES ('version', ?), ('generation', 1), ('rows', 0), "
                                "('seq', 0)", (DB_VERSION,))
                    con.executemany("INSERT OR IGNORE INTO state VALUES (?, ?)", list(self._initial.items()))
                elif v[0] != DB_VERSION:
                    raise FingerprintIndexError(f"{self.path}: version {v[0]}, expected {DB_VERSION}")
            except (sqlite3.DatabaseError, OSError) as e:
                raise FingerprintIndexError(f"{self.path}: corrupt index ({e}); lineage repair rebuilds it from its "
                                            "fingerprint files") from e
            self._con = con
        return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def _read_state(self) -> tuple[int, int, int]:
        s = dict(self._open().execute("SELECT k, v FROM state").fetchall())
        return int(s["generation"]), int(s["rows"]), int(s["seq"])

    def _files(self, generation: int) -> tuple[Path, Path, Path]:
        return (self.root / f"screen-{generation}.f32", self.root / f"tokens-{generation}.u64",
                self.root / f"cols-{generation}.bin")

    def _map(self, generation: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if rows == 0:
            e = _empty_rows()
            return e.screen, e.tokens, e.cols
        out: list[np.ndarray] = []
        kinds: list[tuple[np.dtype[Any], tuple[int, ...]]] = [
            (np.dtype(np.float32), (rows, SCREEN_DIM)), (np.dtype(np.uint64), (rows, TOKEN_DIM)), (COLS, (rows,))]
        for p, (dtype, shape) in zip(self._files(generation), kinds):
            need = int(np.prod(shape)) * dtype.itemsize
            try:
                if p.stat().st_size < need:
                    raise FingerprintIndexError(f"{p}: {p.stat().st_size} bytes, {need} expected; lineage repair "
                                                "rebuilds the index from its fingerprint files")
                out.append(np.memmap(p, dtype=dtype, mode="r", shape=shape))
            except OSError as e:
                raise FingerprintIndexError(f"{p}: unreadable ({e}); lineage repair rebuilds the index") from e
        return out[0], out[1], out[2]

    def _view(self, full: bool = False) -> None:
        """Bring the mapped rows up to the database's state (only what changed, unless ``full``)."""
        gen, rows, seq = self._read_state()
        old_gen, old_rows, old_seq = self._state
        if not full and self._mapped and (gen, rows, seq) == self._state:
            return
        full = full or not self._mapped
        if full or gen != old_gen:
            screen, tokens, cols = self._map(gen, rows)
            self._drop_older(gen)
            live = np.ones(rows, bool)
            retired = [r for (r,) in self._open().execute("SELECT row FROM retired WHERE row < ?", (rows,))]
        else:
            screen, tokens, cols = self._map(gen, rows) if rows != old_rows else (
                self._rows.screen, self._rows.tokens, self._rows.cols)
            live = np.concatenate([self._rows.live, np.ones(rows - old_rows, bool)]) if rows > old_rows else self._rows.live
            retired = [r for (r,) in self._open().execute("SELECT row FROM retired WHERE seq > ? AND row < ?",
                                                          (old_seq, rows))]
        live[np.asarray(retired, np.int64)] = False
        self._rows = Rows(screen, tokens, cols, live)
        self._state = (gen, rows, seq)
        self._mapped = True

    def _drop_older(self, generation: int) -> None:
        """Delete row files of generations before ``generation`` (a rebuild killed after its commit left
        them). Never later ones: a rebuild in progress writes those. A process that still maps one keeps
        reading it (an unlinked file lives while it is mapped)."""
        for p in self.root.glob("*-*.*"):
            stem, _, gen = p.stem.rpartition("-")
            if stem in ("screen", "tokens", "cols") and gen.isdigit() and int(gen) < generation:
                with contextlib.suppress(OSError):  # a read-only home: left for a writer to remove
                    p.unlink(missing_ok=True)

    def refresh(self) -> bool:
        """Catch up with writes by other processes (cheap when nothing changed); returns whether any did."""
        with self._lock:
            if self._con is None and not self.path.exists():
                return False
            before = self._state
            self._view()
            return self._state != before

    @property
    def stamp(self) -> str:
        """What changes whenever an entry is added, changed or removed, by any process (after :meth:`refresh`)."""
        self.refresh()
        return ".".join(map(str, self._state))

    def rows(self) -> Rows:
        """The mapped screen rows as of the last write or :meth:`refresh` of this process."""
        with self._lock:
            if not self._mapped and self._con is not None:
                self._view(full=True)
            return self._rows

    # -- reads ----------------------------------------------------------------------------------------
    def _select(self, where: str, args: Sequence[object]) -> list[Entry]:
        if self._con is None:
            return []
        with self._lock:
            cur = self._con.execute(f"SELECT id, {', '.join(_ENTRY_COLS + _FACT_COLS)} FROM entry {where}", args)
            got = cur.fetchall()
            ids = [g[0] for g in got]
            bases: dict[int, list[str]] = {}
            if ids:
                q = "SELECT entry, base FROM declared_base WHERE entry IN (SELECT value FROM json_each(?)) ORDER BY entry, pos"
                for eid, base in self._con.execute(q, (json.dumps(ids),)):
                    bases.setdefault(eid, []).append(base)
        n = len(_ENTRY_COLS)
        return [Entry(**dict(zip(_ENTRY_COLS, g[1:n + 1])),
                      facts=Facts(g[n + 1], g[n + 2], tuple(bases.get(g[0], ())), *map(bool, g[n + 3:])))
                for g in got]

    def get(self, name: str) -> Entry | None:
        got = self._select("WHERE name = ?", (name,))
        return got[0] if got else None

    def all(self) -> list[Entry]:
        return self._select("ORDER BY id", ())

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read (none before the first write created ``index.db``)."""
        if self._con is None:
            return []
        with self._lock:
            return self._con.execute(sql, args).fetchall()

    def count(self) -> int:
        got = self._query("SELECT count(*) FROM entry")
        return int(got[0][0]) if got else 0

    def names(self) -> list[str]:
        return [n for (n,) in self._query("SELECT name FROM entry ORDER BY id")]

    def names_of_rows(self, rows: Sequence[int] | np.ndarray) -> dict[int, str]:
        """Screen row → entry name, for those rows that belong to an entry."""
        if not len(rows):
            return {}
        return dict(self._query("SELECT row, name FROM entry WHERE row IN (SELECT value FROM json_each(?))",
                               (json.dumps([int(r) for r in rows]),)))

    def row_of(self, name: str) -> int | None:
        got = self._query("SELECT row FROM entry WHERE name = ?", (name,))
        return int(got[0][0]) if got else None

    def name_for_key(self, key: str) -> str | None:
        got = self._query("SELECT name FROM entry WHERE key = ? ORDER BY id LIMIT 1", (key,))
        return str(got[0][0]) if got else None

    def without_key(self) -> list[str]:
        """Entries that keep no graph key (local bases, and catalog bases indexed before keys were kept)."""
        return [n for (n,) in self._query("SELECT name FROM entry WHERE key IS NULL ORDER BY id")]

    def citing(self, base: str) -> list[Entry]:
        """Entries whose card declares ``base``."""
        return self._select("WHERE id IN (SELECT entry FROM declared_base WHERE base = ?) ORDER BY id", (base,))

    def families(self) -> list[str]:
        return [f for (f,) in self._query("SELECT DISTINCT family FROM entry WHERE family != '' ORDER BY family")]

    def keys(self) -> list[str]:
        return [k for (k,) in self._query("SELECT key FROM entry WHERE key IS NOT NULL")]

    # -- writes ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers of every process take turns), then this
        process's view brought up to it. The caller holds ``_lock``."""
        con = self._open()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._view()

    def _write_rows(self, gen: int, start: int, screen: np.ndarray, tokens: np.ndarray, cols: np.ndarray) -> None:
        for p, arr in zip(self._files(gen), (screen, tokens, cols)):
            data = np.ascontiguousarray(arr).tobytes()
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, start * (len(data) // max(len(arr), 1)))
            finally:
                os.close(fd)

    def _insert(self, con: sqlite3.Connection, e: Entry, row: int, seq: int) -> None:
        f = e.facts
        vals = (e.name, e.family, e.file, e.sha256, e.architecture, int(e.width), int(e.layers), e.vocab_digest,
                e.source, int(e.bytes_read), f.key, f.published_ms, int(f.hidden), int(f.catalog), int(f.adapter),
                int(f.gguf), int(f.quantized))
        old = con.execute("SELECT id, row FROM entry WHERE name = ?", (e.name,)).fetchone()
        if old is None:
            cur = con.execute(f"INSERT INTO entry (row, seq, {', '.join(_ENTRY_COLS + _FACT_COLS)}) VALUES "
                              f"(?, ?, {', '.join('?' * len(vals))})", (row, seq, *vals))
            eid = cur.lastrowid
        else:
            eid = old[0]
            if old[1] != row:
                con.execute("INSERT OR REPLACE INTO retired VALUES (?, ?)", (old[1], seq))
            con.execute(f"UPDATE entry SET row = ?, seq = ?, {', '.join(c + ' = ?' for c in _ENTRY_COLS + _FACT_COLS)} "
                        "WHERE id = ?", (row, seq, *vals, eid))
            con.execute("DELETE FROM declared_base WHERE entry = ?", (eid,))
        con.executemany("INSERT INTO declared_base VALUES (?, ?, ?)", [(eid, i, b) for i, b in enumerate(f.bases)])

    def put(self, entries: Sequence[Entry], screen: np.ndarray, tokens: np.ndarray) -> None:
        """Add ``entries`` (a name already there is replaced: its old row retired) with their screen rows,
        appended, in one transaction."""
        if not entries:
            return
        with self._lock, self._tx() as con:
            gen, rows, seq = self._read_state()
            cols = np.concatenate([cols_row(e.width, e.facts.published_ms, e.facts.hidden) for e in entries])
            self._write_rows(gen, rows, screen.astype(np.float32), tokens.astype(np.uint64), cols)
            seq += 1
            for i, e in enumerate(entries):
                self._insert(con, e, rows + i, seq)
            con.execute("UPDATE state SET v = ? WHERE k = 'rows'", (rows + len(entries),))
            con.execute("UPDATE state SET v = ? WHERE k = 'seq'", (seq,))

    def update(self, name: str, new: Entry) -> None:
        """Write ``new`` over the entry ``name`` (a rename when the names differ). Same fingerprint, so the
        screen vectors are kept; a new row only when what the gates read changed."""
        with self._lock, self._tx() as con:
            gen, rows, seq = self._read_state()
            seq += 1
            got = con.execute("SELECT id, row, published_ms, hidden FROM entry WHERE name = ?", (name,)).fetchone()
            if got is None:
                raise FingerprintIndexError(f"{self.root}: no entry {name!r}")
            eid, row, ms, hidden = got
            if name != new.name:
                if con.execute("SELECT 1 FROM entry WHERE name = ?", (new.name,)).fetchone():
                    raise FingerprintIndexError(f"{self.root}: cannot rename {name} to {new.name}: that entry exists")
                con.execute("UPDATE entry SET name = ? WHERE id = ?", (new.name, eid))
            target = row
            if (ms, bool(hidden)) != (new.facts.published_ms, new.facts.hidden):
                screen, tokens, _ = self._map(gen, rows)
                self._write_rows(gen, rows, np.array(screen[row:row + 1]), np.array(tokens[row:row + 1]),
                                 cols_row(new.width, new.facts.published_ms, new.facts.hidden))
                target = rows
                con.execute("UPDATE state SET v = ? WHERE k = 'rows'", (rows + 1,))
            self._insert(con, new, target, seq)
            con.execute("UPDATE state SET v = ? WHERE k = 'seq'", (seq,))

    def remove(self, name: str) -> None:
        if self._con is None:
            return
        with self._lock, self._tx() as con:
            _, _, seq = self._read_state()
            got = con.execute("SELECT row FROM entry WHERE name = ?", (name,)).fetchone()
            if got is not None:
                con.execute("INSERT OR REPLACE INTO retired VALUES (?, ?)", (got[0], seq + 1))
                con.execute("DELETE FROM entry WHERE name = ?", (name,))
                con.execute("UPDATE state SET v = ? WHERE k = 'seq'", (seq + 1,))

    def state(self, k: str) -> int | None:
        """A value of the ``state`` table (the caller's own keys, e.g. what its screen rows hold)."""
        rows = self._query("SELECT v FROM state WHERE k = ?", (k,))
        return int(rows[0][0]) if rows else None

    def replace_all(self, entries: Sequence[Entry], screen: np.ndarray, tokens: np.ndarray,
                    state: dict[str, int] | None = None) -> None:
        """Every entry at once, in fresh files of the next generation (a rebuild, a migration): one
        transaction (which also sets ``state``'s values); the old generation's files are deleted after it
        commits."""
        with self._lock:
            gen, _, seq = self._read_state()  # (the caller holds the home's writer lock: no writer between)
            self._write_generation(gen + 1, entries, screen, tokens)
            with self._tx() as tx:  # then the view maps the new generation and deletes the old one's files
                self._replace_entries(tx, entries, gen + 1, seq + 1, state)

    def recompute_rows(self, key: str, version: int,
                       compute: Callable[[list[Entry]], tuple[np.ndarray, np.ndarray]]) -> bool:
        """Every entry's screen and token rows computed again by ``compute`` into the next generation, unless
        ``state[key]`` already is ``version`` (then False). The read of the entries, the new files and the
        commit happen inside one write transaction: another process's add cannot fall between the snapshot
        and the swap and be lost (it waits; this runs once, at the first open after an upgrade)."""
        with self._lock, self._tx() as tx:
            got = tx.execute("SELECT v FROM state WHERE k = ?", (key,)).fetchone()
            if got is not None and got[0] == version:
                return False
            gen, _, seq = self._read_state()
            entries = self.all()
            screen, tokens = compute(entries)
            self._write_generation(gen + 1, entries, screen, tokens)
            self._replace_entries(tx, entries, gen + 1, seq + 1, {key: version})
        return True

    def _write_generation(self, gen: int, entries: Sequence[Entry], screen: np.ndarray, tokens: np.ndarray) -> None:
        for p in self._files(gen):
            p.unlink(missing_ok=True)  # a rebuild killed before its commit left them
        cols = np.concatenate([cols_row(e.width, e.facts.published_ms, e.facts.hidden) for e in entries]) \
            if entries else np.zeros(0, COLS)
        for p in self._files(gen):
            p.touch()
        if entries:
            self._write_rows(gen, 0, screen.astype(np.float32), tokens.astype(np.uint64), cols)

    def _replace_entries(self, tx: sqlite3.Connection, entries: Sequence[Entry], gen: int, seq: int,
                         state: dict[str, int] | None) -> None:
        tx.execute("DELETE FROM declared_base")
        tx.execute("DELETE FROM entry")
        tx.execute("DELETE FROM retired")
        for i, e in enumerate(entries):
            self._insert(tx, e, i, seq)
        for k, v in (("generation", gen), ("rows", len(entries)), ("seq", seq)):
            tx.execute("UPDATE state SET v = ? WHERE k = ?", (v, k))
        for k, v in (state or {}).items():
            tx.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (k, v))


class Entries(Mapping[str, Entry]):
    """The entries of an index, read from ``index.db`` on each access (never held in memory whole)."""

    def __init__(self, db: IndexDB) -> None:
        self._db = db

    def __getitem__(self, name: str) -> Entry:
        e = self._db.get(name)
        if e is None:
            raise KeyError(name)
        return e

    def get(self, name: str, default: Entry | None = None) -> Entry | None:  # type: ignore[override]
        e = self._db.get(name)
        return default if e is None else e

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._db.row_of(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._db.names())

    def __len__(self) -> int:
        return self._db.count()

    def values(self) -> list[Entry]:  # type: ignore[override]
        return self._db.all()

    def items(self) -> list[tuple[str, Entry]]:  # type: ignore[override]
        return [(e.name, e) for e in self._db.all()]
