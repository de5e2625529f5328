"""Shared blocks on the real model: prefix hits, forks, copy-on-write and cached free blocks.

Every reply is checked against a live reference: the same agent run alone with sharing
off, or mlx-lm with one persistent prompt cache per conversation.
"""

from __future__ import annotations

import statistics

import pytest

from engine import BlockPoolBatchEngine
from engine.kv.spill import model_key
from engine.prompt_sharing import MIN_PARTIAL_TOKENS
from pool import BlockPool
from telemetry import Recorder
from telemetry.events import CopyOnWrite, Fork, PrefixLookup

from .reference import assert_blocks_accounted, reference_turns, run_alone

MAX_TOKENS = 8
NUM_AGENTS = 4  # of the questions below: 8 made this module the suite's slowest (2.5 min)
SHARED_BLOCKS = 2  # full blocks the agents' prompts have in common (4 took the suite past 15 min)
SHARED = SHARED_BLOCKS * 256  # their tokens
QUESTIONS = [
    "What did the supply boat bring?",
    "How often was the lamp cleaned?",
    "Which ship reported calm seas?",
    "What was logged at noon?",
    "Summarise the log in one sentence.",
    "Was there a storm?",
    "Who kept the lighthouse?",
    "List three things from the log.",
]


def system_prompt(num_sentences: int) -> str:
    facts = [
        "The lighthouse keeper logged the weather at {n} o'clock.",
        "Ship number {n} reported calm seas and a light northern wind.",
        "On day {n}, the supply boat brought bread, oil and letters.",
        "The lamp was cleaned {n} times before the winter storms began.",
    ]
    return "You answer questions about this log.\n" + " ".join(
        facts[i % len(facts)].format(n=i + 1) for i in range(num_sentences))


def common_prefix(token_lists: list[list[int]]) -> int:
    n = 0
    while all(len(t) > n and t[n] == token_lists[0][n] for t in token_lists):
        n += 1
    return n


@pytest.fixture(scope="module")
def prompts(default_model) -> list[str]:
    _, tokenizer = default_model
    system = system_prompt(44)
    out = [f"{system}\nQuestion: {q}\nAnswer:" for q in QUESTIONS[:NUM_AGENTS]]
    assert SHARED < common_prefix([tokenizer.encode(p) for p in out]) < SHARED + 256  # and part of the next
    return out


def new_engine(default_model, default_spec, *, total_blocks: int = 1400, sharing: bool = True, recorder=None):
    model, tokenizer = default_model
    pool = BlockPool(default_spec, total_blocks, model_key=model_key(model))
    return BlockPoolBatchEngine(model, tokenizer, pool, default_spec, prefix_cache=sharing, recorder=recorder)


@pytest.fixture(scope="module")
def solo_texts(default_model, default_spec, prompts) -> list[str]:
    """Each agent run alone on an engine with sharing off."""
    engine = new_engine(default_model, default_spec, sharing=False)
    texts = [run_alone(engine, f"solo-{i}", p, MAX_TOKENS).text for i, p in enumerate(prompts)]
    assert engine.pool.num_shared_blocks() == 0
    return texts


def check_prompt_held_once(engine: BlockPoolBatchEngine, agent_ids: list[str], shared_blocks: int) -> None:
    """Used blocks = the prompt's full blocks once per layer + each agent's own tail, exactly."""
    n_layers = engine.spec.n_layers
    contexts = [engine.agent_blocks(a) for a in agent_ids]
    for layer_id in range(n_layers):
        heads = {tuple(b.block_id for b in c.layer_blocks(layer_id)[:shared_blocks]) for c in contexts}
        assert len(heads) == 1, f"layer {layer_id}: agents hold different prompt blocks {heads}"
    tails = sum(c.num_blocks() - n_layers * shared_blocks for c in contexts)
    assert engine.pool.used_blocks() == n_layers * shared_blocks + tails
    assert engine.pool.num_shared_blocks() == n_layers * shared_blocks
    assert_blocks_accounted(engine, agent_ids)


def reusable(engine: BlockPoolBatchEngine, prompt: str, earlier: list[str]) -> int:
    """Tokens of ``prompt`` a new agent takes from the contexts of ``earlier`` agents: their
    longest common prefix, never the prompt's last token (it must be prefilled for logits)."""
    ids = engine.encode(prompt)
    best = max(common_prefix([ids[:-1], engine.agent_blocks(a).token_ids]) for a in earlier)
    full = best // engine.spec.block_tokens * engine.spec.block_tokens
    return best if best - full >= MIN_PARTIAL_TOKENS else full


def test_agents_one_after_another_share_the_prompt(default_model, default_spec, prompts, solo_texts):
    """Agents 2..N hold the prompt's four full blocks and copy the tokens of the fifth they have
    in common with an earlier context, so they prefill only their own question."""
    recorder = Recorder()
    engine = new_engine(default_model, default_spec, recorder=recorder)
    done, expected = [], []
    for i, p in enumerate(prompts):
        expected.append(reusable(engine, p, [f"agent-{j}" for j in range(i)]) if i else 0)
        done.append(run_alone(engine, f"agent-{i}", p, MAX_TOKENS))
    identical = sum(d.text == want for d, want in zip(done, solo_texts))
    ttft_ms = [d.ttft_s * 1000 for d in done]
    print(f"\nsharing, one after another: {identical}/{NUM_AGENTS} byte-identical; TTFT agent 1 {ttft_ms[0]:.0f} ms, "
          f"the others median {statistics.median(ttft_ms[1:]):.0f} ms ({[round(t) for t in ttft_ms[1:]]}); "
          f"reused {expected[1:]} tokens")
    assert [d.text for d in done] == solo_texts
    assert all(n > SHARED for n in expected[1:])  # past the full blocks: the common part of the fifth
    assert [d.cached_tokens for d in done] == expected
    check_prompt_held_once(engine, [f"agent-{i}" for i in range(NUM_AGENTS)], SHARED_BLOCKS)
    lookups = recorder.events("prefix_lookup")
    hits = NUM_AGENTS - 1
    assert [e.reused_tokens for e in lookups] == expected
    state = recorder.state().sharing
    assert state.reused_tokens == sum(expected) and state.num_hits == hits
    assert state.hit_rate == pytest.approx(sum(expected) / sum(e.prompt_tokens for e in lookups))
    assert recorder.state().last_pool.num_saved_blocks == hits * SHARED_BLOCKS * engine.spec.n_layers
    assert statistics.median(ttft_ms[1:]) < ttft_ms[0]


def test_agents_together_prefill_the_prompt_once(default_model, default_spec, prompts, solo_texts):
    """Submitted in one go, nothing is in the pool yet: the first prefills the prompt and writes
    its full blocks as soon as they are computed; the others wait for them, hold them, and
    prefill only the rest. Replies equal each agent's run alone with sharing off."""
    engine = new_engine(default_model, default_spec)
    uids = [engine.submit(f"agent-{i}", p, max_tokens=MAX_TOKENS) for i, p in enumerate(prompts)]
    done = {c.uid: c for c in engine.step()}
    texts = [done[u].text for u in uids]
    print(f"\nsharing, together: {sum(t == w for t, w in zip(texts, solo_texts))}/{NUM_AGENTS} byte-identical")
    assert texts == solo_texts
    assert [done[u].cached_tokens for u in uids] == [0] + [SHARED] * (NUM_AGENTS - 1)
    check_prompt_held_once(engine, [f"agent-{i}" for i in range(NUM_AGENTS)], SHARED_BLOCKS)


def test_a_cancelled_leader_leaves_its_prompt_blocks_cached(default_model, default_spec, prompts, solo_texts):
    """The first agent is cancelled after its prompt's blocks were written mid-turn: its context
    is as before the turn (empty), the blocks stay cached, and the next agent still reuses them."""
    engine = new_engine(default_model, default_spec, total_blocks=400)
    uid = engine.submit("leader", prompts[0], max_tokens=MAX_TOKENS)
    while engine.agent_blocks("leader") is None or engine.agent_blocks("leader").total_tokens < SHARED:
        engine.step_once()
    engine.cancel(uid)
    (cancelled,) = [c for c in engine.step() if c.uid == uid]
    assert cancelled.finish_reason == "cancelled" and cancelled.generated_tokens == 0
    assert engine.agent_blocks("leader").total_tokens == 0 and engine.pool.used_blocks() == 0
    assert engine.pool.num_cached_blocks() == SHARED_BLOCKS * engine.spec.n_layers
    follower = run_alone(engine, "follower", prompts[1], MAX_TOKENS)
    assert follower.cached_tokens == SHARED and follower.text == solo_texts[1]


FORK_BASE = "Read this log and remember it.\n\n" + system_prompt(16)
FOLLOW_UP = "\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def test_fork_shares_everything_and_copies_one_block_at_the_first_write(default_model, default_spec):
    model, tokenizer = default_model
    base = tokenizer.apply_chat_template([{"role": "user", "content": FORK_BASE}], add_generation_prompt=True,
                                         tokenize=False)
    branch_a, branch_b = FOLLOW_UP.format("What did the boat bring?"), FOLLOW_UP.format("Was it windy?")
    want_a = reference_turns(model, tokenizer, [base, branch_a], MAX_TOKENS)
    want_b = reference_turns(model, tokenizer, [base, branch_b], MAX_TOKENS)

    recorder = Recorder()
    engine = new_engine(default_model, default_spec, total_blocks=400, recorder=recorder)
    first = run_alone(engine, "source", base, MAX_TOKENS)
    assert first.text == want_a[0] == want_b[0]
    assert first.blocks.total_tokens % engine.spec.block_tokens  # it ends in a partial block
    used = engine.pool.used_blocks()
    forked = engine.fork("source", "fork")
    assert engine.pool.used_blocks() == used  # nothing allocated
    assert [b.block_id for b in forked.all_blocks()] == [b.block_id for b in first.blocks.all_blocks()]
    (fork_event,) = recorder.events("fork")
    assert isinstance(fork_event, Fork) and fork_event.num_bytes == 0 and fork_event.num_blocks == used

    source_turn = run_alone(engine, "source", branch_a, MAX_TOKENS, cache=first.blocks)
    (cow,) = recorder.events("copy_on_write")
    assert isinstance(cow, CopyOnWrite) and cow.agent_id == "source"
    assert cow.num_blocks == engine.spec.n_layers  # one partial block per layer
    assert cow.num_bytes == engine.spec.n_layers * engine.spec.bytes_per_block
    fork_turn = run_alone(engine, "fork", branch_b, MAX_TOKENS, cache=forked)
    assert len(recorder.events("copy_on_write")) == 1  # the fork's partial block was its own by then
    print(f"\nfork: source {source_turn.text == want_a[1]}, fork {fork_turn.text == want_b[1]} byte-identical")
    assert source_turn.text == want_a[1]
    assert fork_turn.text == want_b[1]
    assert_blocks_accounted(engine, ["source", "fork"])


def test_fork_of_a_spilled_source_restores_it_first(default_model, default_spec):
    model, tokenizer = default_model
    engine = new_engine(default_model, default_spec, total_blocks=400)
    first = run_alone(engine, "source", FORK_BASE, MAX_TOKENS)
    assert engine.evict("source")
    forked = engine.fork("source", "fork")
    assert "source" not in engine.spilled_agents()
    assert forked.total_tokens == first.blocks.total_tokens and forked.num_blocks() == first.blocks.num_blocks()
    again = run_alone(engine, "fork", " And then?", MAX_TOKENS, cache=forked)
    alone = run_alone(engine, "source", " And then?", MAX_TOKENS, cache=engine.agent_blocks("source"))
    assert again.text == alone.text
    with pytest.raises(ValueError, match="already has a context"):
        engine.fork("source", "fork")


def test_a_closed_agents_blocks_stay_cached_for_the_next_agent(default_model, default_spec, prompts, solo_texts):
    recorder = Recorder()
    engine = new_engine(default_model, default_spec, total_blocks=400, recorder=recorder)
    run_alone(engine, "first", prompts[0], MAX_TOKENS)
    engine.close_agent("first")
    assert engine.pool.used_blocks() == 0
    assert engine.pool.num_cached_blocks() >= SHARED_BLOCKS * engine.spec.n_layers
    second = run_alone(engine, "second", prompts[1], MAX_TOKENS)
    assert second.cached_tokens == SHARED
    assert second.text == solo_texts[1]
    lookup = recorder.events("prefix_lookup")[-1]
    assert isinstance(lookup, PrefixLookup) and lookup.num_cached_blocks == SHARED_BLOCKS * engine.spec.n_layers


def test_cached_blocks_are_reclaimed_before_anyone_is_spilled(default_model, default_spec, prompts):
    engine = new_engine(default_model, default_spec, total_blocks=180)  # 6 a layer
    n_layers = engine.spec.n_layers
    run_alone(engine, "closed", prompts[0], MAX_TOKENS)  # 3 blocks a layer, 2 of them full
    engine.close_agent("closed")
    assert engine.pool.num_cached_blocks() == SHARED_BLOCKS * n_layers
    run_alone(engine, "idle", "Hello there.", MAX_TOKENS)  # stays resident, 1 block a layer
    empty = engine.pool.free_blocks() - engine.pool.num_cached_blocks()
    assert empty == 3 * n_layers
    other = "Tell me about trains. " + " ".join(f"Train {i} left at {i} past noon." for i in range(75))
    run_alone(engine, "big", other, MAX_TOKENS)  # 4 a layer (893 tokens): more than the empty blocks
    assert engine.spilled_agents() == set()  # the cached blocks made the room
    assert engine.pool.num_cached_blocks() == empty + SHARED_BLOCKS * n_layers - 4 * n_layers
    run_alone(engine, "bigger", other.replace("trains", "boats"), MAX_TOKENS)  # now someone must go
    assert engine.spilled_agents() == {"idle", "big"}
    engine.pool.check_invariants()
