"""fingerprint.index and fingerprint.indexdb: add, list, match, tamper; the screen's gates; typed facts;
rows appended, never rewritten; migration from the version-1 files; other processes' writes; a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tinymodels import golden_model, randn, save_state_dict, write_wordlevel_tokenizer

from fingerprint.canonical import open_model
from fingerprint.errors import FingerprintIndexError
from fingerprint.index import Facts, Index, screen_vector, token_sketch
from fingerprint.indexdb import SCREEN_DIM, IndexDB
from fingerprint.screen import VECTOR_VERSION
from fingerprint.sketch import Sketch, load, save, sketch_model
from lineage.cli import main

GOLDEN = Path(__file__).parents[1] / "data" / "golden-tiny-llama.lfp"


def fakes_like(like: Sketch, keys: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A maker of random sketches of ``like``'s kind: (width, seed) → Sketch."""
    def fake(width: int, seed: int, with_keys: list[str] | None = None) -> Sketch:
        r = np.random.default_rng(seed)
        k = with_keys or keys or like.keys
        return Sketch({**like.meta, "hidden_size": width, "num_layers": 2, "source": f"s{seed}"}, k,
                      r.standard_normal((len(k), width)), None, [r.standard_normal((width, 4)) for _ in range(2)],
                      [r.standard_normal((width, 4)) for _ in range(2)], [(0.0, 0.0)] * 2,
                      r.random((2, 2, 16)).astype(np.float32))
    return fake


def test_index_add_list_match_and_tamper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file
    from tinymodels import perturb

    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / "home"))
    base = golden_model(tmp_path / "base")
    sd = load_file(str(base / "model.safetensors"))
    cfg = json.loads((base / "config.json").read_text())
    others = []
    for s in range(3):
        o = save_state_dict({k: randn(*v.shape, seed=1000 * s + i) for i, (k, v) in enumerate(sd.items())}, cfg, tmp_path / f"o{s}")
        write_wordlevel_tokenizer(o, 96)
        others.append(o)
    kid = save_state_dict(perturb(sd, 0.2, seed=7), cfg, tmp_path / "kid")
    write_wordlevel_tokenizer(kid, 96)
    run = CliRunner()
    for p, fam in ((base, "golden"), *((o, f"other{i}") for i, o in enumerate(others))):
        r = run.invoke(main, ["index", "add", str(p), "--family", fam])
        assert r.exit_code == 0, r.output
    r = run.invoke(main, ["index", "add", str(others[0]), "--family", "other0", "--name", "other0-twin"])
    assert r.exit_code == 0, r.output
    listed = json.loads(run.invoke(main, ["index", "list", "--json"]).output)
    assert [e["family"] for e in listed["entries"]] == ["golden", "other0", "other1", "other2", "other0"]
    assert listed["entries"][0]["facts"] == {"key": None, "published_ms": None, "bases": [], "hidden": False,
                                             "catalog": False, "adapter": False, "gguf": False, "quantized": False}
    out = json.loads(run.invoke(main, ["match", str(kid), "--json"]).output)
    assert out["matches"][0]["family"] == "golden" and out["matches"][0]["verdict"] == "derived"
    assert all(m["verdict"] != "derived" for m in out["matches"][1:])
    assert out["stats"]["indexed"] == 5
    # --top counts families: each once, by its best base (two bases of other0 do not both show)
    fams = [m["family"] for m in out["matches"]]
    assert len(fams) == len(set(fams)) == 4
    two = json.loads(run.invoke(main, ["match", str(kid), "--top", "2", "--json"]).output)["matches"]
    assert [m["family"] for m in two] == fams[:2]
    idx_dir = Path(listed["index"])
    f = idx_dir / Index(idx_dir).entries["base"].file
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")
    r = run.invoke(main, ["match", str(kid)])
    assert r.exit_code == 2 and "does not match the SHA-256" in r.output
    (idx_dir / "index.db").write_bytes(b"not a database" * 100)
    for p in idx_dir.glob("index.db-*"):
        p.unlink()
    with pytest.raises(FingerprintIndexError, match="corrupt index"):
        Index(idx_dir)


def test_screen_in_blocks_equals_screening_every_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortlist is the best-prefilter entries that pass the width and token-overlap gates, however
    many blocks of entries the screen has to read to fill it."""
    from fingerprint import index as index_mod

    like = sketch_model(open_model(golden_model(tmp_path / "m")))
    fake = fakes_like(like)
    rng = np.random.default_rng(8)
    vocab_a, vocab_b = [f"a{i}" for i in range(300)], [f"b{i}" for i in range(300)]
    items: list[tuple[str | Path, str | None, str | None]] = []
    fakes = {}
    for i in range(40):
        keys = sorted(rng.choice(vocab_a if i % 3 else vocab_b, 200, replace=False).tolist())
        path = save(fake(int(rng.choice([16, 32, 48])), i, keys), tmp_path / f"e{i}.lfp")
        fakes[f"e{i}"] = load(path)  # as the index reads it (int8 rows and factors)
        items.append((path, f"e{i}", None))
    idx = Index(tmp_path / "idx")
    idx.add_many(items)
    suspect = fake(32, 99, vocab_a[:250])
    mine = set(token_sketch(suspect).tolist()) - {np.iinfo(np.uint64).max}
    brute = []
    for name, sk in fakes.items():
        overlap = len(mine & set(token_sketch(sk).tolist())) / len(mine)
        if sk.width >= 32 and overlap >= index_mod.MIN_TOKEN_OVERLAP:
            brute.append((name, float(screen_vector(sk) @ screen_vector(suspect)), overlap))
    brute.sort(key=lambda x: -x[1])
    assert 5 < len(brute) < 30  # both gates reject some entries
    for block in (3, 256):
        monkeypatch.setattr(index_mod, "SCREEN_BLOCK", block)
        for k in (1, 4, 40):
            got = idx.screen(suspect, k)
            assert [g[0] for g in got] == [b[0] for b in brute[:k]]
            assert [g[1] for g in got] == pytest.approx([b[1] for b in brute[:k]], abs=1e-5)
            assert [g[2] for g in got] == pytest.approx([b[2] for b in brute[:k]])


def test_screen_by_publication_order_hidden_entries_and_updates(tmp_path: Path) -> None:
    """``older_than`` / ``newer_than`` restrict the screen to one side of a publication time (names break
    ties), hidden entries are out of every match but found as later models, updates persist, rows are
    appended (never rewritten), and a damaged row file is an error that a rebuild mends."""
    fake = fakes_like(sketch_model(open_model(golden_model(tmp_path / "m"))))
    idx = Index(tmp_path / "idx")
    widths = {"a": 32, "b": 32, "c": 16, "d": 32, "e": 32}
    times = {"a": 100, "b": 200, "c": 300, "d": 300, "e": 400}
    for i, (name, w) in enumerate(widths.items()):
        idx.add(save(fake(w, i), tmp_path / f"{name}.lfp"), name, "fam",
                facts=Facts(key=f"k-{name}", published_ms=times[name], bases=("org/x",) if name == "d" else (),
                            hidden=name == "e"))
    screen_file = tmp_path / "idx" / "screen-1.f32"
    assert screen_file.stat().st_size == 5 * SCREEN_DIM * 4  # one row per add
    probe = fake(16, 9)
    names = lambda got: sorted(g[0] for g in got)  # noqa: E731
    # before (300, "d"): a, b and c (same time, earlier name); the hidden e is in no match
    assert names(idx.screen(probe, 10, older_than=(300, "d"))) == ["a", "b", "c"]
    assert names(idx.screen(probe, 10)) == ["a", "b", "c", "d"]
    # after (200, "b"), no wider than the probe: c only; a wider probe also sees d and the hidden e
    assert names(idx.screen(probe, 10, newer_than=(200, "b"))) == ["c"]
    assert names(idx.screen(fake(32, 8), 10, newer_than=(200, "b"))) == ["c", "d", "e"]
    assert idx.newer_than((300, "c")) == 2 and idx.entries["a"].when() == (100, "a")
    assert [e.name for e in idx.db.citing("org/x")] == ["d"] and idx.db.name_for_key("k-b") == "b"
    # a family change rewrites no row; showing e (hidden → not) appends one and retires the old
    idx.update("b", family="other")
    assert screen_file.stat().st_size == 5 * SCREEN_DIM * 4
    idx.update("e", family="other", facts=Facts(key="k-e", published_ms=400))
    assert screen_file.stat().st_size == 6 * SCREEN_DIM * 4
    idx.update("a", rename="a2")
    idx.remove("c")
    again = Index(tmp_path / "idx")
    assert list(again.entries) == ["a2", "b", "d", "e"] and again.entries["e"].family == "other"
    assert again.entries["d"].facts.bases == ("org/x",) and not again.entries["e"].facts.hidden
    assert names(again.screen(probe, 10)) == ["a2", "b", "d", "e"]
    assert again.screen(probe, 10) == idx.screen(probe, 10)
    with pytest.raises(FingerprintIndexError):
        again.update("b", rename="d")
    d_file = again.entries["d"].file
    # a truncated row file is refused; a rebuild writes the rows again from the files (keeping what
    # ``keep`` accepts, dropping an entry whose file was altered) into a new generation
    rounded = lambda got: [(n, round(float(a), 5), round(float(b), 5)) for n, a, b in got]  # noqa: E731
    kept = [g for g in rounded(again.screen(probe, 10)) if g[0] in ("a2", "e")]
    del again, idx  # their maps of the file (reading a truncated map is a bus error)
    with open(screen_file, "r+b") as fh:
        fh.truncate(2 * SCREEN_DIM * 4)
    with pytest.raises(FingerprintIndexError, match="lineage repair"):
        Index(tmp_path / "idx")
    (tmp_path / "idx" / d_file).write_bytes(b"LFP altered")
    mended, dropped = Index.rebuild(tmp_path / "idx", keep=lambda e: e.name != "b")
    assert (list(mended.entries), dropped) == (["a2", "e"], ["d"])
    assert not screen_file.exists() and (tmp_path / "idx" / "screen-2.f32").stat().st_size == 2 * SCREEN_DIM * 4
    screen_file.write_bytes(b"left by a rebuild killed after its commit")
    Index(tmp_path / "idx")
    assert not screen_file.exists()  # an older generation's files go when the index is next opened
    assert rounded(Index(tmp_path / "idx").screen(probe, 10)) == rounded(mended.screen(probe, 10)) == kept


def test_another_process_writes_are_seen_by_refresh(tmp_path: Path) -> None:
    """A reader that stays open (the service, the web server) catches up with a writer's adds, updates,
    removals and a rebuild, reading only what changed."""
    fake = fakes_like(sketch_model(open_model(golden_model(tmp_path / "m"))))
    files = [save(fake(32, i), tmp_path / f"f{i}.lfp") for i in range(4)]
    writer = Index(tmp_path / "idx")
    reader = Index(tmp_path / "idx")  # no index.db yet: empty, and nothing created by reading
    assert reader.screen(fake(32, 9), 5) == [] and not reader.refresh()
    writer.add(files[0], "a")
    writer.add(files[1], "b")
    assert reader.refresh() and sorted(n for n, _, _ in reader.screen(fake(32, 9), 5)) == ["a", "b"]
    assert not reader.refresh()  # nothing new
    writer.update("a", facts=Facts(hidden=True))
    writer.remove("b")
    writer.add(files[2], "c")
    assert reader.refresh() and [n for n, _, _ in reader.screen(fake(32, 9), 5)] == ["c"]
    Index.rebuild(tmp_path / "idx")
    writer.add(files[3], "d")  # the writer's own view follows the new generation too
    assert reader.refresh() and sorted(n for n, _, _ in reader.screen(fake(32, 9), 5)) == ["c", "d"]


def test_a_version_1_index_is_migrated_with_its_facts(tmp_path: Path) -> None:
    """An index written before index.db (index.json with free-form meta, screen.npz) opens as before:
    same entries, facts typed, same screen; its files are kept with a .v1 suffix."""
    fake = fakes_like(sketch_model(open_model(golden_model(tmp_path / "m"))))
    root = tmp_path / "idx"
    new = Index(tmp_path / "ref")
    sks = {n: fake(32, i) for i, n in enumerate(["org/base", "org/ft", "local"])}
    metas = {"org/base": {"published_ms": 1, "catalog": True, "key": "kb"},
             "org/ft": {"key": "kf", "published_ms": 5, "bases": ["org/base"], "adapter": False, "gguf": True,
                        "quantized": False, "hidden": True}, "local": {}}
    entries = []
    for n, sk in sks.items():
        e = new.add(save(sk, tmp_path / f"{n.replace('/', '_')}.lfp"), n, "fam")
        d = {k: getattr(e, k) for k in ("name", "family", "file", "sha256", "architecture", "width", "layers",
                                         "vocab_digest", "source", "bytes_read")}
        entries.append({**d, "meta": metas[n]})
    (root / "fingerprints").mkdir(parents=True)
    for p in (tmp_path / "ref" / "fingerprints").iterdir():
        (root / "fingerprints" / p.name).write_bytes(p.read_bytes())
    (root / "index.json").write_text(json.dumps({"version": 1, "entries": entries}))
    # version-1 rows held other vectors (Q/K spectra): here all zeros, which no screen could rank
    np.savez(root / "screen.npz", screen=np.zeros((len(sks), SCREEN_DIM), np.float32),
             tokens=np.stack([token_sketch(s) for s in sks.values()]))
    idx = Index(root)
    assert list(idx.entries) == list(sks)
    assert idx.entries["org/ft"].facts == Facts("kf", 5, ("org/base",), hidden=True, gguf=True)
    assert idx.entries["org/base"].facts == Facts("kb", 1, catalog=True)
    assert idx.entries["local"].facts == Facts()
    assert (root / "index.json.v1").exists() and (root / "screen.npz.v1").exists() and not (root / "index.json").exists()
    probe = fake(32, 7)
    assert idx.db.state("screen") == VECTOR_VERSION  # the rows were computed again from the files
    assert idx.screen(probe, 5) == [g for g in new.screen(probe, 5) if g[0] != "org/ft"]  # ft is hidden now
    assert idx.sketch("org/ft").keys == sks["org/ft"].keys


ADDER = """
import sys
from fingerprint.index import Facts, Index
idx = Index(sys.argv[1])
files = sys.argv[2:]
i = 0
while True:
    idx.add(files[i % len(files)], f"m{i}", "fam", facts=Facts(key=f"k{i}", published_ms=i))
    print(i, flush=True)
    i += 1
"""


def test_an_index_killed_while_adding_stays_consistent(tmp_path: Path) -> None:
    """SIGKILL a process adding entries as fast as it can: every committed entry is whole (its screen row
    is its own file's), the count is what it printed or one more, and adding goes on where it stopped."""
    fake = fakes_like(sketch_model(open_model(golden_model(tmp_path / "m"))))
    files = [str(save(fake(32, i), tmp_path / f"f{i}.lfp")) for i in range(3)]
    proc = subprocess.Popen([sys.executable, "-c", ADDER, str(tmp_path / "idx"), *files], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    printed = -1
    deadline = time.monotonic() + 60
    while printed < 40 and time.monotonic() < deadline:
        printed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    idx = Index(tmp_path / "idx")
    n = len(idx.entries)
    assert printed + 1 <= n <= printed + 2
    rows = idx.db.rows()
    vectors = {f: screen_vector(load(f)) for f in files}
    for e in idx.entries.values():
        row = idx.db.row_of(e.name)
        assert row is not None and e.facts.key == f"k{e.name[1:]}"
        assert np.allclose(rows.screen[row], vectors[files[int(e.name[1:]) % 3]], atol=1e-6)
    idx.add(files[0], f"m{n}", "fam", facts=Facts(key=f"k{n}", published_ms=n))
    assert len(idx.entries) == n + 1 and int(idx.db.rows().live.sum()) == n + 1
    assert next(g[0] for g in idx.screen(fake(32, 0), 1, older_than=(n + 1, ""))) in {f"m{j}" for j in range(0, n + 1, 3)}


def test_rows_of_an_earlier_screen_version_are_computed_again_once(tmp_path: Path) -> None:
    """An index whose state says screen version 1 (rows of Q/K spectra) gets every row computed again from
    its fingerprint files at the next open, inside one write transaction, and only once."""
    import sqlite3

    fake = fakes_like(sketch_model(open_model(golden_model(tmp_path / "m"))))
    files = [save(fake(32, i), tmp_path / f"f{i}.lfp") for i in range(3)]
    idx = Index(tmp_path / "idx")
    idx.add_many([(f, f"e{i}", "fam") for i, f in enumerate(files)])
    idx.close()
    con = sqlite3.connect(tmp_path / "idx" / "index.db")
    con.execute("UPDATE state SET v = 1 WHERE k = 'screen'")
    con.commit()
    con.close()
    generation = IndexDB(tmp_path / "idx").state("generation")
    again = Index(tmp_path / "idx")
    assert again.db.state("screen") == VECTOR_VERSION and again.db.state("generation") == (generation or 0) + 1
    rows = again.db.rows()
    for i, f in enumerate(files):
        row = again.db.row_of(f"e{i}")
        assert row is not None and np.allclose(rows.screen[row], screen_vector(load(f)), atol=1e-6)
    assert list(again.entries) == ["e0", "e1", "e2"]
    assert Index(tmp_path / "idx").db.state("generation") == (generation or 0) + 1  # not again
