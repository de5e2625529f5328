"""Stop strings: what a reply streams, and what its context keeps, end where the stop begins.

While the text's end could be the start of a stop string it is held back, so no part of
a stop string is ever streamed. When one ends the reply, the tokens generated past the
reported text are dropped from the kept context, so the next turn continues from the
text the user saw.
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


def split_at_stop(
    released: str, held: str, segment: str, stops: Sequence[str], *, final: bool
) -> tuple[str, str, bool]:
    """(text to stream now, text to hold back, whether a stop string was hit).

    ``released``: text streamed so far; ``held``: text held back; ``segment``: new text;
    ``final``: the reply ends here, so nothing is held back.
    """
    if not stops:
        return held + segment, "", False
    pending = held + segment
    text = released + pending
    # Only where a stop could end in the new text: an earlier one would already have been hit.
    cuts = [text.find(s, max(0, len(released) - len(s) + 1)) for s in stops if s]
    cuts = [c for c in cuts if c >= 0]
    if cuts:
        cut = min(cuts)
        assert cut >= len(released), (released, cut)  # a stop's start is never streamed
        return text[len(released) : cut], "", True
    if final:
        return pending, "", False
    hold = max((_overlap(pending, s) for s in stops if s), default=0)
    return pending[: len(pending) - hold], pending[len(pending) - hold :], False


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
