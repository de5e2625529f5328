"""A saved conversation as Markdown (``blockpool export``, the TUI's export key)."""

from __future__ import annotations

from frontend.sessions import AgentRecord, SessionStore


def export_markdown(store: SessionStore, agent: AgentRecord) -> str:
    """One agent's conversation as Markdown."""
    lines = [f"# {agent.name}", ""]
    if agent.system_prompt:
        lines += [f"> System: {agent.system_prompt}", ""]
    for message in store.messages(agent.id):
        title = "User" if message.role == "user" else "Assistant"
        note = "" if message.status == "complete" else f" *({message.status})*"
        lines += [f"## {title}{note}", "", message.content or "_(no text)_", ""]
    return "\n".join(lines)
