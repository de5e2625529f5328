"""Marks on an agent's tab and row for what happened while it was not on screen: new text
(unread), a reply that ended (finished), a turn that failed (error). Viewing the agent clears
them; a stronger mark is never replaced by a weaker one. Optionally the terminal bell rings
when a reply ends (``TuiSettings.bell``, off by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from textual.css.query import NoMatches

if TYPE_CHECKING:
    from tui.agents import Agent
    from tui.host import Host

Badge = Literal["unread", "finished", "error"]
MARKS: dict[str, str] = {"unread": "●", "finished": "✓", "error": "✗"}
_RANK: dict[str, int] = {"unread": 0, "finished": 1, "error": 2}


def label(agent: Agent) -> str:
    """The agent's tab label: its name, after its mark when it has one."""
    return f"{MARKS[agent.badge]} {agent.name}" if agent.badge else agent.name


def mark(host: Host, agent: Agent, badge: Badge) -> None:
    """Mark an agent that is not on screen (the one on screen needs no mark)."""
    if agent.agent_id == host.tabs.active or (agent.badge and _RANK[agent.badge] >= _RANK[badge]):
        return
    agent.badge = badge
    _show(host, agent)


def clear(host: Host, agent: Agent) -> None:
    if agent.badge is not None:
        agent.badge = None
        _show(host, agent)


def reply_ended(host: Host, agent: Agent, badge: Badge) -> None:
    mark(host, agent, badge)
    if host.settings.bell:
        host.bell()


def _show(host: Host, agent: Agent) -> None:
    try:
        tab = host.tabs.get_tab(agent.agent_id)
    except NoMatches:  # its tab is being removed (the agent closed as its reply ended): nothing to mark
        return
    tab.label = label(agent)
    host.refresh_panels()
