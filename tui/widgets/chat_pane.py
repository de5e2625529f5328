"""One agent's chat: the messages, the queue of messages waiting to be sent, a composer.

Only the latest ``MAX_MOUNTED`` messages are widgets: older ones are kept as plain
data behind a line at the top that mounts them again when clicked, so a
200-message conversation lays out, scrolls and types as fast as a short one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from tui.prompt_history import HistoryCursor
from tui.widgets.chat_input import ChatInput
from tui.widgets.chat_message import ChatMessage, Role

if TYPE_CHECKING:
    from frontend.sessions import Message as SavedMessage


@dataclass(frozen=True, slots=True)
class Unmounted:
    """A message scrolled out of the mounted window: enough to draw it again."""

    role: Role
    author: str
    text: str
    note: str
    turn_index: int | None = None


class EarlierMessages(Static):
    """"N earlier messages — click to show more"; posts ``Pressed`` when clicked."""

    class Pressed(Message):
        pass

    def show(self, count: int) -> None:
        self.display = count > 0
        self.update(f"▲ {count:,} earlier message{'' if count == 1 else 's'} · click to show more")

    def on_click(self) -> None:
        self.post_message(self.Pressed())


class ChatPane(Vertical):
    """Shows a conversation; posts ``ChatPane.Sent`` when the user presses Enter."""

    MAX_MOUNTED = 50
    SHOW_MORE = 40

    class TurnChosen(Message):
        """The user asked to ``action`` ("edit", "fork") the conversation at turn ``turn_index``."""

        def __init__(self, agent_id: str, turn_index: int, action: str) -> None:
            super().__init__()
            self.agent_id = agent_id
            self.turn_index = turn_index
            self.action = action

    class Sent(Message):
        """The user submitted ``text`` (maybe blank: the app decides)."""

        def __init__(self, agent_id: str, text: str) -> None:
            super().__init__()
            self.agent_id = agent_id
            self.text = text

    def __init__(self, *, agent_id: str, name: str, colour: str, history: HistoryCursor | None = None) -> None:
        super().__init__(classes="chat-pane")
        self.history = history
        self.agent_id = agent_id
        self.agent_name = name
        self.colour = colour
        self.max_mounted = self.MAX_MOUNTED
        self._reply: ChatMessage | None = None
        self._queued: deque[Static] = deque()
        self._unmounted: list[Unmounted] = []  # oldest first
        self._undrawn: list[ChatMessage] = []  # replies that finished off screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="messages"):
            yield EarlierMessages("", classes="earlier")
        yield Vertical(classes="queue")
        composer = ChatInput(placeholder=self._placeholder(), classes="prompt")
        composer.recall = self.history
        yield composer

    def on_mount(self) -> None:
        # Anchored: stays at the bottom as replies grow, until the user scrolls up.
        self.query_one(".messages", VerticalScroll).anchor()
        self._earlier.show(0)

    def _placeholder(self) -> str:
        return f"Message {self.agent_name} (Enter sends, ctrl+j new line, Esc cancels the reply, F1 help)"

    @on(ChatMessage.Chosen)
    def _chosen(self, event: ChatMessage.Chosen) -> None:
        event.stop()
        if event.message.turn_index is not None:
            self.post_message(self.TurnChosen(self.agent_id, event.message.turn_index, event.action))

    @on(ChatMessage.BackToComposer)
    def _back_to_composer(self, event: ChatMessage.BackToComposer) -> None:
        event.stop()
        self.input.focus()

    @on(ChatInput.Submitted)
    def _submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        self.post_message(self.Sent(self.agent_id, event.value))

    # -- the input ---------------------------------------------------------------

    @property
    def input(self) -> ChatInput:
        return self.query_one(".prompt", ChatInput)

    def restore_input(self, text: str) -> None:
        """Put unsent text back; anything typed since stays after it."""
        current = self.input.value
        self.input.value = f"{text} {current}" if current else text

    def rename(self, name: str) -> None:
        self.agent_name = name
        self.input.placeholder = self._placeholder()

    # -- messages ----------------------------------------------------------------

    @property
    def _messages(self) -> VerticalScroll:
        return self.query_one(".messages", VerticalScroll)

    @property
    def _earlier(self) -> EarlierMessages:
        return self.query_one(".earlier", EarlierMessages)

    @property
    def num_messages(self) -> int:
        """Messages in the chat, mounted or not."""
        return len(self._unmounted) + len(self._messages.query_children(ChatMessage))

    async def _mount(self, message: ChatMessage) -> ChatMessage:
        await self._messages.mount(message)
        await self._trim()
        return message

    async def _trim(self) -> None:
        """Unmount the oldest messages past ``max_mounted`` (never the reply being streamed)."""
        mounted = list(self._messages.query_children(ChatMessage))
        excess = [m for m in mounted[: max(len(mounted) - self.max_mounted, 0)] if m is not self._reply]
        if not excess:
            return
        self._unmounted += [Unmounted(m.role, m.author, m.text, m.note, m.turn_index) for m in excess]
        await self._messages.remove_children(excess)
        self._earlier.show(len(self._unmounted))

    @on(EarlierMessages.Pressed)
    async def show_earlier(self) -> None:
        """Mount up to ``SHOW_MORE`` of the unmounted messages above the others."""
        count = min(self.SHOW_MORE, len(self._unmounted))
        if not count:
            return
        batch, self._unmounted = self._unmounted[-count:], self._unmounted[:-count]
        self.max_mounted += count
        await self._messages.mount_all([self._widget(m) for m in batch], after=self._earlier)
        self._earlier.show(len(self._unmounted))

    async def add_user(self, text: str, turn_index: int | None = None) -> ChatMessage:
        return await self._mount(ChatMessage(role="user", author="you", colour=self.colour, text=text,
                                             turn_index=turn_index))

    async def begin_reply(self) -> None:
        """A placeholder for the coming reply, so later messages land below it."""
        self._reply = ChatMessage(role="assistant", author=self.agent_name, colour=self.colour, note="queued")
        await self._mount(self._reply)

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

    @property
    def shown(self) -> bool:
        """Whether this chat is the tab on screen."""
        return all(node.display for node in self.ancestors_with_self)

    async def catch_up(self) -> None:
        """Draw what arrived while the chat was not on screen."""
        for message in [*self._undrawn, self._reply]:
            if message is not None:
                await message.catch_up()
        self._undrawn.clear()

    async def finish_reply(self, text: str, note: str) -> None:
        # Taken out before the await: the next turn's begin_reply may run meanwhile and set its own.
        reply, self._reply = self._reply, None
        if reply is not None:
            shown = self.shown
            await reply.finish(text, note, render=shown)
            if not shown:
                self._undrawn.append(reply)

    async def drop_turn(self, user_message: ChatMessage | None) -> None:
        """Remove a turn the engine refused: its user message and reply placeholder."""
        for widget in (user_message, self._reply):
            if widget is not None:
                await widget.remove()
        self._reply = None

    async def drop_from_turn(self, num_turns: int) -> None:
        """Remove the user message of turn ``num_turns`` and everything after it (a rollback)."""
        def kept(m: ChatMessage | Unmounted) -> bool:
            return m.role != "user" or m.turn_index is None or m.turn_index < num_turns
        for i, m in enumerate(self._unmounted):
            if not kept(m):
                self._unmounted = self._unmounted[:i]
                await self._messages.remove_children(ChatMessage)
                self._earlier.show(len(self._unmounted))
                return
        mounted = list(self._messages.query_children(ChatMessage))
        first = next((i for i, m in enumerate(mounted) if not kept(m)), None)
        if first is not None:
            await self._messages.remove_children(mounted[first:])

    async def show_saved(self, messages: Sequence[SavedMessage]) -> None:
        """Draw a restored transcript; replies that did not complete are marked with their status.

        Only the latest ``max_mounted`` become widgets, mounted together.
        """
        shown = [self._saved(message, index) for message, index in zip(messages, _turn_indexes(messages))]
        self._unmounted += shown[: max(len(shown) - self.max_mounted, 0)]
        await self._messages.mount_all(self._widget(m) for m in shown[len(self._unmounted) :])
        self._earlier.show(len(self._unmounted))

    def _widget(self, message: Unmounted) -> ChatMessage:
        return ChatMessage(role=message.role, author=message.author, colour=self.colour, text=message.text,
                           note=message.note, turn_index=message.turn_index)

    def _saved(self, message: SavedMessage, turn_index: int | None) -> Unmounted:
        if message.role == "user":
            return Unmounted("user", "you", message.content, "", turn_index)
        if message.status == "error":
            return Unmounted("error", "error", message.finish_reason or "the reply failed", "")
        # Its figures line as shown when it ended (sessions before it was saved: only the status).
        note = message.note or ("" if message.status == "complete" else message.status)
        return Unmounted("assistant", self.agent_name, message.content, note)

    async def add_error(self, error: str) -> None:
        if self._reply is not None and not self._reply.text:
            await self._reply.remove()
        self._reply = None
        await self._mount(ChatMessage(role="error", author="error", colour=self.colour, text=error))

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


def _turn_indexes(messages: Sequence[SavedMessage]) -> list[int | None]:
    """Each saved user message's place in the conversation (None for a failed turn's); replies: None."""
    indexes: list[int | None] = []
    num_kept = 0
    for position, message in enumerate(messages):
        reply = messages[position + 1] if position + 1 < len(messages) else None
        if message.role == "user" and reply is not None and reply.status in ("complete", "cancelled"):
            indexes.append(2 * num_kept)
            num_kept += 1
        else:
            indexes.append(None)
    return indexes
