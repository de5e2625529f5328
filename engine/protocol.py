"""The one engine shape the owner thread drives: ``BlockPoolBatchEngine`` here, ``RemoteEngine``
(``tui.remote``) on a server, a scripted fake in the tests. Each implements all of it.

Results are ``engine.outputs``' types (``StepOutput`` of ``TokenDelta``, ``PrefillProgress``
and ``Completion``) whatever the engine. A capability an engine lacks is declared, not
probed: ``fork = None`` where contexts cannot share blocks, ``truncate = None`` where a
context cannot be rolled back here (the front end re-sends the history instead); ``adopt`` returns None where no
context is kept here (a server keeps it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # importing pool loads MLX: a front end imports this module before the BLAS re-exec
    from pool import AgentBlocks, PoolSnapshot

    from .outputs import StepOutput

# render(messages, add_generation_prompt) -> the chat-template text, untokenized.
Render = Callable[[list[dict[str, str]], bool], str]


class ChatTokenizer(Protocol):
    """What a front end uses of an engine's tokenizer (mlx-lm's ``TokenizerWrapper`` has it all)."""

    @property
    def eos_token(self) -> str | None: ...
    @property
    def eos_token_ids(self) -> Collection[int]: ...
    @property
    def has_chat_template(self) -> bool: ...
    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = False,
                            tokenize: bool = False) -> str: ...
    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = False) -> str: ...


class PoolSource(Protocol):
    """Where the pool's picture comes from: the ``BlockPool`` itself, or a mirror of a server's."""

    def snapshot(self) -> PoolSnapshot: ...


class Engine(Protocol):
    """See the module docstring; ``BlockPoolBatchEngine`` documents each call."""

    @property
    def tokenizer(self) -> ChatTokenizer: ...
    @property
    def pool(self) -> PoolSource: ...
    @property
    def num_queued(self) -> int: ...
    @property
    def num_active(self) -> int: ...
    @property
    def fork(self) -> Callable[[str, str], AgentBlocks] | None: ...
    @property
    def truncate(self) -> Callable[[str, int], AgentBlocks] | None: ...

    def submit(self, agent_id: str, prompt: str | Sequence[int], cache: AgentBlocks | None = None,
               max_tokens: int = 256, *, temperature: float = 0.0, top_p: float = 1.0,
               stop: Sequence[str] | None = None, seed: int | None = None,
               cache_salt: str | None = None) -> int: ...
    def step_once(self) -> StepOutput: ...
    def has_work(self) -> bool: ...
    def cancel(self, uid: int) -> None: ...
    def close_agent(self, agent_id: str) -> None: ...
    def adopt(self, agent_id: str, token_ids: Sequence[int]) -> AgentBlocks | None: ...
    def agent_blocks(self, agent_id: str) -> AgentBlocks | None: ...
    def spilled_agents(self) -> set[str]: ...
    def close(self) -> dict[str, str]: ...


def render_chat(tokenizer: ChatTokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """The model's chat template over ``messages``; 'Role: text' paragraphs for a model without one."""
    if not tokenizer.has_chat_template:
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
        return text + ("Assistant:" if add_generation_prompt else "")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
