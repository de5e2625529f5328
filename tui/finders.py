"""Two searches in the command palette's window: the user's earlier messages (F8) and the agents
that can be reopened (F9: closed ones, and every earlier session's).

Both match plain substrings, case-insensitive, as a shell's ctrl+r does: a prompt is a sentence,
and a fuzzy match of scattered letters across it finds everything. Newest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from frontend.sessions import AgentSummary

MAX_SHOWN = 50  # hits listed at once; more typing narrows them
LINE_CHARS = 100


def one_line(text: str, width: int = LINE_CHARS) -> str:
    """A message as one palette line: its lines joined, cut at ``width`` with an ellipsis."""
    line = " ⏎ ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return line if len(line) <= width else line[: width - 1] + "…"


def highlighted(line: str, query: str) -> Text:
    """``line`` with every occurrence of ``query`` (case-insensitive) in bold."""
    text = Text(line)
    if query:
        text.highlight_words([query], style="bold reverse", case_sensitive=False)
    return text


def age(then: float, now: float | None = None) -> str:
    seconds = max((now if now is not None else time.time()) - then, 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


class PromptSearch(Provider):
    """The user's earlier messages (``app.prompt_history``); choosing one puts it in the composer."""

    def _choose(self, prompt: str) -> Callable[[], Any]:
        return partial(self.app.recall_prompt, prompt)  # type: ignore[attr-defined]

    async def discover(self) -> Hits:
        for prompt in self.app.prompt_history.newest_first()[:MAX_SHOWN]:  # type: ignore[attr-defined]
            yield DiscoveryHit(one_line(prompt), self._choose(prompt), text=prompt, help=_size(prompt))

    async def search(self, query: str) -> Hits:
        needle = query.strip().lower()
        prompts = self.app.prompt_history.newest_first()  # type: ignore[attr-defined]
        matches = [p for p in prompts if needle in p.lower()][:MAX_SHOWN]
        for rank, prompt in enumerate(matches):
            line = one_line(_around(prompt, needle))
            # Scores fall with age: the palette sorts by score, and the newest match comes first.
            yield Hit(1.0 - rank / (len(matches) + 1), highlighted(line, needle), self._choose(prompt),
                      text=prompt, help=_size(prompt))


class AgentBrowser(Provider):
    """Agents the session database can reopen; choosing one opens it here with its transcript."""

    def _summaries(self, text: str) -> list[AgentSummary]:
        return self.app.reopenable_agents(text)  # type: ignore[attr-defined]

    def _hit_parts(self, summary: AgentSummary, needle: str) -> tuple[Text, str]:
        record = summary.record
        where = "closed" if record.session_id == self.app.sessions.session_id else f"session {record.session_id}"  # type: ignore[attr-defined]
        line = Text(record.name, style="bold")
        line.append(f"  {one_line(summary.first_message, 70)}")
        if needle:
            line.highlight_words([needle], style="bold reverse", case_sensitive=False)
        help_text = (f"{where} · {summary.num_messages} messages · {age(summary.updated_at)}"
                     + ("" if summary.model == self.app.settings.model_name  # type: ignore[attr-defined]
                        else f" · {summary.model}: its context is read again"))
        return line, help_text

    def _choose(self, summary: AgentSummary) -> Callable[[], Any]:
        return partial(self.app.reopen_agent, summary)  # type: ignore[attr-defined]

    async def discover(self) -> Hits:
        for summary in self._summaries("")[:MAX_SHOWN]:
            line, help_text = self._hit_parts(summary, "")
            yield DiscoveryHit(line, self._choose(summary), text=summary.record.name, help=help_text)

    async def search(self, query: str) -> Hits:
        needle = query.strip()
        found = self._summaries(needle)[:MAX_SHOWN]
        for rank, summary in enumerate(found):
            line, help_text = self._hit_parts(summary, needle)
            yield Hit(1.0 - rank / (len(found) + 1), line, self._choose(summary), text=summary.record.name,
                      help=help_text)


def _size(prompt: str) -> str:
    lines = prompt.count("\n") + 1
    return f"{len(prompt):,} characters" + (f" · {lines} lines" if lines > 1 else "")


def _around(prompt: str, needle: str) -> str:
    """The part of a long prompt around its first match, so the match shows on the line."""
    at = prompt.lower().find(needle) if needle else 0
    if at < LINE_CHARS // 2:
        return prompt
    return "…" + prompt[at - LINE_CHARS // 4 :]
