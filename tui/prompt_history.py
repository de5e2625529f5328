"""The user's earlier messages, for up / down in a composer and for the history search (F8).

One history for the whole app, shared by every agent's composer as a shell's history is
shared by its windows; it starts from the session database (every session's messages), so
yesterday's prompts are one key away. Bookkeeping only: the composer draws.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_PROMPTS = 1000


class PromptHistory:
    """Distinct prompts, oldest first: sending one again moves it to the end."""

    def __init__(self, prompts: Iterable[str] = ()) -> None:
        self._prompts: list[str] = []
        for prompt in prompts:
            self.add(prompt)

    def add(self, text: str) -> None:
        if not text.strip():
            return
        if text in self._prompts:
            self._prompts.remove(text)
        self._prompts.append(text)
        del self._prompts[:-MAX_PROMPTS]

    def __len__(self) -> int:
        return len(self._prompts)

    def __getitem__(self, index: int) -> str:
        return self._prompts[index]

    def newest_first(self) -> list[str]:
        return self._prompts[::-1]


class HistoryCursor:
    """One composer's walk through a ``PromptHistory``: where it is, and the draft it left.

    ``older`` / ``newer`` return the text to show, or None when there is nowhere to go; walking
    past the newest prompt gives back the draft that was in the composer when the walk began.
    """

    def __init__(self, history: PromptHistory) -> None:
        self.history = history
        self.index: int | None = None  # into history; None: at the draft
        self.draft = ""

    def older(self, current: str) -> str | None:
        if self.index is None:
            if not len(self.history):
                return None
            self.draft, self.index = current, len(self.history)
        if self.index == 0:
            return None
        self.index -= 1
        return self.history[self.index]

    def newer(self) -> str | None:
        if self.index is None:
            return None
        self.index += 1
        if self.index >= len(self.history):
            self.index = None
            return self.draft
        return self.history[self.index]

    def reset(self) -> None:
        """The message was sent (or the walk abandoned): the next walk starts at the newest."""
        self.index, self.draft = None, ""
