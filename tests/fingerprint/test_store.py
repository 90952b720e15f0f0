"""fingerprint.store: the index's fingerprint files under an fsspec URL (tested with a file:// URL)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fingerprint.errors import FingerprintFileError, FingerprintIndexError
from fingerprint.index import Index
from fingerprint.sketch import load
from lineage.settings import Settings, SettingsError

GOLDEN = Path(__file__).parents[1] / "data" / "golden-tiny-llama.lfp"


def test_an_index_keeps_its_fingerprints_under_an_fsspec_url(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'objects'}"
    idx = Index(tmp_path / "index", store=url)
    copy = tmp_path / "other.lfp"
    shutil.copyfile(GOLDEN, copy)
    idx.add_many([(GOLDEN, "org/base", "base"), (copy, "org/mirror", "base")])
    objects = list((tmp_path / "objects" / "fingerprints").glob("*.lfp"))
    assert len(objects) == 1  # content-addressed: one object for the same bytes
    assert not (tmp_path / "index" / "fingerprints").exists()  # nothing on the index's disk but its entries
    again = Index(tmp_path / "index", store=url)
    want = load(GOLDEN)
    got = again.sketch("org/base")
    assert got.keys == want.keys and np.array_equal(got.embed, want.embed)
    assert again.local_path("org/base") is None
    matches, _ = again.match(want, top=2)
    assert {m.name for m in matches} == {"org/base", "org/mirror"} and matches[0].score > 0.99
    objects[0].write_bytes(objects[0].read_bytes()[:-1] + b"\x00")
    with pytest.raises(FingerprintFileError, match="tampered"):
        again.sketch("org/base")
    objects[0].unlink()
    with pytest.raises(FingerprintIndexError, match="missing"):
        again.sketch("org/base")


def test_a_bad_store_url_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FingerprintIndexError, match="nope"):
        Index(tmp_path / "index", store="nope://bucket/x")
    with pytest.raises(SettingsError, match="fsspec URL"):
        Settings.from_env({"LINEAGE_HOME": str(tmp_path), "LINEAGE_FINGERPRINT_STORE": "/not/a/url"})
    s = Settings.from_env({"LINEAGE_HOME": str(tmp_path), "LINEAGE_FINGERPRINT_STORE": f"file://{tmp_path}/o"})
    assert s.fingerprint_store == f"file://{tmp_path}/o"
