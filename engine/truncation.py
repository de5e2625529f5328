"""Rolling an idle agent's context back to its first tokens (regenerate, edit, fork at a message).

The pool's bookkeeping is ``pool.truncation``; here the engine side: the K/V of blocks cut on
a private copy, the agent's hot caches (they hold the tokens dropped), a spilled context
(restored first, so the kept part comes from disk, not a prefill). Owner thread only.
"""

from __future__ import annotations

from pool import AgentBlocks, can_truncate_in_place

from .contexts import Contexts


def truncate_context(contexts: Contexts, agent_id: str, n_tokens: int) -> AgentBlocks:
    """Keep the first ``n_tokens`` of ``agent_id``'s context, in place (the AgentBlocks a
    completion returned stays the one to continue). ValueError naming the values otherwise."""
    agent = contexts.agents.get(agent_id)
    if agent is None:
        raise ValueError(f"agent {agent_id!r} has no context to truncate; submit a turn for it first")
    if not 0 <= n_tokens <= agent.total_tokens:
        raise ValueError(f"cannot truncate agent {agent_id!r} to {n_tokens} tokens: its context holds "
                         f"{agent.total_tokens}; pick 0..{agent.total_tokens}")
    contexts.hot.drop(agent_id)
    if agent_id in contexts.residency.spilled and not _restore(contexts, agent):
        _keep_ids_only(contexts, agent, n_tokens)
    elif not can_truncate_in_place(contexts.pool.spec, agent, n_tokens):
        contexts.pool.free_agent_blocks(agent_id)
        agent.clear()
        _keep_ids_only(contexts, agent, n_tokens)
    else:
        for old_id, new_id in contexts.pool.truncate(agent, n_tokens):
            contexts.store.copy_block(old_id, new_id)
    contexts.touch(agent_id)
    return agent


def _restore(contexts: Contexts, agent: AgentBlocks) -> bool:
    """A spilled context back in blocks; False when it cannot come back (no room, bad file)."""
    ids = list(agent.token_ids)
    restored = contexts.residency.restore(agent, contexts.victims_for(agent.agent_id))
    if restored is None or restored.prefix:
        agent.total_tokens, agent.token_ids = len(ids), ids
        return False
    contexts.prefix.register(agent)
    return True


def _keep_ids_only(contexts: Contexts, agent: AgentBlocks, n_tokens: int) -> None:
    """The kept tokens are not in blocks: the agent's next turn prefills them (no spill file)."""
    contexts.residency.forget_file(agent.agent_id)
    agent.total_tokens, agent.token_ids = n_tokens, agent.token_ids[:n_tokens]
    contexts.residency.spilled.add(agent.agent_id)
