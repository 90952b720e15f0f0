"""fingerprint.similarity.second: the representation second opinion, on real zoo checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fingerprint.canonical import open_model
from fingerprint.similarity.second import MIN_BACKGROUND, Representations, SecondOpinion, combine, judge, second_opinion
from lineage.cli import main

BACKGROUNDS = ("llama-b", "llama-d", "neox-e", "qwen2-f")  # none shares llama-a's weights or random start


@pytest.fixture(scope="module")
def zoo(tiny_zoo: Any) -> Path:
    return Path(tiny_zoo.dir_of(tiny_zoo.by_name()["llama-a"])).parent


@pytest.fixture(scope="module")
def reps() -> Representations:
    return Representations()


def test_the_finding_is_one_sided_against_its_background() -> None:
    bg = [0.45, 0.50, 0.55, 0.48]
    assert judge(0.9, bg).finding == "supports"  # z ≈ 18 and above every background value
    assert judge(0.56, [*bg, 0.2, 0.2]).finding == "neutral"  # z ≈ 1.1 but not above the max
    assert judge(0.5, bg).finding == "against"
    assert judge(0.9, bg[: MIN_BACKGROUND - 1]).finding == "unavailable"  # no calibrated null from two values
    assert judge(0.9, [0.5, float("nan"), 0.4, 0.45]).z is not None  # a model that could not run is not a value


def test_combining_never_makes_a_pair_independent() -> None:
    op = {f: SecondOpinion(f, 0.5, 0.0, (), "") for f in ("supports", "against", "neutral", "unavailable")}  # type: ignore[arg-type]
    assert combine("inconclusive", op["supports"]) == ("derived", "weights + representations")
    assert combine("shared_init", op["supports"]) == ("derived", "weights + representations")
    assert combine("shared_init", op["against"]) == ("shared_init", "weights + representations")
    assert combine("inconclusive", op["against"]) == ("inconclusive", "weights")
    assert combine("independent", op["supports"]) == ("independent", "weights")  # the weights decided
    assert combine("derived", op["against"]) == ("derived", "weights")
    assert combine("shared_init", None) == ("shared_init", "weights")


@pytest.mark.slow
def test_a_fine_tune_computes_like_its_base_and_a_shared_seed_does_not(zoo: Path, reps: Representations) -> None:
    """llama-a-sft's representations are llama-a's beyond anything unrelated models share (supports);
    llama-c, from llama-a's random start but trained on other text, is no closer than unrelated models."""
    bg = [open_model(zoo / n) for n in BACKGROUNDS]
    a = open_model(zoo / "llama-a")
    ft = second_opinion(a, open_model(zoo / "llama-a-sft"), bg, reps)
    assert ft.finding == "supports" and ft.z is not None and ft.z >= 3, ft
    assert len(ft.background) == 2 * len(BACKGROUNDS)  # each side against each background the weights call independent
    same = second_opinion(a, open_model(zoo / "llama-c"), bg, reps)
    assert same.finding == "against" and same.score is not None and same.score < max(same.background), same
    # a background the weights do not call independent of a side (llama-c for llama-a) is left out of the null
    with_c = second_opinion(a, open_model(zoo / "llama-a-sft"), [*bg, open_model(zoo / "llama-c")], reps)
    assert len(with_c.background) == len(ft.background)
    gguf = second_opinion(a, open_model(zoo / "llama-a-sft-q8"), bg, reps)
    assert gguf.finding == "unavailable" and "safetensors" in gguf.note


@pytest.mark.slow
def test_compare_reports_the_second_opinion_and_what_decided(zoo: Path) -> None:
    args = ["compare", str(zoo / "llama-a"), str(zoo / "llama-c"), "--json"]
    for n in BACKGROUNDS:
        args += ["--background", str(zoo / n)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert (doc["verdict"], doc["outcome"], doc["decided_by"]) == ("derived", "shared_init", "weights + representations")
    assert doc["second_opinion"]["finding"] == "against" and len(doc["second_opinion"]["background"]) == 8
    # a pair the weights decide is not run at all
    res = CliRunner().invoke(main, ["compare", str(zoo / "llama-a"), str(zoo / "llama-a-sft"), "--background", str(zoo / "llama-b")])
    assert res.exit_code == 0 and "second opinion not needed" in res.output
    res = CliRunner().invoke(main, ["compare", str(zoo / "llama-a"), str(zoo / "llama-c"), "--method", "awm",
                                    "--background", str(zoo / "llama-b")])
    assert res.exit_code != 0 and res.output.strip().splitlines()[-1].startswith("Error: --background"), res.output
    assert "Traceback" not in res.output
