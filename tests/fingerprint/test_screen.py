"""Screening fingerprints (fingerprint/screen.py): invariances, ranking, byte budget, file format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tinymodels import attacked_family

from fingerprint.canonical import open_model
from fingerprint.errors import FingerprintFileError
from fingerprint.screen import compare, layer_plan, load, save, screen_model, to_bytes, u_center
from lineage.cli import main
from zoo.attacks import ATTACKS


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """:func:`tinymodels.attacked_family`, built once for this module."""
    return attacked_family(tmp_path_factory.mktemp("screen-family"))


def test_u_centring_matches_the_torch_estimator() -> None:
    import torch

    from fingerprint.similarity.cka import u_center as u_center_torch

    g = np.random.default_rng(0).standard_normal((20, 20))
    g = g @ g.T
    np.testing.assert_allclose(u_center(g[None])[0], u_center_torch(torch.from_numpy(g)).numpy(), atol=1e-12)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_function_preserving_attacks_leave_the_screen_unchanged(family: dict[str, Path], attack: str) -> None:
    derived = screen_model(open_model(family["derived"]))
    attacked = screen_model(open_model(family[attack]))
    r = compare(derived, attacked)
    assert r.score > 0.999 and r.embed > 0.999, (attack, r)


def test_the_parent_ranks_above_an_unrelated_model(family: dict[str, Path]) -> None:
    base, other = screen_model(open_model(family["base"])), screen_model(open_model(family["other"]))
    for name in ["derived", *ATTACKS]:
        suspect = screen_model(open_model(family[name]))
        parent, unrelated = compare(base, suspect), compare(other, suspect)
        assert parent.score > 0.8 and unrelated.score < 0.3, (name, parent, unrelated)
        assert parent.shared == len(suspect.keys)


def test_a_screen_reads_its_byte_budget_and_no_more(family: dict[str, Path]) -> None:
    m = open_model(family["base"])
    assert layer_plan(m, budget=0) == [0, m.spec.num_layers - 1]  # never fewer than two layers
    m = open_model(family["base"])
    sc = screen_model(m, budget=10**12)
    assert sc.meta["layers"] == list(range(m.spec.num_layers))
    per_layer = 2 * (m.info("q", 0).shape[0] + m.info("k", 0).shape[0]) * m.spec.hidden_size  # at 16 bits
    m2 = open_model(family["base"])
    one = screen_model(m2, budget=2 * per_layer)
    assert one.meta["layers"] == [0, m2.spec.num_layers - 1]
    # what it read: the header, 256 anchor rows' runs, the two layers' Q/K and their norms
    assert m2.bytes_read < sc.meta["bytes_read"]


def test_a_file_reads_back_to_the_same_screen_and_bytes(family: dict[str, Path], tmp_path: Path) -> None:
    sc = screen_model(open_model(family["derived"]))
    p = save(sc, tmp_path / "d.lsc")
    back = load(p)
    np.testing.assert_allclose(back.grams, sc.grams, rtol=1e-6, atol=1e-9)
    assert to_bytes(back) == p.read_bytes() == to_bytes(screen_model(open_model(family["derived"])))
    base = screen_model(open_model(family["base"]))
    assert compare(base, back).score == pytest.approx(compare(base, sc).score, abs=1e-9)


def test_broken_screen_files_are_refused_in_one_line(family: dict[str, Path], tmp_path: Path) -> None:
    p = save(screen_model(open_model(family["base"])), tmp_path / "b.lsc")
    raw = p.read_bytes()
    (tmp_path / "cut.lsc").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FingerprintFileError):
        load(tmp_path / "cut.lsc")
    (tmp_path / "v9.lsc").write_bytes(raw.replace(b'\\"version\\": 1', b'\\"version\\": 9', 1))
    with pytest.raises(FingerprintFileError, match="version 9"):
        load(tmp_path / "v9.lsc")
    lfp = tmp_path / "x.lfp"
    CliRunner().invoke(main, ["fingerprint", str(family["base"]), "-o", str(lfp)])
    with pytest.raises(FingerprintFileError, match=r"no lineage\.screen metadata"):
        load(lfp)


def test_fingerprint_cli_writes_a_screen(family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.lsc"
    r = CliRunner().invoke(main, ["fingerprint", str(family["base"]), "--tier", "screen", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["tier"] == "screen" and doc["bytes"] == out.stat().st_size and doc["bytes_read"] < doc["total_bytes"]
    assert load(out).keys == screen_model(open_model(family["base"])).keys
