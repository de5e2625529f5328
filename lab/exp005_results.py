"""EXP-005's results: per prompt, the leak check, the whole run and its GO criteria (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pool import ModelCacheSpec


@dataclass(frozen=True)
class Divergence:
    """Where the engine's output first departs from the reference."""

    char_index: int
    token_index: int | None = None  # None when the token ids agree and only the text differs
    expected_id: int | None = None
    expected_text: str | None = None
    actual_id: int | None = None
    actual_text: str | None = None

    def describe(self) -> str:
        if self.token_index is None:
            return f"token ids identical; text differs from character {self.char_index}"
        return (f"first divergent token #{self.token_index}: expected {self.expected_id} "
                f"{self.expected_text!r}, actual {self.actual_id} {self.actual_text!r} "
                f"(text differs from character {self.char_index})")


@dataclass
class PromptResult:
    label: str
    prompt: str
    max_tokens: int
    reference: str
    reference_s: float
    actual: str = ""
    engine_s: float = 0.0
    prompt_tokens: int = 0
    token_count: int = 0
    finish_reason: str | None = None
    error: str | None = None
    token_ids: list[int] = field(default_factory=list)
    divergence: Divergence | None = None

    @property
    def match(self) -> bool:
        return self.actual == self.reference

    @property
    def generated_tokens(self) -> int:
        return self.token_count - self.prompt_tokens

    @property
    def no_error(self) -> bool:
        return self.error is None and self.finish_reason in ("stop", "length")

    @property
    def tokens_in_range(self) -> bool:
        return 1 <= self.generated_tokens <= self.max_tokens

    @property
    def time_ratio(self) -> float | None:
        return self.engine_s / self.reference_s if self.reference_s > 0 and self.engine_s > 0 else None


@dataclass(frozen=True)
class LeakCheck:
    runs: int
    initial_used: int
    peak_used: int
    final_used: int
    errors: int

    @property
    def ok(self) -> bool:
        return self.final_used == self.initial_used and self.errors == 0


@dataclass
class Exp005Result:
    model_name: str
    spec: ModelCacheSpec
    max_tokens: int
    prompts: list[PromptResult]
    leak: LeakCheck
    machine: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)

    @property
    def go(self) -> bool:
        """The seed's GO criteria: all byte-identical, no errors, token counts in range."""
        return all(p.match and p.no_error and p.tokens_in_range for p in self.prompts)

    @property
    def time_ratio(self) -> float | None:
        ref = sum(p.reference_s for p in self.prompts)
        eng = sum(p.engine_s for p in self.prompts)
        return eng / ref if ref > 0 and eng > 0 else None
