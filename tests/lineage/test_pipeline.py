"""lineage.pipeline: the placement rules on hand-built matches, against an in-memory store.

The whole loop on the zoo is ``tests/e2e/test_demo.py``; here each rule of :meth:`Pipeline.decide` is
exercised on its own, with matches we choose, so a broken rule fails by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crawler.records import HubModel
from fingerprint.index import Evidence, Index, Match
from fingerprint.similarity.verdict import Verdict
from graph.records import DerivedEdge, ModelRecord
from graph.sqlite import SqliteStore
from lineage.pipeline import Pipeline, Placement

WIDTH = 64  # derived threshold max(0.02, 18/64) = 0.281; a "weak" derived match is under 0.5625


def model(repo_id: str, bases: tuple[str, ...] = (), **flags: Any) -> HubModel:
    return HubModel(key=f"k-{repo_id}", id=repo_id, sha="0" * 40, author=repo_id.split("/")[0], created_at=None,
                    last_modified=None, private=False, gated=False, license=None, license_name=None,
                    license_link=None, base_models=bases, base_keys=(), relation=None, tags=(), pipeline_tag=None,
                    library=None, architecture="llama", weights=(), file_sizes={}, **flags)


def match(name: str, score: float, verdict: Verdict = "derived", family: str = "llama", aligned: bool = True,
          quality: float = 0.8, alignment: str = "signed-lap", shared_init: bool = False) -> Match:
    return Match(name, family, score, 30.0 if verdict == "derived" else 1.0, verdict, 0.9, 0.5,
                 Evidence(alignment, aligned, quality if aligned else 0.15, 512, 3, (), shared_init=shared_init))


@pytest.fixture()
def pipe(tmp_path: Path) -> Iterator[Pipeline]:
    store = SqliteStore(":memory:")
    store.ensure_schema()
    yield Pipeline(store, Index(tmp_path / "index"))
    store.close()


def decide(p: Pipeline, m: HubModel, matches: list[Match], extra: dict[str, Match] | None = None) -> Placement:
    """Run the rules; ``extra`` are the models the parent walk may score beyond the shortlist."""
    known = {x.name: x for x in [*matches, *(extra or {}).values()]}
    return p.decide(m, matches, WIDTH, known.get)


def chain(p: Pipeline, child: str, parent: str, score: float) -> None:
    """Store ``child -[DERIVED_FROM score]-> parent`` as an earlier crawl would have."""
    p.store.upsert_models([ModelRecord(key=f"k-{child}", id=child), ModelRecord(key=f"k-{parent}", id=parent)], 1)
    p.store.upsert_derived([DerivedEdge(f"k-{child}", f"k-{parent}", score)], 1)


def test_the_best_derived_member_is_the_parent_and_names_the_family(pipe: Pipeline) -> None:
    out = decide(pipe, model("x/ft"), [match("org/base", 0.95), match("y/other", 0.30, "independent", "other")])
    assert (out.family, out.parent, out.verdict, out.candidate_family) == ("llama", "org/base", "derived", False)


def test_a_claim_the_weights_confirm_beats_a_better_scoring_sibling(pipe: Pipeline) -> None:
    # fine-tunes of one base resemble each other more than the base: the sibling scores higher
    matches = [match("a/sibling-sft", 0.99), match("org/base", 0.95)]
    assert decide(pipe, model("x/ft", bases=("org/base",)), matches).parent == "org/base"
    assert decide(pipe, model("x/ft"), matches).parent == "a/sibling-sft"  # no claim: similarity decides


def test_a_claim_naming_an_older_ancestor_than_the_best_members_parent_lets_the_walk_decide(pipe: Pipeline) -> None:
    # the heidi case: sft3's card names the chain's root; its best match is its true parent sft2
    chain(pipe, "a/sft", "org/base", 0.9953)
    chain(pipe, "g/sft2", "a/sft", 0.9935)
    best = [match("g/sft2", 0.995)]
    extra = {"a/sft": match("a/sft", 0.9895), "org/base": match("org/base", 0.9889)}
    assert decide(pipe, model("h/sft3", bases=("org/base",)), best, extra).parent == "g/sft2"
    # a claim of the best member's own parent is the sibling ambiguity: the card wins
    assert decide(pipe, model("h/sft3", bases=("a/sft",)), best, extra).parent == "a/sft"
    # the walk goes no higher than the claim: a tie all the way up stops at what the card names
    ties = {"a/sft": match("a/sft", 0.9949), "org/base": match("org/base", 0.9948)}
    assert decide(pipe, model("h/copy", bases=("org/base",)), best, ties).parent == "org/base"
    chain(pipe, "org/base", "org/older", 0.999)
    ties["org/older"] = match("org/older", 0.9947)
    assert decide(pipe, model("h/copy", bases=("org/base",)), best, ties).parent == "org/base"


def test_a_claim_outside_the_best_family_does_not_move_the_model(pipe: Pipeline) -> None:
    matches = [match("org/base", 0.97), match("other/base", 0.90, family="mistral")]
    out = decide(pipe, model("x/ft", bases=("other/base",)), matches)
    assert (out.family, out.parent) == ("llama", "org/base")


def test_a_tie_with_the_parent_of_the_best_member_climbs_to_the_older_model(pipe: Pipeline) -> None:
    chain(pipe, "a/sft", "org/base", 0.98)  # stored: a/sft derives from org/base with score 0.98
    # gap 0.001 < max(0.5 · (1 − 0.98), 0.003): a copy of a/sft is as close to org/base, so org/base
    out = decide(pipe, model("x/q8"), [match("a/sft", 0.970)], extra={"org/base": match("org/base", 0.969)})
    assert out.parent == "org/base"
    # a clear gap keeps the lower member: x really is a/sft's child
    out = decide(pipe, model("x/sft2"), [match("a/sft", 0.99)], extra={"org/base": match("org/base", 0.90)})
    assert out.parent == "a/sft"
    # the walk stops where the parent is not derived by the weights
    out = decide(pipe, model("x/sft3"), [match("a/sft", 0.97)],
                 extra={"org/base": match("org/base", 0.969, "inconclusive")})
    assert out.parent == "a/sft"


def test_a_weak_match_of_a_pretrain_is_a_candidate_family(pipe: Pipeline) -> None:
    weak = [match("org/base", 0.40)]  # derived, but under twice the width's threshold
    out = decide(pipe, model("new/base"), weak)
    assert (out.family, out.parent, out.verdict, out.candidate_family) == ("new/base", None, "weak match", True)
    # a declared base, an adapter or a quantized copy is no pretrain: filed under the match
    for m in (model("x/ft", bases=("org/base",)), model("x/lora", adapter=True), model("x/gguf", gguf=True)):
        out = decide(pipe, m, weak)
        assert (out.family, out.parent, out.candidate_family) == ("llama", "org/base", False), m.id
    assert not decide(pipe, model("new/base2"), [match("org/base", 0.60)]).candidate_family  # strong enough


def test_a_weak_match_with_copied_embeddings_is_a_member(pipe: Pipeline) -> None:
    # embedding columns that map one-to-one at cosine 1.0: the matrix was copied (a 90%-pruned base)
    out = decide(pipe, model("x/pruned"), [match("org/base", 0.40, quality=1.0)])
    assert (out.family, out.parent, out.candidate_family) == ("llama", "org/base", False)
    # the same quality reached only by a rotation (Procrustes) is what same-text training gives
    out = decide(pipe, model("x/pruned"), [match("org/base", 0.40, quality=1.0, alignment="procrustes")])
    assert out.candidate_family and out.verdict == "weak match"


def test_a_shared_random_start_is_a_candidate_family_unless_the_card_names_it(pipe: Pipeline) -> None:
    # llama-c against llama-a's family: derived-level weights, embeddings shared only as a random start
    shared = [match("org/base", 0.42, quality=0.69, shared_init=True), match("a/sft", 0.43, quality=0.69, shared_init=True),
              match("y/other", 0.10, "independent", "other")]
    out = decide(pipe, model("t/new"), shared)
    assert (out.family, out.parent, out.verdict, out.candidate_family) == ("t/new", None, "shared init", True)
    assert [name for name, _, _ in out.shared] == ["a/sft"]  # one per family (the earliest published; undated here: by name)
    # a card naming the model confirms the claim: heavy continued pretraining can move embeddings that far
    out = decide(pipe, model("t/new", bases=("org/base",)), shared)
    assert (out.family, out.parent, out.verdict, out.shared) == ("llama", "org/base", "derived", ())
    # a plain derived match elsewhere wins: a member of llama-c's family is filed under llama-c
    out = decide(pipe, model("c/sft"), [*shared, match("t/new", 0.99, family="t/new")])
    assert (out.family, out.parent, out.shared) == ("t/new", "t/new", ())


def test_no_derived_match(pipe: Pipeline) -> None:
    # independent of everything indexed, or nothing to compare with: a new family
    for matches in ([match("org/base", 0.05, "independent")], []):
        out = decide(pipe, model("new/base"), matches)
        assert out.candidate_family and out.family == "new/base" and out.parent is None
    # inconclusive without a credible alignment: what a new base trained on similar text gets
    out = decide(pipe, model("new/base"), [match("org/base", 0.20, "inconclusive", aligned=False)])
    assert out.candidate_family
    # inconclusive with an alignment may be a heavily changed derivative: left open, not a family
    out = decide(pipe, model("new/base"), [match("org/base", 0.20, "inconclusive", aligned=True)])
    assert (out.family, out.candidate_family, out.verdict) == (None, False, "inconclusive")
    # a quantized copy that matches nothing is never a family root
    out = decide(pipe, model("x/gguf", gguf=True), [])
    assert (out.family, out.candidate_family, out.verdict) == (None, False, "no candidates")
