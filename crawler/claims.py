"""What a model card's text claims about the model's origin: "trained from scratch" and its common phrasings.

The card is hostile input: it is read bounded (:data:`MAX_CARD_BYTES`), the patterns are linear (no
nested quantifiers, bounded gaps), and what is kept is a short quote of the match, whitespace collapsed.
A negated phrase ("not trained from scratch", "instead of training from scratch") claims nothing.
"""

from __future__ import annotations

import re

MAX_CARD_BYTES = 256 * 1024
MAX_QUOTE = 160

# Each pattern names the model (or "we") as trained without a pretrained start. Gaps are bounded ({0,40})
# so a pattern never scans a whole document for its second half.
_CLAIMS = [
    r"\b(?:pre-?)?train(?:ed|ing)\s+(?:[\w-]+\s+){0,3}?from\s+scratch\b",
    r"\bfrom[-\s]scratch\s+(?:pre-?)?train(?:ed|ing)\b",
    r"\bnot\s+(?:a\s+fine-?tune|fine-?tuned|based)\s+(?:of|from|on)\s+(?:any|an?\s+existing|another)\b",
    r"\b(?:randomly|random)\s+initiali[sz]ed\s+weights\b",
    r"\bwithout\s+(?:any\s+)?pre-?trained\s+weights\b",
]
_PATTERN = re.compile("|".join(f"(?:{p})" for p in _CLAIMS), re.IGNORECASE)
# A negation just before the phrase turns it around ("we did not train from scratch", "instead of training
# from scratch", "rather than"); checked on the 30 characters before the match.
_NEGATION = re.compile(r"(?:\bnot|\bn't|\bnever|\binstead\s+of|\brather\s+than|\bno\s+need\s+to)\s*(?:\w+\s+){0,2}$",
                       re.IGNORECASE)
_CODE_BLOCK = re.compile(r"```.{0,20000}?```", re.DOTALL)


def scratch_claim(text: str) -> str | None:
    """A short quote of the first "trained from scratch"-style claim in a card's text, or None.

    >>> scratch_claim("This model was trained from scratch on 2T tokens.")
    'This model was trained from scratch on 2T tokens.'
    >>> scratch_claim("We fine-tuned Llama-2; it was not trained from scratch.") is None
    True
    """
    body = _CODE_BLOCK.sub(" ", text[:MAX_CARD_BYTES])
    if body.startswith("---"):  # the YAML header is metadata, not a claim in prose
        end = body.find("\n---", 3)
        body = body[end + 4 :] if end > 0 else body
    for m in _PATTERN.finditer(body):
        if _NEGATION.search(body[max(0, m.start() - 30) : m.start()]):
            continue
        start = max(body.rfind(".", 0, m.start()), body.rfind("\n", 0, m.start())) + 1
        end = min(x for x in (body.find(".", m.end()), body.find("\n", m.end()), len(body)) if x >= 0)
        quote = " ".join(body[start : end + 1].split())
        return quote[:MAX_QUOTE]
    return None
