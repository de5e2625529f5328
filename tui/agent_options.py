"""One agent's own settings: system prompt and sampling, used from its next turn, saved with it.

``AgentOptions`` holds what the settings dialog edits; ``change_cost`` says what a change costs
in tokens read again, from the agent's token counts: the system prompt comes first in the
context, so a new one re-reads the whole conversation; sampling changes re-read nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from tui.settings import TuiSettings


@dataclass(frozen=True, slots=True)
class AgentOptions:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    @classmethod
    def defaults(cls, settings: TuiSettings) -> AgentOptions:
        """The app's settings, for an agent that has none of its own."""
        return cls(temperature=settings.temperature, max_tokens=settings.max_tokens)

    def with_saved(self, saved: dict[str, Any]) -> AgentOptions:
        """These options with an agent's saved ones over them (unknown keys ignored)."""
        known = {k: v for k, v in saved.items() if k in self.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        return replace(self, **known)

    def to_saved(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


def parse_options(temperature: str, top_p: str, max_tokens: str, stop: str) -> AgentOptions:
    """The dialog's fields as options; ValueError naming the bad field, its value and the range."""
    values = AgentOptions(_number("temperature", temperature, 0.0, 2.0), _number("top_p", top_p, 0.0, 1.0),
                          int(_number("max tokens", max_tokens, 1, 1_000_000)), _stops(stop))
    if values.top_p == 0.0:
        raise ValueError("top_p 0 keeps no token: give more than 0, up to 1")
    return values


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number: give {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} {value:g} is out of range: give {low:g} to {high:g}")
    return value


def _stops(text: str) -> tuple[str, ...]:
    r"""Comma-separated stop strings; ``\n`` stands for a new line."""
    return tuple(s.strip().replace("\\n", "\n") for s in text.split(",") if s.strip())


def change_cost(context_tokens: int, system_changed: bool) -> str:
    """What the change costs on the agent's next turn, in tokens read again."""
    if not context_tokens:
        return "Nothing is in blocks yet: the next turn reads the conversation as a new one anyway."
    if system_changed:
        return (f"A new system prompt comes first in the context: the next turn re-reads all "
                f"{context_tokens:,} tokens; 0 stay in blocks.")
    return f"Sampling changes re-read nothing: all {context_tokens:,} tokens stay in blocks."
