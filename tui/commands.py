"""The app's keys (``KEY_BINDINGS``, each with an id a keymap can remap), what the command palette
offers, and what the help screen lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from textual.binding import Binding, BindingType

# (keys, description, binding id; "" for keys that cannot be remapped)
KeyRow = tuple[str, str, str]

KEY_BINDINGS: list[BindingType] = [
    Binding("ctrl+n", "new_agent", "New agent", id="new_agent"),
    Binding("f2", "rename_agent", "Rename agent", id="rename_agent"),
    Binding("f4", "close_agent", "Close agent", id="close_agent"),
    Binding("f7", "agent_settings", "Agent settings", id="agent_settings", show=False, priority=True),
    # Priority: newer composers (TextArea) take ctrl+f as "delete word right".
    Binding("ctrl+f", "fork_agent", "Fork", id="fork_agent", priority=True),
    Binding("ctrl+b", "broadcast", "Broadcast", id="broadcast"),
    # Off the footer (full already), in F1. Priority: the composer would take any key it knows first.
    Binding("ctrl+r", "regenerate", "Regenerate", id="regenerate", show=False, priority=True),
    Binding("f5", "edit_last", "Edit last message", id="edit_last", show=False, priority=True),
    Binding("escape", "cancel_reply", "Cancel reply", id="cancel_reply"),
    # Priority: the chat input would take ctrl+e as "end of line" (the end key still does that).
    Binding("ctrl+e", "export", "Export", id="export", priority=True),
    # Priority: the composer would take f6 as "select line".
    Binding("f6,ctrl+pagedown", "cycle_agent(1)", "Next agent", id="next_agent", show=False, priority=True),
    Binding("shift+f6,ctrl+pageup", "cycle_agent(-1)", "Previous agent", id="prev_agent", show=False,
            priority=True),
    Binding("f8", "find_prompt", "Search earlier messages", id="find_prompt", show=False),
    Binding("f9", "browse_agents", "Reopen an agent", id="browse_agents", show=False),
    Binding("f3", "refresh_rate", "Refresh rate", id="refresh_rate", show=False),
    Binding("f1", "help", "Help", id="help_f1"),
    # Not a priority: the composer types every "?", so this is only for focus elsewhere (the agent list).
    Binding("question_mark", "help", "Help (focus outside the message)", id="help", key_display="?",
            show=False),
]

# (title, help, action) of each command the palette adds to Textual's own.
PALETTE = (
    ("New agent", "Open a new agent chat", "new_agent"),
    ("Rename agent", "Rename the current agent", "rename_agent"),
    ("Fork agent", "A new agent with the current conversation so far, sharing its blocks", "fork_agent"),
    ("Agent settings", "The current agent's system prompt, temperature, top_p, max tokens, stop strings",
     "agent_settings"),
    ("Close agent", "Close the current agent and free its blocks", "close_agent"),
    ("Broadcast", "Send one prompt to every agent", "broadcast"),
    ("Regenerate reply", "Drop the last reply and ask again (the context rolls back; nothing is re-read)",
     "regenerate"),
    ("Edit last message", "Drop the last turn and put its message in the composer to edit and resend",
     "edit_last"),
    ("Cancel reply", "Stop the current agent's reply", "cancel_reply"),
    ("Export", "Write the current agent's conversation to <name>.md", "export"),
    ("Search earlier messages", "Find a message you sent (any agent, any session) and put it in the composer",
     "find_prompt"),
    ("Reopen an agent", "A closed agent, or one of an earlier session, back with its conversation",
     "browse_agents"),
    ("Next agent", "Show the next agent's chat", "cycle_agent(1)"),
    ("Previous agent", "Show the previous agent's chat", "cycle_agent(-1)"),
    ("Refresh rate", "How often the side panels redraw (seconds)", "refresh_rate"),
    ("Keys", "List every key (help)", "help"),
)

# Keys handled by widgets or by Textual, not by the app's bindings.
FIXED_KEYS: tuple[KeyRow, ...] = (
    ("enter", "Send the message, every line of it (queued while the agent is busy)", ""),
    ("ctrl+j / shift+enter", "New line in the message (a paste keeps all its lines)", "new_line"),
    ("up / down", "In the message's first / last line: your previous / next message (every session's)", ""),
    ("tab / shift+tab", "Move focus (your messages too: click one, or tab to it)", ""),
    ("e / f", "On a focused message of yours: edit it and resend / fork the conversation before it", ""),
    ("c / y", "On a focused message: copy its text / its last code block", ""),
    ("j / k, g / G", "On a focused message: the next / previous message, the first / last one", ""),
    ("i", "On a focused message: back to the composer", ""),
    ("ctrl+p", "Command palette (every action)", ""),
    ("ctrl+q", "Quit", ""),
)


def key_rows(bindings: Iterable[BindingType], keymap: Mapping[str, str]) -> list[KeyRow]:
    """One row per binding, with the keymap's keys where it remaps the binding's id."""
    rows = []
    for binding in bindings:
        if isinstance(binding, Binding):
            keys = keymap.get(binding.id, binding.key) if binding.id else binding.key
            rows.append((keys.replace("question_mark", "?"), binding.description, binding.id or ""))
    return rows + list(FIXED_KEYS)
