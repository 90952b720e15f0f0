"""Offline training text: the Python standard library's own source, split into disjoint domains.

Every machine with Python has it, so the zoo needs no download. Domains are disjoint by file, so
"different data" really is different text. A digest of the text goes into the zoo's cache key.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from functools import lru_cache
from pathlib import Path

DOMAINS = ("code-a", "code-b", "docs", "tests")
_SKIP = {"site-packages", "dist-packages", "idlelib", "lib2to3", "turtledemo", "ensurepip", "__pycache__", "pydoc_data"}


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if _SKIP & set(rel.parts):
            continue
        out.append(p)
    return out


def _docstrings(src: str) -> list[str]:
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            d = ast.get_docstring(node)
            if d and len(d) > 40:
                out.append(d)
    return out


@lru_cache(maxsize=8)
def domain_text(name: str, max_chars: int = 4_000_000) -> str:
    """Text of one domain, at most ``max_chars`` characters, always the same on one Python version.

    ``code-a``: library modules whose name starts with a-l; ``code-b``: m-z; ``docs``: docstrings of the whole
    library (prose); ``tests``: the ``test`` package's source.
    """
    if name not in DOMAINS:
        raise ValueError(f"unknown corpus domain {name!r}; choose from {', '.join(DOMAINS)}")
    parts: list[str] = []
    size = 0
    for p in _stdlib_files():
        is_test = "test" in p.parts or p.name.startswith("test_")
        top = p.parts[len(Path(sysconfig.get_paths()["stdlib"]).parts)].lower()
        try:
            src = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if name == "tests" and is_test:
            parts.append(src)
        elif name == "docs" and not is_test:
            parts.extend(_docstrings(src))
        elif not is_test and ((name == "code-a" and top[0] <= "l") or (name == "code-b" and top[0] > "l")):
            parts.append(src)
        else:
            continue
        size += len(parts[-1]) if parts else 0
        if size >= max_chars:
            break
    return "\n\n".join(parts)[:max_chars]


def stdlib_files() -> list[Path]:
    """The library files the domains are drawn from, in the order they are read."""
    return _stdlib_files()


def docstrings(files: list[Path]) -> list[str]:
    """The ``docs`` domain's parts from ``files`` (non-test modules), in order: ``domain_text("docs")`` is
    ``"\n\n".join`` of them over :func:`stdlib_files` while that stays under its ``max_chars``, so the
    parsing (the domain's whole cost) can be split by files."""
    out: list[str] = []
    for p in files:
        if "test" in p.parts or p.name.startswith("test_"):
            continue
        try:
            out.extend(_docstrings(p.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def digest(*names: str) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update(domain_text(n).encode("utf-8"))
    return h.hexdigest()[:16]


def preference_pairs(n: int, seed: int = 0, docs_text: str | None = None) -> list[tuple[str, str]]:
    """(chosen, rejected) text pairs for a DPO-style loop: real docstrings vs the same words shuffled.
    ``docs_text`` is the ``docs`` domain when the caller has it already (:mod:`zoo.texts`)."""
    rng = random.Random(seed)
    text = domain_text("docs") if docs_text is None else docs_text
    docs = [d for d in text.split("\n\n") if 60 < len(d) < 400]
    rng.shuffle(docs)
    out = []
    for d in docs[:n]:
        words = d.split()
        bad = words[:]
        rng.shuffle(bad)
        out.append((d, " ".join(bad)))
    return out
