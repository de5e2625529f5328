"""Chat turns over a persistent per-agent KV context: what text to send each turn.

The engine keeps each agent's context in pool blocks across turns, so a later turn
sends only the new part of the conversation. That part is the chat-template text of
the whole conversation minus the text already in the context. When the rendered
conversation does not start with the context text (templates may trim or rewrite
earlier messages), the turn falls back to a fresh context holding the full
conversation: correctness over speed.

Pure functions over plain data; the template renderer is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
# render(messages, add_generation_prompt) -> the template text, untokenized.
Renderer = Callable[[list[dict[str, str]], bool], str]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Role
    content: str


@dataclass
class Conversation:
    """One agent's messages plus what the engine's context is known to hold.

    ``context_text`` is the exact text of the tokens in the agent's KV context
    (prompt text sent plus reply as generated, eos included when the model
    stopped), or None when nothing is known to be there.
    """

    system: str = ""
    turns: list[ChatTurn] = field(default_factory=list)
    context_text: str | None = None
    context_tokens: int = 0
    # number of turns -> (context text, tokens) the context held after them: where a rollback may go
    checkpoints: dict[int, tuple[str, int]] = field(default_factory=dict)

    def template_messages(self) -> list[dict[str, str]]:
        """The messages in the shape ``apply_chat_template`` takes."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": t.role, "content": t.content} for t in self.turns]

    @property
    def is_empty(self) -> bool:
        return not self.turns and self.context_tokens == 0


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """What to submit for one user message.

    ``prompt`` goes to the engine; with ``continues`` it extends the agent's
    context (``cache=engine.agent_blocks(agent)``), otherwise it starts fresh
    (``cache=None``). ``base_text`` is the context text the prompt is appended to.
    """

    user_text: str
    prompt: str
    continues: bool
    base_text: str
    base_tokens: int


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """The numbers of a finished turn, as the engine reported them."""

    reply: str
    finish_reason: str
    cached_tokens: int
    prompt_tokens: int
    generated_tokens: int
    context_tokens: int
    ends_with_eos: bool


def plan_turn(conversation: Conversation, user_text: str, render: Renderer) -> TurnPlan:
    """The prompt that adds ``user_text`` (and the generation prompt) to the context."""
    messages = conversation.template_messages() + [{"role": "user", "content": user_text}]
    full = render(messages, True)
    known = conversation.context_text
    if known and conversation.context_tokens and full.startswith(known) and len(full) > len(known):
        return TurnPlan(user_text, full[len(known) :], True, known, conversation.context_tokens)
    return TurnPlan(user_text, full, False, "", 0)


def context_after(plan: TurnPlan, outcome: TurnOutcome, eos_text: str) -> str | None:
    """The context text once the turn ended, or None when it cannot be told.

    The token counts decide: the whole turn was kept (prompt and reply), nothing
    was kept (cancelled while reading the prompt), or something else happened and
    the next turn must start fresh.
    """
    kept_all = outcome.cached_tokens + outcome.prompt_tokens + outcome.generated_tokens
    # cached_tokens is 0 with a base when the engine re-read a spilled context as prompt; a fresh
    # prompt's cached tokens are its prefix found in shared blocks, still part of the prompt.
    same_base = (outcome.cached_tokens == plan.base_tokens or not plan.continues
                 or (plan.continues and outcome.cached_tokens == 0))
    if outcome.context_tokens == 0:
        return None
    if outcome.context_tokens == kept_all and same_base:
        eos = eos_text if outcome.ends_with_eos else ""
        return plan.base_text + plan.prompt + outcome.reply + eos
    if outcome.context_tokens == plan.base_tokens and plan.continues:
        return plan.base_text
    return None


def record_turn(conversation: Conversation, plan: TurnPlan, outcome: TurnOutcome, eos_text: str) -> None:
    """Add the user message and the reply (even a partial one) to the conversation."""
    if plan.continues:
        conversation.checkpoints[len(conversation.turns)] = (plan.base_text, plan.base_tokens)
    conversation.turns.append(ChatTurn("user", plan.user_text))
    conversation.turns.append(ChatTurn("assistant", outcome.reply))
    conversation.context_text = context_after(plan, outcome, eos_text)
    conversation.context_tokens = outcome.context_tokens if conversation.context_text else 0
    if conversation.context_text:
        conversation.checkpoints[len(conversation.turns)] = (conversation.context_text, conversation.context_tokens)


def rewind(conversation: Conversation, num_turns: int) -> int | None:
    """Keep the first ``num_turns`` turns; the context is the one after them when known.

    Returns the tokens the engine's context should keep, or None when the next turn must
    start a fresh one (no checkpoint there: e.g. the first turn, or a template rewrite)."""
    del conversation.turns[num_turns:]
    conversation.checkpoints = {n: c for n, c in conversation.checkpoints.items() if n <= num_turns}
    checkpoint = conversation.checkpoints.get(num_turns)
    conversation.context_text, conversation.context_tokens = checkpoint if checkpoint else (None, 0)
    return checkpoint[1] if checkpoint else None


def record_failure(conversation: Conversation, plan: TurnPlan, context_tokens: int) -> None:
    """A failed turn leaves no messages; the context is what the engine kept, if known."""
    unchanged = plan.continues and context_tokens == plan.base_tokens
    conversation.context_text = plan.base_text if unchanged else None
    conversation.context_tokens = context_tokens if unchanged else 0
