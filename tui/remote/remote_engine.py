"""``engine.protocol.Engine`` on a server: each turn is a streamed chat completion.

The owner thread calls ``submit`` / ``step_once`` / ``cancel`` as it calls the local
engine's, and gets the same result types (``engine.outputs``). The streams run as tasks on
an asyncio loop of this engine's own thread and put what they receive on ``_outbox``;
``step_once`` drains it into the deltas and completions the owner publishes. Cancelling a
turn closes its connection, and the server cancels the request and frees its blocks.

What a server does not offer here is declared: ``fork = None`` (its blocks are not ours to
share), ``adopt`` keeps nothing (each turn carries the whole conversation), and a finished
turn's ``blocks`` hold no token ids (the context is the server's; only its size is known).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from concurrent.futures import Future
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.outputs import Completion, FinishReason, StepOutput, TokenDelta
from pool import AgentBlocks
from telemetry import Event, Recorder
from tui.remote.client import ChatEvent, ServerClient, StreamDone, StreamOpened, StreamText, StreamUsage
from tui.remote.errors import ServerError
from tui.remote.messages import PostStatus
from tui.remote.pool_mirror import PoolMirror
from tui.remote.watcher import ServerWatcher
from tui.remote.wire import MessagesTemplate, chat_body, decode_messages

STEP_WAIT_S = 0.05  # step_once waits this long for a reply's next piece
NO_TOKEN_ID = 0  # a server streams text, not token ids (nothing reads TokenDelta.token of a remote turn)
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A piece of turn ``uid``'s stream; ``error`` ends it failed, ``event=None`` ends it normally."""

    uid: int
    event: ChatEvent | None = None
    error: str | None = None


@dataclass(eq=False)
class Turn:
    agent_id: str
    uid: int
    future: Future
    submitted_s: float
    text: str = ""
    num_tokens: int = 0
    finish_reason: FinishReason = "stop"
    usage: StreamUsage | None = None
    first_token_s: float | None = None


@dataclass
class _Step:
    deltas: list[TokenDelta] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)


class RemoteEngine:
    """See the module docstring. ``pool`` mirrors the server's pool (empty unless it is blockpool serve)."""

    fork = None  # the server's blocks: a fork here reads the conversation again on its first turn
    truncate = None  # stateless: a regenerated turn re-sends the whole history

    def __init__(self, url: str, *, api_key: str | None, model: str | None, recorder: Recorder, post: PostStatus,
                 refresh_s: float = 1.0) -> None:
        self.tokenizer = MessagesTemplate()
        self.pool = PoolMirror()
        self.model = model
        self.recorder = recorder
        self._outbox: queue.Queue[Reply | Event] = queue.Queue()
        self._turns: dict[int, Turn] = {}
        self._context_tokens: dict[str, int] = {}  # per agent, after its last turn (for the agents list)
        self._uids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="blockpool-remote", daemon=True)
        self._thread.start()
        self._client = ServerClient(url, api_key=api_key)
        self._watcher = ServerWatcher(self._client, post=post, on_event=self._outbox.put, refresh_s=refresh_s)
        self._watching = asyncio.run_coroutine_threadsafe(self._watcher.run(), self._loop)

    # -- engine.protocol.Engine (the owner thread) -------------------------------------

    def submit(self, agent_id: str, prompt: str | Sequence[int], cache: AgentBlocks | None = None,
               max_tokens: int = 256, *, temperature: float = 0.0, top_p: float = 1.0,
               stop: Sequence[str] | None = None, seed: int | None = None,
               cache_salt: str | None = None) -> int:
        if cache is not None:
            raise ValueError("a server keeps no context for this TUI: send the whole conversation")
        if not isinstance(prompt, str):
            raise ValueError("a server turn is the conversation as JSON messages, not token ids")
        messages = decode_messages(prompt)
        uid = next(self._uids)
        body = chat_body(self.model, messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                         stop=tuple(stop or ()), seed=seed, cache_salt=cache_salt)
        future = asyncio.run_coroutine_threadsafe(self._stream(uid, body), self._loop)
        self._turns[uid] = Turn(agent_id, uid, future, time.monotonic())
        return uid

    def step_once(self) -> StepOutput:
        started_s = time.perf_counter()
        batch_size = len(self._turns)
        ended = {uid for uid, turn in self._turns.items() if turn.future.done()}  # before draining: see _leftover
        step = _Step()
        for item in self._drain():
            if isinstance(item, Reply):
                self._take(item, step)
            else:
                self.pool.apply(item)
                self.recorder.publish(item)
        for uid in ended & self._turns.keys():
            step.completions.append(self._leftover(self._turns[uid]))
        ms = (time.perf_counter() - started_s) * 1000
        return StepOutput(step.deltas, step.completions, [], batch_size, 0, ms)

    def has_work(self) -> bool:
        return bool(self._turns) or not self._outbox.empty()

    def cancel(self, uid: int) -> None:
        if (turn := self._turns.get(uid)) is not None:
            turn.finish_reason = "cancelled"
            turn.future.cancel()  # closes the connection; the next step reports the turn cancelled

    def close_agent(self, agent_id: str) -> None:
        self._context_tokens.pop(agent_id, None)
        self.pool.forget(agent_id)
        for turn in list(self._turns.values()):
            if turn.agent_id == agent_id:
                self.cancel(turn.uid)

    def close(self) -> dict[str, str]:
        """Stop every stream and the event loop; nothing to save (the contexts are the server's)."""
        for turn in list(self._turns.values()):
            turn.future.cancel()
        self._watching.cancel()
        try:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(CLOSE_TIMEOUT_S)
        except Exception:  # a loop already stuck: the thread is a daemon
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        return {}

    def adopt(self, agent_id: str, token_ids: Sequence[int]) -> None:
        return None  # a server continues from the messages each turn carries

    def agent_blocks(self, agent_id: str) -> AgentBlocks | None:
        """Only a size (no token ids, no blocks): the context is the server's, so ``submit`` takes no cache."""
        num_tokens = self._context_tokens.get(agent_id)
        return AgentBlocks(agent_id, num_tokens) if num_tokens else None

    def spilled_agents(self) -> set[str]:
        return set()

    @property
    def num_queued(self) -> int:
        return 0

    @property
    def num_active(self) -> int:
        return len(self._turns)

    # -- the owner thread: turning replies into deltas and completions -------------------

    def _drain(self) -> list[Reply | Event]:
        try:
            items = [self._outbox.get(timeout=STEP_WAIT_S)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._outbox.get_nowait())
            except queue.Empty:
                return items

    def _take(self, reply: Reply, step: _Step) -> None:
        turn = self._turns.get(reply.uid)
        if turn is None:
            return  # cancelled and reported already
        match reply.event:
            case StreamOpened(conversation=conversation) if conversation is not None:
                self.pool.name(conversation, turn.agent_id)
            case StreamText(text=text):
                turn.text += text
                turn.num_tokens += 1
                turn.first_token_s = turn.first_token_s or time.monotonic()
                step.deltas.append(TokenDelta(turn.uid, turn.agent_id, NO_TOKEN_ID, text))
            case StreamUsage():
                turn.usage = reply.event
            case StreamDone(finish_reason=reason):
                turn.finish_reason = "length" if reason == "length" else "stop"
            case None:
                step.completions.append(self._complete(turn, turn.finish_reason, reply.error))

    def _leftover(self, turn: Turn) -> Completion:
        """A turn whose task ended without a last reply: cancelled (maybe before it started) or crashed."""
        future = turn.future
        if future.cancelled():
            return self._complete(turn, "cancelled", None)
        exc = future.exception()
        return self._complete(turn, "error", f"{type(exc).__name__}: {exc}" if exc else "the reply ended early")

    def _complete(self, turn: Turn, finish_reason: FinishReason, error: str | None) -> Completion:
        del self._turns[turn.uid]
        usage = turn.usage
        cached = usage.cached_tokens if usage is not None else 0
        prompt = usage.prompt_tokens - cached if usage is not None else 0
        generated = usage.completion_tokens if usage is not None and usage.completion_tokens else turn.num_tokens
        self._context_tokens[turn.agent_id] = 0 if error or usage is None else usage.prompt_tokens + generated
        now = time.monotonic()
        ttft_s = turn.first_token_s - turn.submitted_s if turn.first_token_s is not None else None
        # No blocks here: the next turn sends the whole conversation again (the app plans no continuation).
        return Completion(
            uid=turn.uid, agent_id=turn.agent_id, text=turn.text, token_count=cached + prompt + generated,
            finish_reason="error" if error else finish_reason, blocks=AgentBlocks(turn.agent_id),
            prompt_tokens=prompt, cached_tokens=cached, generated_tokens=generated, error=error,
            ttft_s=ttft_s, elapsed_s=now - turn.submitted_s)

    # -- the event loop's thread ---------------------------------------------------------

    async def _stream(self, uid: int, body: dict[str, Any]) -> None:
        try:
            if "model" not in body and (model := await self._default_model()) is not None:
                body["model"] = model
            async for event in self._client.chat(body):
                self._outbox.put(Reply(uid, event))
        except ServerError as exc:
            self._outbox.put(Reply(uid, error=str(exc)))
            if exc.unreachable:
                self._watcher.wake()
            return
        except Exception as exc:  # a bug or an odd server: end the turn with it rather than hang
            self._outbox.put(Reply(uid, error=f"{type(exc).__name__}: {exc}"))
            return
        self._outbox.put(Reply(uid))

    async def _default_model(self) -> str | None:
        """blockpool serve wants its one model named; other servers take their default when none is."""
        if self._watcher.served_models is None:
            await self._watcher.connect()
        return self._watcher.model
