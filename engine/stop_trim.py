"""A reply ended by a stop string keeps, in its context, only the tokens of the reply as reported.

The tokens generated past the stop string (and the one that completed it) are dropped
from the kept context, so the next turn continues from the text the user saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def tokens_of_reply(tokenizer: Any, generated_ids: Sequence[int], reported: str) -> int | None:
    """How many leading ``generated_ids`` stream exactly ``reported``; None when no prefix does
    (the stop string began inside a token, so no whole-token context shows that text)."""
    for count in range(len(generated_ids), -1, -1):
        detokenizer = tokenizer.detokenizer  # a fresh one: the text a stream ending here shows
        for token in generated_ids[:count]:
            detokenizer.add_token(token)
        detokenizer.finalize()
        if detokenizer.text == reported:
            return count
        if len(detokenizer.text) < len(reported):
            return None  # shorter prefixes only get shorter
    return None
