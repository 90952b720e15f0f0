"""lineage.placement: every placement rule on plain data (no store, no index, no fingerprint).

A candidate is a hand-made comparison outcome, the detected tree is a dict, and ``score`` looks a model
up among the candidates we chose, so a broken rule fails by name. The whole loop on the zoo is
``tests/e2e/test_demo.py``; the pipeline that feeds these functions is ``tests/lineage/test_pipeline.py``.
"""

from __future__ import annotations

from typing import Any

from fingerprint.index import Evidence
from fingerprint.similarity.verdict import Verdict
from lineage.placement import (
    MAX_HOPS,
    Candidate,
    Placement,
    Subject,
    chain,
    choose_parent,
    decide,
    merge_parent,
    place,
)

WIDTH = 64  # derived threshold max(0.02, 18/64) = 0.281; a "weak" derived match is under 0.5625


class Tree(dict[str, tuple[str, float]]):
    """child key → (parent key, edge score): the detected tree as plain data."""

    def parent(self, key: str) -> tuple[str, float] | None:
        return self.get(key)


def subject(key: str, bases: tuple[str, ...] = (), **flags: Any) -> Subject:
    return Subject(key, key, 10**12, bases, **flags)


def cand(key: str, score: float, verdict: Verdict = "derived", family: str = "llama", aligned: bool = True,
         quality: float = 0.8, alignment: str = "signed-lap", shared_init: bool = False, when: int = 0) -> Candidate:
    return Candidate(key, family, score, 30.0 if verdict == "derived" else 1.0, verdict,
                     Evidence(alignment, aligned, quality if aligned else 0.15, 512, 3, (), shared_init=shared_init),
                     (when, key))


def run(s: Subject, matches: list[Candidate], extra: dict[str, Candidate] | None = None,
        tree: Tree | None = None) -> Placement:
    """Rules 1-4; ``extra`` are the models the parent walk may score beyond the shortlist; declared bases
    are the subject's, by key."""
    known = {x.key: x for x in [*matches, *(extra or {}).values()]}
    return decide(s, list(s.base_models), matches, WIDTH, known.get, tree or Tree())


def test_the_best_derived_member_is_the_parent_and_names_the_family() -> None:
    out = run(subject("x/ft"), [cand("org/base", 0.95), cand("y/other", 0.30, "independent", "other")])
    assert (out.family, out.parent, out.verdict, out.candidate_family) == ("llama", "org/base", "derived", False)


def test_a_claim_the_weights_confirm_beats_a_better_scoring_sibling() -> None:
    # fine-tunes of one base resemble each other more than the base: the sibling scores higher
    matches = [cand("a/sibling-sft", 0.99), cand("org/base", 0.95)]
    assert run(subject("x/ft", bases=("org/base",)), matches).parent == "org/base"
    assert run(subject("x/ft"), matches).parent == "a/sibling-sft"  # no claim: similarity decides


def test_a_claim_naming_an_older_ancestor_than_the_best_members_parent_lets_the_walk_decide() -> None:
    # the heidi case: sft3's card names the chain's root; its best match is its true parent sft2
    tree = Tree({"a/sft": ("org/base", 0.9953), "g/sft2": ("a/sft", 0.9935)})
    best = [cand("g/sft2", 0.995)]
    extra = {"a/sft": cand("a/sft", 0.9895), "org/base": cand("org/base", 0.9889)}
    assert run(subject("h/sft3", bases=("org/base",)), best, extra, tree).parent == "g/sft2"
    # a claim of the best member's own parent is the sibling ambiguity: the card wins
    assert run(subject("h/sft3", bases=("a/sft",)), best, extra, tree).parent == "a/sft"
    # the walk goes no higher than the claim: a tie all the way up stops at what the card names
    ties = {"a/sft": cand("a/sft", 0.9949), "org/base": cand("org/base", 0.9948)}
    assert run(subject("h/copy", bases=("org/base",)), best, ties, tree).parent == "org/base"
    tree["org/base"] = ("org/older", 0.999)
    ties["org/older"] = cand("org/older", 0.9947)
    assert run(subject("h/copy", bases=("org/base",)), best, ties, tree).parent == "org/base"


def test_a_claim_outside_the_best_family_does_not_move_the_model() -> None:
    matches = [cand("org/base", 0.97), cand("other/base", 0.90, family="mistral")]
    out = run(subject("x/ft", bases=("other/base",)), matches)
    assert (out.family, out.parent) == ("llama", "org/base")


def test_a_tie_with_the_parent_of_the_best_member_climbs_to_the_older_model() -> None:
    tree = Tree({"a/sft": ("org/base", 0.98)})  # stored: a/sft derives from org/base with score 0.98
    # gap 0.001 < max(0.5 · (1 − 0.98), 0.003): a copy of a/sft is as close to org/base, so org/base
    out = run(subject("x/q8"), [cand("a/sft", 0.970)], {"org/base": cand("org/base", 0.969)}, tree)
    assert out.parent == "org/base"
    # a clear gap keeps the lower member: x really is a/sft's child
    out = run(subject("x/sft2"), [cand("a/sft", 0.99)], {"org/base": cand("org/base", 0.90)}, tree)
    assert out.parent == "a/sft"
    # the walk stops where the parent is not derived by the weights
    out = run(subject("x/sft3"), [cand("a/sft", 0.97)], {"org/base": cand("org/base", 0.969, "inconclusive")}, tree)
    assert out.parent == "a/sft"


def test_the_parent_walk_ends_on_a_cycle_in_bad_data() -> None:
    tree = Tree({"a": ("b", 0.99), "b": ("a", 0.99)})
    assert chain(tree, "a") == ["b", "a"]
    long = Tree({f"m{i}": (f"m{i + 1}", 0.99) for i in range(100)})
    assert len(chain(long, "m0")) == MAX_HOPS
    # all-tied candidates up a cycle: the walk stops after MAX_HOPS steps with a member of the cycle
    known = {k: cand(k, 0.99) for k in ("a", "b")}
    assert choose_parent(known["a"], [], known.get, tree).key in {"a", "b"}


def test_a_weak_match_of_a_pretrain_is_a_candidate_family() -> None:
    weak = [cand("org/base", 0.40)]  # derived, but under twice the width's threshold
    out = run(subject("new/base"), weak)
    assert (out.family, out.parent, out.verdict, out.candidate_family) == ("new/base", None, "weak match", True)
    # a declared base, an adapter or a quantized copy is no pretrain: filed under the match
    for s in (subject("x/ft", bases=("org/base",)), subject("x/lora", adapter=True), subject("x/gguf", gguf=True),
              subject("x/awq", quantized=True)):
        out = run(s, weak)
        assert (out.family, out.parent, out.candidate_family) == ("llama", "org/base", False), s.id
    assert not run(subject("new/base2"), [cand("org/base", 0.60)]).candidate_family  # strong enough


def test_a_weak_match_with_copied_embeddings_is_a_member() -> None:
    # embedding columns that map one-to-one at cosine 1.0: the matrix was copied (a 90%-pruned base)
    out = run(subject("x/pruned"), [cand("org/base", 0.40, quality=1.0)])
    assert (out.family, out.parent, out.candidate_family) == ("llama", "org/base", False)
    # the same quality reached only by a rotation (Procrustes) is what same-text training gives
    out = run(subject("x/pruned"), [cand("org/base", 0.40, quality=1.0, alignment="procrustes")])
    assert out.candidate_family and out.verdict == "weak match"


def test_a_shared_random_start_is_a_candidate_family_unless_the_card_names_it() -> None:
    # llama-c against llama-a's family: derived-level weights, embeddings shared only as a random start
    shared = [cand("org/base", 0.42, quality=0.69, shared_init=True, when=1),
              cand("a/sft", 0.43, quality=0.69, shared_init=True, when=2),
              cand("y/other", 0.10, "independent", "other")]
    out = run(subject("t/new"), shared)
    assert (out.family, out.parent, out.verdict, out.candidate_family) == ("t/new", None, "shared init", True)
    assert [key for key, _, _ in out.shared] == ["org/base"]  # one per family: the earliest published
    # a card naming the model confirms the claim: heavy continued pretraining can move embeddings that far
    out = run(subject("t/new", bases=("org/base",)), shared)
    assert (out.family, out.parent, out.verdict, out.shared) == ("llama", "org/base", "derived", ())
    # a plain derived match elsewhere wins: a member of llama-c's family is filed under llama-c
    out = run(subject("c/sft"), [*shared, cand("t/new", 0.99, family="t/new")])
    assert (out.family, out.parent, out.shared) == ("t/new", "t/new", ())
    # a shared start of a model that is no pretrain (an adapter) is not a family root
    out = run(subject("c/lora", adapter=True), shared)
    assert (out.verdict, out.family, out.candidate_family) == ("shared init", None, False)


def test_no_derived_match() -> None:
    # independent of everything indexed, or nothing to compare with: a new family
    for matches in ([cand("org/base", 0.05, "independent")], []):
        out = run(subject("new/base"), matches)
        assert out.candidate_family and out.family == "new/base" and out.parent is None
    # inconclusive without a credible alignment: what a new base trained on similar text gets
    assert run(subject("new/base"), [cand("org/base", 0.20, "inconclusive", aligned=False)]).candidate_family
    # inconclusive with an alignment may be a heavily changed derivative: left open, not a family
    out = run(subject("new/base"), [cand("org/base", 0.20, "inconclusive", aligned=True)])
    assert (out.family, out.candidate_family, out.verdict) == (None, False, "inconclusive")
    # a quantized copy that matches nothing is never a family root
    out = run(subject("x/gguf", gguf=True), [])
    assert (out.family, out.candidate_family, out.verdict) == (None, False, "no candidates")


# -- merges: rule 5 ------------------------------------------------------------------------------------
def between_of(pairs: dict[frozenset[str], float]) -> Any:
    return lambda a, b: pairs[frozenset((a, b))]


def test_a_model_between_its_parent_and_another_model_is_a_merge() -> None:
    # P and Y are independent bases (d(P,Y) = 0.9); M scores 0.6 against both: halfway, r = 0.33
    p, y = cand("org/p", 0.60), cand("org/y", 0.60, family="other")
    between = between_of({frozenset(("org/p", "org/y")): 0.10})
    s = subject("m/merge")
    got = merge_parent(s, [], p, [p, y], {"org/p": p, "org/y": y}.get, Tree(), between)
    assert got is not None and got.key == "org/y"
    # the whole decision gives both parents
    out = place(s, [], [p, y], WIDTH, {"org/p": p, "org/y": y}.get, Tree(), between)
    assert (out.parent, [k for k, _, _ in out.also]) == ("org/p", ["org/y"])


def test_a_child_of_the_parent_is_no_merge() -> None:
    # M is P's fine-tune: against Y it is no closer than P is (tree-additive distances), so r <= 0
    p, y = cand("org/p", 0.98), cand("org/y", 0.50, family="other")
    between = between_of({frozenset(("org/p", "org/y")): 0.52})
    assert merge_parent(subject("m/ft"), [], p, [p, y], {"org/p": p, "org/y": y}.get, Tree(), between) is None


def test_models_on_the_parents_own_line_are_never_a_second_parent() -> None:
    # Y is P's own fine-tune (or P is Y's): a model close to both is on one line, not a merge
    p, y = cand("org/p", 0.90), cand("a/p-sft", 0.95)
    between = between_of({frozenset(("org/p", "a/p-sft")): 0.20})  # would pass the "between" test
    got = merge_parent(subject("m/x"), [], p, [p, y], {"org/p": p, "a/p-sft": y}.get,
                       Tree({"a/p-sft": ("org/p", 0.99)}), between)
    assert got is None
    # an attacked twin of P (score ~1 to it) is not scored against P at all: under the files' resolution
    twin = cand("mallory/p-permuted", 1.0)
    assert merge_parent(subject("m/x"), [], cand("org/p", 1.0), [cand("org/p", 1.0), twin], {}.get, Tree(),
                        lambda a, b: 1 / 0) is None


def test_a_merge_with_half_of_an_unrelated_base_is_not_a_shared_random_start() -> None:
    # both halves look like a shared random start at the pair level; the other parent between them decides
    p = cand("org/p", 0.62, quality=0.7, shared_init=True)
    y = cand("org/y", 0.61, family="other", quality=0.7, shared_init=True)
    between = between_of({frozenset(("org/p", "org/y")): 0.05})
    out = place(subject("m/half"), [], [p, y], WIDTH, {"org/p": p, "org/y": y}.get, Tree(), between)
    assert (out.verdict, out.family, out.parent, [k for k, _, _ in out.also]) == ("derived", "llama", "org/p", ["org/y"])
    # without a second parent in between, the shared start stands
    far = between_of({frozenset(("org/p", "org/y")): 0.62})
    out = place(subject("t/new"), [], [p, y], WIDTH, {"org/p": p, "org/y": y}.get, Tree(), far)
    assert out.verdict == "shared init" and out.candidate_family
