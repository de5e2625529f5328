"""What the command palette offers and what the help screen lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from textual.binding import Binding, BindingType

# (keys, description, binding id; "" for keys that cannot be remapped)
KeyRow = tuple[str, str, str]

# (title, help, action) of each command the palette adds to Textual's own.
PALETTE = (
    ("New agent", "Open a new agent chat", "new_agent"),
    ("Rename agent", "Rename the current agent", "rename_agent"),
    ("Fork agent", "A new agent with the current conversation so far, sharing its blocks", "fork_agent"),
    ("Close agent", "Close the current agent and free its blocks", "close_agent"),
    ("Broadcast", "Send one prompt to every agent", "broadcast"),
    ("Cancel reply", "Stop the current agent's reply", "cancel_reply"),
    ("Export", "Write the current agent's conversation to <name>.md", "export"),
    ("Next agent", "Show the next agent's chat", "next_agent"),
    ("Previous agent", "Show the previous agent's chat", "prev_agent"),
    ("Refresh rate", "How often the side panels redraw (seconds)", "refresh_rate"),
    ("Keys", "List every key (help)", "help"),
)

# Keys handled by widgets or by Textual, not by the app's bindings.
FIXED_KEYS: tuple[KeyRow, ...] = (
    ("enter", "Send the message, every line of it (queued while the agent is busy)", ""),
    ("ctrl+j / shift+enter", "New line in the message (a paste keeps all its lines)", "new_line"),
    ("tab / shift+tab", "Move focus", ""),
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
