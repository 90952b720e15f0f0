"""The corpus text as files, shared by every zoo built with this interpreter, written in parallel.

:mod:`zoo.corpus` derives four domains from the standard library's source; the ``docs`` domain parses
every module for its docstrings (7 s), and each domain costs 1–2 s more to collect. The zoo needs all four
(its cache key hashes them, :func:`zoo.build.corpus_digest`), so on a fresh machine they are written once
into ``<zoo cache>/.text-<tag>/`` by a small pool of plain Python processes (no torch: they start in
0.1 s), and every later step, in this process or a worker, reads the files instead of parsing again.

The tag hashes the interpreter version, the standard library's path and ``corpus.py``: for one of each
the text is fixed, so a file found under the tag is the text.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from zoo import corpus


def tag() -> str:
    return hashlib.sha256(f"{sys.version}|{sysconfig.get_paths()['stdlib']}|".encode()
                          + Path(corpus.__file__).read_bytes()).hexdigest()[:16]


def _save(p: Path, text: str) -> None:
    """``text`` to ``p`` (UTF-8), atomically: a reader never sees half a file."""
    tmp = p.with_name(f"{p.name}.tmp{os.getpid()}")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, p)


def _write(name: str, path: str) -> None:
    """One domain's text to ``path`` (run in a worker)."""
    _save(Path(path), corpus.domain_text(name))


def _docs_half(half: int) -> list[str]:
    files = corpus.stdlib_files()
    mid = len(files) // 2
    return corpus.docstrings(files[:mid] if half == 0 else files[mid:])


def ensure(root: Path, workers: int = 2) -> Path:
    """The directory holding ``<domain>.txt`` for every :data:`corpus.DOMAINS`, written if missing.

    With two workers, ``docs`` (7 s of parsing, the other three domains together take 5 s) is parsed in
    two halves of the file list, one per worker, and joined here. Raises ``OSError`` when ``root`` is not
    writable (the caller then works from memory)."""
    d = root / f".text-{tag()}"
    missing = [n for n in corpus.DOMAINS if not (d / f"{n}.txt").exists()]
    if not missing:
        return d
    d.mkdir(parents=True, exist_ok=True)
    if workers < 2 or len(missing) < 2:
        for n in missing:
            _write(n, str(d / f"{n}.txt"))
        return d
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        halves = [pool.submit(_docs_half, h) for h in (0, 1)] if "docs" in missing else []
        rest = [pool.submit(_write, n, str(d / f"{n}.txt")) for n in missing if n != "docs"]
        for f in rest:
            f.result()
        if halves:
            docs = "\n\n".join(halves[0].result() + halves[1].result())
            if len(docs) >= 3_000_000:  # near domain_text's 4M cut, its own loop decides where to stop
                docs = corpus.domain_text("docs")
            _save(d / "docs.txt", docs)
    return d


def digest(d: Path) -> str:
    """:func:`zoo.corpus.digest` of all domains, from the files: the same bytes in the same order."""
    h = hashlib.sha256()
    for n in corpus.DOMAINS:
        h.update((d / f"{n}.txt").read_bytes())
    return h.hexdigest()[:16]


def read(d: Path | None, name: str) -> str:
    """One domain's text: from the file when there is one, else collected here."""
    if d is not None:
        try:
            return (d / f"{name}.txt").read_bytes().decode("utf-8")  # bytes: no newline translation
        except OSError:
            pass
    return corpus.domain_text(name)
