"""The composer of a chat: a multi-line text area where Enter sends and ctrl+j adds a line.

Every printable key is the composer's, "?" included: help is F1 (or "?" when the
focus is elsewhere), so no character typed into a message can ever open a screen,
however far the app lags behind the keyboard.

Keys typed faster than the app draws are gathered and inserted together: each key
only appends to a buffer, and one insert per burst edits and re-wraps the text. A
terminal without bracketed paste sends a 30,000-character paste as 30,000 keys;
they land in a few dozen inserts instead of 30,000. Editing keys (backspace, arrows,
ctrl+j) run in the composer itself, in order with the characters around them.

Up on the first line recalls the previous message sent (any agent's, any session's:
``tui.prompt_history``), down on the last line the next one, and past the newest the
draft that was there before, as a shell's history does.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual.widgets import TextArea

from tui.prompt_history import HistoryCursor


class ChatInput(TextArea):
    """Enter posts ``ChatInput.Submitted`` and empties the composer; ctrl+j / shift+enter add a line;
    a paste keeps every line."""

    BINDINGS = [
        Binding("ctrl+j,shift+enter", "new_line", "New line", id="new_line", show=False),
    ]

    class Submitted(Message):
        """Enter was pressed; ``value`` is the whole text, every line of it."""

        def __init__(self, composer: ChatInput, value: str) -> None:
            super().__init__()
            self.composer = composer
            self.value = value

        @property
        def control(self) -> ChatInput:
            return self.composer

    def __init__(self, *, placeholder: str = "", classes: str | None = None, id: str | None = None) -> None:
        super().__init__(soft_wrap=True, tab_behavior="focus", show_line_numbers=False, highlight_cursor_line=False,
                         placeholder=placeholder, classes=classes, id=id)
        self._typed: list[str] = []  # keys received but not yet inserted
        self.recall: HistoryCursor | None = None  # set by the app: the messages up / down recall (``history`` is TextArea's undo)

    @property
    def value(self) -> str:
        """The whole text, including keys received but not inserted yet."""
        self.flush_typed()
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self._typed.clear()
        self.load_text(text)
        self.move_cursor(self.document.end)

    def flush_typed(self) -> None:
        """Insert the keys gathered since the last insert, in one edit."""
        if self._typed:
            text, self._typed = "".join(self._typed), []
            self.replace(text, *self.selection, maintain_selection_offset=False)

    async def _on_key(self, event: events.Key) -> None:
        if self.read_only:
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            # Cleared here, not when the app gets the message: keys already queued belong to the next one.
            value, self.value = self.value, ""
            if self.recall is not None:
                self.recall.reset()
            self.post_message(self.Submitted(self, value))
            return
        if event.is_printable:
            event.stop()
            event.prevent_default()
            if not self._typed:
                self.call_later(self.flush_typed)  # runs after the keys already queued here
            self._typed.append(event.character or "")
            return
        self.flush_typed()  # editing and cursor keys act on everything typed before them
        if event.key in ("up", "down") and self._walk_history(older=event.key == "up"):
            event.stop()
            event.prevent_default()
            return
        bindings = self._bindings.key_to_bindings.get(event.key, ())  # the composer's own, after the keymap
        if bindings:
            # Run here, not when the key bubbles up to the app's binding check: the keys queued behind it
            # (a burst: "ab", backspace, "c") must not overtake it.
            event.stop()
            event.prevent_default()
            await self.run_action(bindings[0].action)
        # Other keys go on to the app's bindings.

    def _walk_history(self, *, older: bool) -> bool:
        """Show the previous (``older``) or next message of the history when the cursor is on the
        first / last line on screen (a long wrapped line moves the cursor first); True if it did."""
        if self.recall is None or self.selection.start != self.selection.end:
            return False
        _, y = self.wrapped_document.location_to_offset(self.cursor_location)
        if older:
            text = self.recall.older(self.text) if y == 0 else None
        else:
            text = self.recall.newer() if y == self.wrapped_document.height - 1 else None
        if text is None:
            return False
        self.value = text  # the cursor at its end: up again goes back through a recalled message's lines
        return True

    async def _on_paste(self, event: events.Paste) -> None:
        # Handled here alone: stopped, and TextArea's handler skipped, or the text would go in twice.
        event.stop()
        event.prevent_default()
        if not self.read_only:
            self.flush_typed()
            self.replace(event.text, *self.selection, maintain_selection_offset=False)

    def render_line(self, y: int) -> Strip:
        if self.content_size.width <= 0:  # squeezed out by a tiny terminal: TextArea cannot wrap the placeholder
            return Strip.blank(self.size.width, self.rich_style)
        return super().render_line(y)

    def action_new_line(self) -> None:
        self.flush_typed()
        self.replace("\n", *self.selection, maintain_selection_offset=False)
