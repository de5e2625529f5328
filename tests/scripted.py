"""A scripted ``engine.protocol.Engine``: the whole interface, no model, fixed output.

For snapshot tests and demos only: replies come from a script, one word per step;
blocks are taken from a real ``BlockPool``; telemetry carries fixed timestamps and
latencies, so every run draws the same screen. Never a substitute for the real
engine in behaviour tests.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.outputs import Completion, PrefillProgress, StepOutput, TokenDelta
from pool import AgentBlocks, BlockPool, ModelCacheSpec
from telemetry import EngineStep, Gather, Recorder, RequestFinished, RequestSubmitted

_WORD = re.compile(r"\s*\S+|\s+")
EOS = "<|im_end|>"
EOS_ID = 0
START_TS = 1_700_000_000.0

SCRIPTED_SPEC = ModelCacheSpec(
    n_layers=16, n_kv_heads=4, head_dim=64, dtype="float16", block_tokens=16,
    layer_types=("sliding", "sliding", "sliding", "global") * 4, sliding_window=64,
)


class ScriptedTokenizer:
    """Words as tokens and a ChatML template, enough for the app's chat logic."""

    eos_token = EOS
    eos_token_ids = frozenset({EOS_ID})
    has_chat_template = True

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i, _ in enumerate(_WORD.findall(text))]

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = False) -> str:
        """Words are not kept: an adopted context reads as one word per token (a turn after it starts fresh)."""
        return " ".join("word" for _ in token_ids)

    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = False,
                            tokenize: bool = False) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}{EOS}\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@dataclass(eq=False)
class _Turn:
    uid: int
    agent_id: str
    prompt_tokens: int
    cached_tokens: int
    max_tokens: int
    words: list[str]
    prefilled: bool = False
    generated: list[str] = field(default_factory=list)
    cancelled: bool = False


class ScriptedEngine:
    """Implements ``engine.protocol.Engine``; see the module docstring.

    Args:
        replies: reply texts, handed out in submit order (cycling).
        total_blocks: size of the block pool.
        hold_after: agents whose reply pauses after this many words (stays "generating");
            a public dict, so a test can hold a later turn.
    """

    def __init__(self, *, replies: Sequence[str], total_blocks: int = 320, recorder: Recorder | None = None,
                 hold_after: dict[str, int] | None = None, spec: ModelCacheSpec = SCRIPTED_SPEC) -> None:
        self.spec = spec
        self.pool = BlockPool(spec, total_blocks)
        self.tokenizer = ScriptedTokenizer()
        self.recorder = recorder if recorder is not None else Recorder()
        self._replies = itertools.cycle(replies)
        self.hold_after = dict(hold_after or {})
        self._uids = itertools.count()
        self._steps = itertools.count(1)
        self._turns: dict[int, _Turn] = {}
        self._agents: dict[str, AgentBlocks] = {}
        self._closed: set[str] = set()

    # -- the engine interface ------------------------------------------------------

    def submit(self, agent_id: str, prompt: str, cache: AgentBlocks | None = None, max_tokens: int = 256, *,
               temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] | None = None,
               seed: int | None = None, cache_salt: str | None = None) -> int:
        prompt_tokens = len(self.tokenizer.encode(prompt))
        if not prompt_tokens:
            raise ValueError("prompt is empty: give some text or token ids")
        if agent_id in self._closed:
            raise ValueError(f"agent {agent_id!r} was closed; start a new agent id")
        if any(t.agent_id == agent_id for t in self._turns.values()):
            raise ValueError(f"agent {agent_id!r} already has a request in flight; wait for it or cancel it")
        cached = cache.total_tokens if cache is not None else 0
        needed = self.spec.blocks_for_context(cached + prompt_tokens + 1)
        if needed > self.pool.total_blocks:
            raise ValueError(f"a context of {cached + prompt_tokens} tokens needs {needed} blocks but the whole "
                             f"pool has {self.pool.total_blocks}; shorten the prompt or give the pool more memory")
        if cache is None:
            self._resize(agent_id, 0)
        uid = next(self._uids)
        words = _WORD.findall(next(self._replies))
        self._turns[uid] = _Turn(uid, agent_id, prompt_tokens, cached, max_tokens, words)
        self.recorder.publish(RequestSubmitted(uid=uid, agent_id=agent_id, prompt_tokens=prompt_tokens,
                                               cached_tokens=cached, max_tokens=max_tokens, ts=self._now()))
        return uid

    def step_once(self) -> StepOutput:
        deltas: list[TokenDelta] = []
        prefill: list[PrefillProgress] = []
        completions: list[Completion] = []
        step = next(self._steps)
        for turn in list(self._turns.values()):
            if turn.cancelled:
                completions.append(self._finish(turn, "cancelled"))
            elif not turn.prefilled:
                self._prefill(turn, prefill)
            elif len(turn.generated) < self.hold_after.get(turn.agent_id, len(turn.words) + 1):
                self._generate(turn, deltas, completions)
        batch = len(self._turns) + len(completions)
        self.recorder.publish(EngineStep(batch_size=batch, tokens_generated=len(deltas),
                                         prefill_tokens=sum(p.total for p in prefill), ms=100.0 + step % 5,
                                         queued=0, ts=self._now(step)))
        return StepOutput(deltas, completions, prefill, batch, sum(p.total for p in prefill), 100.0)

    def has_work(self) -> bool:
        return any(t.cancelled or not t.prefilled or len(t.generated) < self.hold_after.get(t.agent_id, 10**9)
                   for t in self._turns.values())

    def cancel(self, uid: int) -> None:
        if uid in self._turns:
            self._turns[uid].cancelled = True

    def close_agent(self, agent_id: str) -> None:
        self._closed.add(agent_id)
        for uid in [u for u, t in self._turns.items() if t.agent_id == agent_id]:
            del self._turns[uid]
        self._agents.pop(agent_id, None)
        self.pool.free_agent_blocks(agent_id)

    def agent_blocks(self, agent_id: str) -> AgentBlocks | None:
        return self._agents.get(agent_id)

    def adopt(self, agent_id: str, token_ids: Sequence[int]) -> AgentBlocks:
        return self._resize(agent_id, len(token_ids))

    def spilled_agents(self) -> set[str]:
        return set()  # the script never spills

    fork = None  # the script keeps no K/V to share
    truncate = None  # nor a context to roll back

    def close(self) -> dict[str, str]:
        return {}  # nothing to save: the script keeps no K/V

    @property
    def num_active(self) -> int:
        return sum(t.prefilled for t in self._turns.values())

    @property
    def num_queued(self) -> int:
        return sum(not t.prefilled for t in self._turns.values())

    # -- the script ---------------------------------------------------------------

    def _prefill(self, turn: _Turn, prefill: list[PrefillProgress]) -> None:
        turn.prefilled = True
        if turn.cached_tokens:
            num_blocks = self._agents[turn.agent_id].num_blocks()
            ms = 0.6 + 0.05 * num_blocks
            self.recorder.publish(Gather(agent_id=turn.agent_id, num_blocks=num_blocks,
                                         num_bytes=num_blocks * self.spec.bytes_per_block, ms=ms,
                                         num_tokens=turn.cached_tokens, ts=self._now()))
        self._resize(turn.agent_id, turn.cached_tokens + turn.prompt_tokens)
        prefill.append(PrefillProgress(turn.uid, turn.agent_id, turn.prompt_tokens, turn.prompt_tokens))

    def _generate(self, turn: _Turn, deltas: list[TokenDelta], completions: list[Completion]) -> None:
        if len(turn.generated) >= min(len(turn.words), turn.max_tokens):
            completions.append(self._finish(turn, "stop" if len(turn.generated) < turn.max_tokens else "length"))
            return
        word = turn.words[len(turn.generated)]
        turn.generated.append(word)
        self._resize(turn.agent_id, turn.cached_tokens + turn.prompt_tokens + len(turn.generated))
        deltas.append(TokenDelta(turn.uid, turn.agent_id, len(turn.generated), word))

    def _finish(self, turn: _Turn, reason: str) -> Completion:
        del self._turns[turn.uid]
        eos = reason == "stop"
        generated = len(turn.generated) + eos
        total = turn.cached_tokens + turn.prompt_tokens + generated if turn.prefilled else turn.cached_tokens
        agent = self._resize(turn.agent_id, total)
        self.recorder.publish(RequestFinished(
            uid=turn.uid, agent_id=turn.agent_id, prompt_tokens=turn.prompt_tokens,
            cached_tokens=turn.cached_tokens, generated_tokens=generated, ttft_ms=250.0, decode_tok_s=10.0,
            finish_reason=reason, ts=self._now()))
        return Completion(uid=turn.uid, agent_id=turn.agent_id, text="".join(turn.generated),
                          token_count=turn.prompt_tokens + generated, finish_reason=reason, blocks=agent,
                          prompt_tokens=turn.prompt_tokens, cached_tokens=turn.cached_tokens,
                          generated_tokens=generated, token_ids=[1] * len(turn.generated) + [EOS_ID] * eos)

    def _resize(self, agent_id: str, num_tokens: int) -> AgentBlocks:
        """Hold exactly the blocks a context of ``num_tokens`` needs (all-new blocks, for simplicity)."""
        self.pool.free_agent_blocks(agent_id)
        agent = AgentBlocks(agent_id, num_tokens, [1] * num_tokens)
        for layer_id in range(self.spec.n_layers):
            n = self.spec.max_blocks_for_layer(layer_id, num_tokens)
            if n:
                for block in self.pool.allocate(n, layer_id, agent_id):
                    agent.add_block(block)
        self._agents[agent_id] = agent
        return agent

    def _now(self, step: int | None = None) -> float:
        return START_TS + 0.1 * (step if step is not None else 0)


def scripted_app(replies: Sequence[str], *, store=None, total_blocks: int = 320,
                 hold_after: dict[str, int] | None = None, blas_notes: Sequence[str] | None = None, **settings):
    """blockpool-tui over a ``ScriptedEngine`` (two agents unless told): for flows that do not
    depend on what the model says, and for snapshots."""
    from tui.app import BlockpoolApp
    from tui.settings import TuiSettings

    def factory(progress, recorder):
        return ScriptedEngine(replies=replies, total_blocks=total_blocks, recorder=recorder, hold_after=hold_after)

    app = BlockpoolApp(TuiSettings(**{"agents": 2, **settings}), engine_factory=factory, store=store,
                       blas_notes=blas_notes)
    app.clock = lambda: START_TS  # the history panel draws one bucket, the same every run
    return app
