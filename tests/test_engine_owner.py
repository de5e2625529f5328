"""The engine's one owner thread (``engine.owner_thread``) over the real model, with no front end:
a command's failure goes back to its sender and the thread serves on; a step's failure ends the
requests in flight, and a rebuilt engine continues every agent from its context."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import pytest

from engine.batch_engine import BlockPoolBatchEngine
from engine.factory import EngineConfig, engine_factory
from engine.owner_messages import (
    ContextAdopted,
    EngineFailed,
    EngineReady,
    ForkAgent,
    ForkFailed,
    Inspect,
    RequestAccepted,
    RequestEnded,
    RequestRefused,
    Submit,
)
from engine.owner_thread import EngineOwner
from telemetry import Recorder
from tests.helpers import fail_first_call

WAIT_S = 90.0


class Events:
    """The owner's events, in order, for a test to wait on."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.seen: list = []

    def __call__(self, event) -> None:
        self.queue.put(event)

    def next(self, kind, request_id: int | None = None):
        """The next event of ``kind`` (of ``request_id``, when given); the others are kept in ``seen``."""
        while True:
            event = self.queue.get(timeout=WAIT_S)
            self.seen.append(event)
            if isinstance(event, kind) and (request_id is None or event.request_id == request_id):
                return event


@pytest.fixture
def owner(default_model):
    events = Events()
    owner = EngineOwner(factory=engine_factory(EngineConfig(blocks=200), loaded_model=default_model),
                        on_event=events, recorder=Recorder())
    owner.events = events  # type: ignore[attr-defined]
    owner.start()
    events.next(EngineReady)
    yield owner
    owner.stop(timeout_s=WAIT_S)


def turn(owner: EngineOwner, agent_id: str, prompt: str, *, continues: bool = False) -> RequestEnded:
    request_id = owner.new_request_id()
    owner.send(Submit(request_id, prompt, 4, agent_id=agent_id, continues=continues))
    owner.events.next(RequestAccepted, request_id)  # type: ignore[attr-defined]
    return owner.events.next(RequestEnded, request_id)  # type: ignore[attr-defined]


def test_a_failing_command_answers_its_sender_and_the_thread_serves_on(owner, monkeypatch) -> None:
    future: Future = Future()
    owner.send(Inspect(lambda _: 1 / 0, future))
    with pytest.raises(ZeroDivisionError):
        future.result(WAIT_S)

    real_submit = BlockPoolBatchEngine.submit

    def submit_failing_for_b(self, agent_id, *args, **kwargs):
        if agent_id == "b":
            raise TypeError("injected")  # not a ValueError: a bug on the way in
        return real_submit(self, agent_id, *args, **kwargs)

    monkeypatch.setattr(BlockPoolBatchEngine, "submit", submit_failing_for_b)
    refused_id = owner.new_request_id()
    owner.send(Submit(refused_id, "Hello", 4, agent_id="b"))
    refused = owner.events.next(RequestRefused, refused_id)
    assert (refused.reason, refused.error) == ("internal", "TypeError: injected")

    owner.send(ForkAgent("nobody", "c"))
    assert "nobody" in owner.events.next(ForkFailed).error

    ended = turn(owner, "a", "Hi")
    assert ended.finish_reason in ("stop", "length") and ended.text
    assert owner.is_alive() and not any(isinstance(e, EngineFailed) for e in owner.events.seen)


def test_a_failed_step_ends_the_requests_in_it_and_the_rebuilt_engine_continues_each_context(owner,
                                                                                             monkeypatch):
    first = turn(owner, "a", "Hi")
    fail_first_call(monkeypatch, BlockPoolBatchEngine, "step_once", OSError(28, "No space left on device (injected)"))
    request_id = owner.new_request_id()
    owner.send(Submit(request_id, " And you?", 4, agent_id="a", continues=True))
    failed = owner.events.next(EngineFailed)
    assert failed.restarting and failed.request_ids == (request_id,) and "injected" in failed.error
    owner.events.next(EngineReady)
    adopted = owner.events.next(ContextAdopted)
    assert (adopted.agent_id, adopted.num_tokens) == ("a", first.context_tokens)

    again = turn(owner, "a", " And you?", continues=True)  # from the re-adopted context (re-read: no spill file)
    assert again.finish_reason in ("stop", "length") and again.context_tokens > first.context_tokens
    assert again.context_ids[: first.context_tokens] == first.context_ids


def test_commands_come_from_any_thread(owner) -> None:
    ids = [owner.new_request_id() for _ in range(3)]
    senders = [threading.Thread(target=owner.send, args=(Submit(rid, "Hi", 3, agent_id=f"t{rid}"),))
               for rid in ids]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    ended = {owner.events.next(RequestEnded).request_id for _ in ids}
    assert ended == set(ids) and len(set(ids)) == 3


@pytest.mark.parametrize(("given", "hot"), [({}, True), ({"hot_cache": "0"}, False)])
def test_the_hot_cache_setting_reaches_the_engine(default_model, given, hot):
    """``--hot-cache 0`` (or BLOCKPOOL_HOT_CACHE=0) makes every warm turn gather from blocks."""
    from frontend.settings import settings_from_args
    from tui.settings import TuiSettings

    settings = settings_from_args(TuiSettings, {"blocks": 200, **given})
    recorder = Recorder()
    engine = engine_factory(settings.engine_config(), loaded_model=default_model)(lambda *_: None, recorder)
    with engine:
        first = engine.submit("a", "Hello there", max_tokens=3)
        (done,) = [c for c in engine.step() if c.uid == first]
        engine.submit("a", [600, 601], done.blocks, max_tokens=3)
        list(engine.step())
    assert [e.hot for e in recorder.events("gather")] == [hot]
