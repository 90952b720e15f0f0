"""crawler.claims: the card phrasings that claim training from scratch, negations, hostile text."""

from __future__ import annotations

import time

import pytest

from crawler.claims import MAX_QUOTE, scratch_claim


@pytest.mark.parametrize("text", [
    "This model was trained from scratch on 2T tokens of web text.",
    "We pretrained it from scratch.",
    "A 1B model pre-trained entirely from scratch by our lab",
    "## Training\nFrom-scratch pretraining on FineWeb-Edu.",
    "It is not based on any existing model.",
    "Weights: randomly initialized weights, then 300B tokens.",
    "Trained without any pretrained weights.",
])
def test_claims_are_found(text: str) -> None:
    q = scratch_claim(text)
    assert q is not None and len(q) <= MAX_QUOTE


@pytest.mark.parametrize("text", [
    "We fine-tuned Llama-2-7b on chat data; it was not trained from scratch.",
    "Instead of training from scratch, we continued from Mistral-7B.",
    "Rather than training from scratch we merged two models.",
    "A LoRA of Qwen2.5-7B. ```python\n# trained from scratch in the example below\n```",
    "---\ndescription: trained from scratch\n---\nA quantization of Llama-3.",
    "",
])
def test_negations_code_and_metadata_claim_nothing(text: str) -> None:
    assert scratch_claim(text) is None


def test_hostile_cards_are_bounded_and_fast() -> None:
    t = time.perf_counter()
    assert scratch_claim("a" * 10_000_000) is None  # read bounded
    assert scratch_claim("trained " * 200_000) is None  # no backtracking blow-up on near-misses
    quote = scratch_claim("x" * 5000 + " trained from scratch " + "y" * 5000)
    assert quote is not None and len(quote) == MAX_QUOTE
    assert time.perf_counter() - t < 5.0
