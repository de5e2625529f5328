"""One message of a chat: the user's text, a (streaming) reply, or an error.

Replies are Markdown read as chat apps read it (``ChatMarkdown``): a newline is a line
break, while code blocks, lists and tables render as usual.
"""

from __future__ import annotations

import re
from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from tui.widgets.chat_markdown import ChatMarkdown

Role = Literal["user", "assistant", "error"]
CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


class ChatMessage(Vertical):
    """A header line plus the text; replies are Markdown streamed as tokens arrive.

    Every message can be focused (click, tab): c copies its text, y its last code block, j / k / g / G
    move to the next / previous / first / last message, i back to the composer. A user
    message of a kept turn (``turn_index``: its place in the conversation) also takes e (posts
    ``Chosen`` to edit it in place) and f (to edit it in a fork)."""

    BINDINGS = [
        Binding("e", "choose('edit')", "Edit and resend", id="edit_message"),
        Binding("f", "choose('fork')", "Fork here", id="fork_message"),
        Binding("c", "copy", "Copy", id="copy_message"),
        Binding("y", "copy_code", "Copy code", id="copy_code"),
        # vi's keys, as in less and most TUIs: the transcript is read more than it is written.
        Binding("j", "move(1)", "Next message", id="next_message", show=False),
        Binding("k", "move(-1)", "Previous message", id="previous_message", show=False),
        Binding("g", "move_to(0)", "First message", id="first_message", show=False),
        Binding("G", "move_to(-1)", "Last message", id="last_message", show=False),
        Binding("i", "back_to_composer", "Write", id="back_to_composer", show=False),
    ]

    class BackToComposer(Message):
        """The user asked to type again (i): the chat focuses its composer."""

    class Chosen(Message):
        """The user asked to ``action`` ("edit" or "fork") the conversation at this message."""

        def __init__(self, message: ChatMessage, action: str) -> None:
            super().__init__()
            self.message = message
            self.action = action

    def __init__(self, *, role: Role, author: str, colour: str, text: str = "", note: str = "",
                 turn_index: int | None = None) -> None:
        super().__init__(classes=role)
        self.role = role
        self.turn_index = turn_index
        self.can_focus = True
        self.author = author
        self.colour = colour
        self.text = text
        self.note = note
        self._rendered = len(text)  # how much of text the Markdown widget has been given
        self._stream: MarkdownStream | None = None
        self._final_pending = False  # finished off screen: the full render waits for catch_up
        self._header_line = Static(self._header(note), classes="header")
        is_reply = role == "assistant"
        self._markdown = ChatMarkdown(self.text, classes="body") if is_reply else None

    def compose(self) -> ComposeResult:
        yield self._header_line
        yield self._markdown or Static(self.text, markup=False, classes="body")

    def on_mount(self) -> None:
        if self.role == "assistant":
            self.styles.border_left = ("outer", self.colour)

    def action_choose(self, action: str) -> None:
        if self.turn_index is not None:
            self.post_message(self.Chosen(self, action))

    def _siblings(self) -> list[ChatMessage]:
        return list(self.parent.query_children(ChatMessage)) if self.parent is not None else [self]

    def action_move(self, step: int) -> None:
        siblings = self._siblings()
        index = siblings.index(self) + step if self in siblings else 0
        siblings[min(max(index, 0), len(siblings) - 1)].focus()  # focus scrolls it into view

    def action_move_to(self, index: int) -> None:
        self._siblings()[index].focus()

    def action_back_to_composer(self) -> None:
        self.post_message(self.BackToComposer())

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify(f"{len(self.text):,} characters", title="Message copied", timeout=3)

    def action_copy_code(self) -> None:
        """The last fenced code block (an unclosed one: to the end, as a streamed reply may be)."""
        blocks = CODE_BLOCK.findall(self.text)
        if not blocks:
            self.notify("This message has no code block (```).", title="Nothing copied", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify(f"{len(blocks[-1].splitlines()):,} lines", title="Code block copied", timeout=3)

    def _header(self, note: str = "") -> Text:
        header = Text(self.author, style=f"bold {self.colour}" if self.role == "assistant" else "bold")
        if note:
            header.append(f"  {note}", style="dim")
        return header

    def set_note(self, note: str) -> None:
        self.note = note
        # Guarded like every later update: the app may be quitting while a reply ends.
        if self._header_line.is_attached:
            self._header_line.update(self._header(note), layout=False)  # always one line

    async def write(self, text: str, *, render: bool = True) -> None:
        """Append streamed text; ``render=False`` only keeps it (a chat not on screen)."""
        self.text += text
        if render:
            await self.catch_up()

    async def catch_up(self) -> None:
        """Draw what is not drawn yet: stream new text (Markdown.get_stream batches fast writes),
        or render a reply that finished off screen."""
        if self._markdown is None or not self._markdown.is_attached:
            return
        if self._final_pending:
            self._final_pending = False
            await self._markdown.update(self.text or "*(no text)*")
            return
        new = self.text[self._rendered :]
        if not new:
            return
        if self._stream is None:
            self._stream = Markdown.get_stream(self._markdown)
        self._rendered = len(self.text)
        await self._stream.write(new)

    async def finish(self, text: str, note: str = "", *, render: bool = True) -> None:
        """Stop streaming and render the whole reply once, cleanly re-parsed; ``render=False``
        (a chat not on screen) leaves that to ``catch_up``, so eight replies ending together
        do not re-parse eight chats while the keyboard waits."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.text = text
        self._rendered = len(text)
        self._final_pending = True
        if render:
            await self.catch_up()
        self.set_note(note)

    @property
    def drawn(self) -> bool:
        """Whether the reply on screen is its final rendering (or it is not a reply)."""
        return not self._final_pending
