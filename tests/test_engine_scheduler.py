"""The scheduler alone (no model, no MLX): queues, admission order, commands, spill order."""

from __future__ import annotations

import pytest

from engine.scheduler import Blocked, Failed, Scheduler, Started, spill_order
from engine.sequence import Request
from pool import AgentBlocks, BlockPool, ModelCacheSpec

SPEC = ModelCacheSpec(n_layers=2, n_kv_heads=1, head_dim=4, dtype="float32", block_tokens=4,
                      layer_types=("global", "global"))


def request(agent_id: str):
    return lambda uid: Request(uid, agent_id, [1, 2, 3], 4, 0.0, 1.0, (), None)


def start_all(gen_uids):
    def start(r: Request):
        r.start(next(gen_uids), detokenizer=None)
        return Started()
    return start


def test_busy_and_closed_agents_are_refused():
    s = Scheduler(max_batch_size=2)
    s.add("a", request("a"))
    with pytest.raises(ValueError, match="already has request 0 in flight"):
        s.add("a", request("a"))
    s.close("b")
    with pytest.raises(ValueError, match="was closed"):
        s.add("b", request("b"))
    with pytest.raises(ValueError, match="busy or closed"):
        s.adopt(AgentBlocks("a"))
    assert s.take_commands().close_agent_ids == {"b"}
    assert s.take_commands().close_agent_ids == set()  # taken once


def test_admission_fills_the_batch_and_keeps_blocked_requests_in_place():
    s = Scheduler(max_batch_size=2)
    for agent in "abcd":
        s.add(agent, request(agent))
    gen_uids = iter(range(100))

    def start(r: Request):
        if r.agent_id == "a":
            return Blocked("no room for a")
        r.start(next(gen_uids), detokenizer=None)
        return Started()

    assert s.admit(start) == []
    assert sorted(r.agent_id for r in s.running.values()) == ["b", "c"]
    assert [r.agent_id for r in s.waiting] == ["a", "d"]  # a keeps its place ahead of d
    for r in list(s.running.values()):
        s.finished(r)
    failed = s.admit(lambda r: Blocked(f"no room for {r.agent_id}"))
    assert [(r.agent_id, e) for r, e in failed] == [("a", "no room for a")]  # nothing runs: the head fails
    assert [r.agent_id for r in s.waiting] == ["d"]


def test_failed_starts_are_returned_and_finished_agents_may_submit_again():
    s = Scheduler(max_batch_size=4)
    s.add("a", request("a"))
    (failed,) = s.admit(lambda r: Failed("stale cache"))
    assert failed[1] == "stale cache"
    s.finished(failed[0])
    assert not s.is_busy("a")
    s.add("a", request("a"))
    assert s.has_work()


def test_spill_order_is_least_recently_used_and_skips_running_and_empty():
    pool = BlockPool(SPEC, 16)
    agents = [AgentBlocks(name) for name in "abcd"]
    for agent in agents[:3]:
        for layer_id in range(2):
            agent.add_block(pool.allocate(1, layer_id, agent.agent_id)[0])
    last_used = {"a": 3.0, "b": 1.0, "c": 2.0}
    order = spill_order(agents, last_used, running={"c"}, exclude="x")
    assert [a.agent_id for a in order] == ["b", "a"]  # c runs, d holds nothing
    assert [a.agent_id for a in spill_order(agents, last_used, running=set(), exclude="b")] == ["c", "a"]
