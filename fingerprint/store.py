"""Where fingerprint files live, for the crawler and the index alike: a local directory (the index's,
``$LINEAGE_HOME/index/fingerprints``), or any fsspec URL (``s3://bucket/prefix``, ``gs://…``,
``file:///mnt/fingerprints``) once they outgrow one disk.

Files are content-addressed (``fingerprints/<sha256[:16]>.lfp``), so a store is append-only: a key is
written once, with an atomic put where the backend has one, and every read is checked against the
SHA-256 the index recorded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from fingerprint.errors import FingerprintIndexError

MAX_FETCH_BYTES = 512 * 1024 * 1024  # a 70B fingerprint is 150 MB: anything far larger is not ours


def content_key(sha256: str) -> str:
    """Where the fingerprint file whose bytes hash to ``sha256`` lives in a store."""
    return f"fingerprints/{sha256[:16]}.lfp"


class FingerprintStore:
    """Put and get fingerprint files by key under ``root`` (a directory) or ``url`` (fsspec)."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root, self.url = root, (url or "").rstrip("/") or None
        self._fs: Any = None
        if self.url is not None:
            try:
                import fsspec
            except ImportError as e:  # a dependency; an explicit message if an install lost it
                raise FingerprintIndexError("LINEAGE_FINGERPRINT_STORE needs fsspec (pip install fsspec)") from e
            try:
                self._fs, self._base = fsspec.core.url_to_fs(self.url)
            except (ValueError, ImportError) as e:  # unknown protocol, or its backend (s3fs …) is missing
                raise FingerprintIndexError(f"fingerprint store {self.url!r}: {e}") from e

    def describe(self) -> str:
        return self.url or str(self.root)

    def local_path(self, key: str) -> Path | None:
        """The key's file on this machine's disk, when the store is a local directory."""
        return self.root / key if self.url is None else None

    def exists(self, key: str) -> bool:
        try:
            return (self.root / key).exists() if self._fs is None else bool(self._fs.exists(f"{self._base}/{key}"))
        except OSError as e:
            raise FingerprintIndexError(f"fingerprint store {self.describe()}: {e}") from e

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` (a partial write never shows under the real name)."""
        try:
            if self._fs is None:
                p = self.root / key
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_name(p.name + f".tmp{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, p)
            else:
                target = f"{self._base}/{key}"
                self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)  # a no-op on object stores
                self._fs.pipe_file(target, data)  # object stores write an object whole
        except OSError as e:
            raise FingerprintIndexError(f"fingerprint store {self.describe()}: cannot write {key}: {e}") from e

    def put_content(self, data: bytes) -> tuple[str, str]:
        """Store ``data`` under its content key unless a file is already there: ``(key, sha256)``. The
        crawler and the index share one store, so a fingerprint is written once."""
        sha = hashlib.sha256(data).hexdigest()
        key = content_key(sha)
        if not self.exists(key):
            self.put(key, data)
        return key, sha

    def get(self, key: str) -> bytes:
        """The bytes under ``key``.

        Raises:
            FingerprintIndexError: missing, unreadable, or larger than :data:`MAX_FETCH_BYTES`.
        """
        try:
            if self._fs is None:
                p = self.root / key
                if not p.exists():
                    raise FingerprintIndexError(f"{p}: fingerprint is missing from the index")
                size = p.stat().st_size
            else:
                size = int(self._fs.size(f"{self._base}/{key}"))
            if size > MAX_FETCH_BYTES:
                raise FingerprintIndexError(f"{key}: {size} bytes is larger than any fingerprint")
            return (self.root / key).read_bytes() if self._fs is None else bytes(self._fs.cat_file(f"{self._base}/{key}"))
        except FileNotFoundError as e:
            raise FingerprintIndexError(f"{self.describe()}/{key}: fingerprint is missing from the store") from e
        except OSError as e:
            raise FingerprintIndexError(f"fingerprint store {self.describe()}: cannot read {key}: {e}") from e
