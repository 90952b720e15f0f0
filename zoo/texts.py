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


def _write(name: str, path: str) -> None:
    """One domain's text to ``path`` (UTF-8), atomically: a reader never sees half a file."""
    p = Path(path)
    tmp = p.with_name(f"{p.name}.tmp{os.getpid()}")
    tmp.write_bytes(corpus.domain_text(name).encode("utf-8"))
    os.replace(tmp, p)


def ensure(root: Path, workers: int = 2) -> Path:
    """The directory holding ``<domain>.txt`` for every :data:`corpus.DOMAINS`, written if missing.

    Raises ``OSError`` when ``root`` is not writable (the caller then works from memory)."""
    d = root / f".text-{tag()}"
    missing = [n for n in corpus.DOMAINS if not (d / f"{n}.txt").exists()]
    if missing:
        d.mkdir(parents=True, exist_ok=True)
        if workers > 1 and len(missing) > 1:
            # docs first: it is the longest, so the other worker takes the rest meanwhile
            order = sorted(missing, key=lambda n: n != "docs")
            with ProcessPoolExecutor(min(workers, len(order)), mp_context=get_context("spawn")) as pool:
                for f in [pool.submit(_write, n, str(d / f"{n}.txt")) for n in order]:
                    f.result()
        else:
            for n in missing:
                _write(n, str(d / f"{n}.txt"))
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
