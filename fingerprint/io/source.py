"""Byte sources: where checkpoint bytes come from.

A :class:`ByteSource` serves ``read(offset, length)`` and counts what it served, so every reader
can report the exact bytes it read. :class:`LocalFileSource` reads a local file with ``os.pread``;
the crawler provides an HTTP-range source with the same interface. A :class:`Repo` groups the
files of one model (config, tokenizer, weight shards) behind the same two kinds of access.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

from fingerprint.errors import CheckpointFormatError, UnsafePathError

#: Largest small file (config.json, tokenizer.json, shard index) we agree to read whole.
MAX_SMALL_FILE_BYTES = 64 * 1024 * 1024


@runtime_checkable
class ByteSource(Protocol):
    """Random access to the bytes of one file.

    Attributes:
        name: a label for messages (path or URL).
        size: total size of the file in bytes.
        bytes_read: how many bytes ``read`` has returned so far.
    """

    name: str

    @property
    def size(self) -> int: ...

    @property
    def bytes_read(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes starting at ``offset``, or raise."""
        ...


class CountingSource:
    """What every byte source shares: a name, a size, and a thread-safe count of the bytes it served."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self._size = size
        self._bytes_read = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    @property
    def bytes_read(self) -> int:
        return self._bytes_read

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            self._bytes_read += len(data)
        return data


class LocalFileSource(CountingSource):
    """A :class:`ByteSource` over a local file, one ``pread`` per call."""

    #: Local reads are free to repeat, so read the 8-byte header length first, then the header.
    header_prefetch = 8

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        super().__init__(str(self.path), self.path.stat().st_size)

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.name, self._size, offset, length)
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), length, offset)
        if len(data) != length:
            raise CheckpointFormatError(self.name, f"short read at {offset}: wanted {length}, got {len(data)}")
        return self._count(data)


class MemorySource(CountingSource):
    """A :class:`ByteSource` over bytes already in memory (a fingerprint fetched from an object store)."""

    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(name, len(data))
        self.data = data

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.name, self._size, offset, length)
        return self._count(self.data[offset:offset + length])


def check_range(name: str, size: int, offset: int, length: int) -> None:
    """Raise :class:`CheckpointFormatError` unless ``[offset, offset+length)`` lies inside the file."""
    if offset < 0 or length < 0 or offset + length > size:
        raise CheckpointFormatError(
            name, f"byte range [{offset}, {offset + length}) outside the file of {size} bytes"
        )


def safe_relative_name(name: str, where: str) -> str:
    """Validate a file name that came from inside a checkpoint (e.g. a shard index).

    Only plain relative POSIX names are accepted: no absolute paths, no ``..``, no backslashes,
    no NUL bytes, no empty parts.

    Raises:
        UnsafePathError: if the name could escape the model directory.
    """
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise UnsafePathError(str(name), where)
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/") or any(part in ("..", ".", "") for part in name.split("/")):
        raise UnsafePathError(name, where)
    if len(name) > 512 or (len(name) > 1 and name[1] == ":"):
        raise UnsafePathError(name, where)
    return name


class Repo(Protocol):
    """The files of one model: a local directory here, an HTTP repo in the crawler."""

    name: str

    def exists(self, filename: str) -> bool: ...

    def read_bytes(self, filename: str, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
        """Read a small file whole; refuse files above ``max_bytes``."""
        ...

    def source(self, filename: str) -> ByteSource:
        """A byte source for a (possibly huge) weight file."""
        ...

    def files(self) -> list[str]: ...


class LocalRepo:
    """A :class:`Repo` over a local model directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._sources: dict[str, LocalFileSource] = {}
        self.small_bytes_read = 0

    def _resolve(self, filename: str) -> Path:
        safe_relative_name(filename, self.name)
        return self.path / filename

    def exists(self, filename: str) -> bool:
        return self._resolve(filename).is_file()

    def read_bytes(self, filename: str, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
        p = self._resolve(filename)
        size = p.stat().st_size
        if size > max_bytes:
            raise CheckpointFormatError(str(p), f"file of {size} bytes exceeds the {max_bytes}-byte limit")
        data = p.read_bytes()
        self.small_bytes_read += len(data)
        return data

    def source(self, filename: str) -> LocalFileSource:
        if filename not in self._sources:
            self._sources[filename] = LocalFileSource(self._resolve(filename))
        return self._sources[filename]

    def files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()
        )

    @property
    def weight_bytes_read(self) -> int:
        return sum(s.bytes_read for s in self._sources.values())


class SubRepo:
    """One folder of a :class:`Repo`, seen as a repo of its own.

    Older sentence-transformers repos keep the transformer (``config.json``, weights, tokenizer) in
    ``0_Transformer/`` beside ``modules.json`` and ``1_Pooling/``. Byte counters and other attributes
    are the wrapped repo's, so what a read costs is still counted where the crawler looks.
    """

    def __init__(self, repo: Repo, folder: str) -> None:
        self._repo = repo
        self.folder = safe_relative_name(folder.strip("/"), repo.name) + "/"
        self.name = f"{repo.name}/{self.folder.rstrip('/')}"

    def exists(self, filename: str) -> bool:
        return self._repo.exists(self.folder + filename)

    def read_bytes(self, filename: str, max_bytes: int = MAX_SMALL_FILE_BYTES) -> bytes:
        return self._repo.read_bytes(self.folder + filename, max_bytes)

    def source(self, filename: str) -> ByteSource:
        return self._repo.source(self.folder + filename)

    def files(self) -> list[str]:
        n = len(self.folder)
        return [f[n:] for f in self._repo.files() if f.startswith(self.folder)]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._repo, attr)
