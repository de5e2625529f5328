"""``Truncate`` through the owner thread: the context rolls back between turns, a refusal is told."""

from __future__ import annotations

from engine.owner_messages import Truncate, Truncated, TruncateFailed
from tests.test_engine_owner import owner, turn  # noqa: F401  (the fixture and the helper)


def test_truncate_rolls_back_to_an_earlier_turn_and_refuses_more_than_the_context(owner) -> None:  # noqa: F811
    first = turn(owner, "a", "Hello there.")
    second = turn(owner, "a", " And again.", continues=True)
    assert second.context_tokens > first.context_tokens
    owner.send(Truncate("a", first.context_tokens))
    done = owner.events.next(Truncated)
    assert (done.agent_id, done.num_tokens, done.token_ids) == ("a", first.context_tokens, first.context_ids)
    third = turn(owner, "a", " Once more.", continues=True)
    assert third.cached_tokens == first.context_tokens  # the rolled-back context, still in blocks
    owner.send(Truncate("a", 10_000))
    failed = owner.events.next(TruncateFailed)
    assert f"cannot truncate agent 'a' to 10000 tokens: its context holds {third.context_tokens}" in failed.error
