"""One agent's chat: the messages, the queue of messages waiting to be sent, an input."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static

from tui.widgets.chat_input import ChatInput
from tui.widgets.chat_message import ChatMessage

if TYPE_CHECKING:
    from engine.sessions import Message as SavedMessage


class ChatPane(Vertical):
    """Shows a conversation; posts ``ChatPane.Sent`` when the user presses Enter."""

    class Sent(Message):
        """The user submitted ``text`` (maybe blank: the app decides)."""

        def __init__(self, agent_id: str, text: str) -> None:
            super().__init__()
            self.agent_id = agent_id
            self.text = text

    def __init__(self, *, agent_id: str, name: str, colour: str) -> None:
        super().__init__(classes="chat-pane")
        self.agent_id = agent_id
        self.agent_name = name
        self.colour = colour
        self._reply: ChatMessage | None = None
        self._queued: deque[Static] = deque()

    def compose(self) -> ComposeResult:
        yield VerticalScroll(classes="messages")
        yield Vertical(classes="queue")
        yield ChatInput(placeholder=self._placeholder(), classes="prompt")

    def on_mount(self) -> None:
        # Anchored: stays at the bottom as replies grow, until the user scrolls up.
        self.query_one(".messages", VerticalScroll).anchor()

    def _placeholder(self) -> str:
        return f"Message {self.agent_name} (Enter sends, Esc cancels the reply)"

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Sent(self.agent_id, event.value))

    # -- the input ---------------------------------------------------------------

    @property
    def input(self) -> ChatInput:
        return self.query_one(".prompt", ChatInput)

    def clear_input(self) -> None:
        self.input.value = ""

    def restore_input(self, text: str) -> None:
        """Put unsent text back; anything typed since stays after it."""
        current = self.input.value
        self.input.value = f"{text} {current}" if current else text
        self.input.cursor_position = len(self.input.value)

    def rename(self, name: str) -> None:
        self.agent_name = name
        self.input.placeholder = self._placeholder()

    # -- messages ----------------------------------------------------------------

    async def add_user(self, text: str) -> ChatMessage:
        message = ChatMessage(role="user", author="you", colour=self.colour, text=text)
        await self.query_one(".messages").mount(message)
        return message

    async def begin_reply(self) -> None:
        """A placeholder for the coming reply, so later messages land below it."""
        self._reply = ChatMessage(role="assistant", author=self.agent_name, colour=self.colour)
        await self.query_one(".messages").mount(self._reply)
        self._reply.set_note("queued")

    @property
    def reply_text(self) -> str | None:
        """Text of the reply being streamed, or None when none is."""
        return self._reply.text if self._reply is not None else None

    def reply_status(self, note: str) -> None:
        if self._reply is not None:
            self._reply.set_note(note)

    async def append_reply(self, text: str, *, on_screen: bool = True) -> None:
        """Add streamed text; a chat not on screen keeps it and draws it in ``catch_up``."""
        if self._reply is not None:
            await self._reply.write(text, render=on_screen)

    async def catch_up(self) -> None:
        if self._reply is not None:
            await self._reply.catch_up()

    async def finish_reply(self, text: str, note: str) -> None:
        if self._reply is not None:
            await self._reply.finish(text, note)
            self._reply = None

    async def drop_turn(self, user_message: ChatMessage | None) -> None:
        """Remove a turn the engine refused: its user message and reply placeholder."""
        for widget in (user_message, self._reply):
            if widget is not None:
                await widget.remove()
        self._reply = None

    async def show_saved(self, messages: Sequence[SavedMessage]) -> None:
        """Draw a restored transcript; replies that did not complete are marked with their status."""
        for message in messages:
            if message.role == "user":
                await self.add_user(message.content)
            elif message.status == "error":
                await self.add_error(message.finish_reason or "the reply failed")
            else:
                await self.begin_reply()
                await self.finish_reply(message.content, "" if message.status == "complete" else message.status)

    async def add_error(self, error: str) -> None:
        if self._reply is not None and not self._reply.text:
            await self._reply.remove()
        self._reply = None
        message = ChatMessage(role="error", author="error", colour=self.colour, text=error)
        await self.query_one(".messages").mount(message)

    # -- queued messages ---------------------------------------------------------

    async def add_queued(self, text: str) -> None:
        line = Static(f"queued: {text}", markup=False, classes="queued")
        self._queued.append(line)
        await self.query_one(".queue").mount(line)

    async def pop_queued(self) -> None:
        if self._queued:
            await self._queued.popleft().remove()

    @property
    def num_queued(self) -> int:
        return len(self._queued)
